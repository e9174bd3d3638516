"""An append-only text log that never stops the manager.

The manager's logs (debug, transactions, taskgraph) are written through ``LogFile``: text is
collected in memory and written with one ``os.write`` per flush, which the logs do at most
once a second while the manager is busy, when it is about to idle, and at close. A log that
cannot be written (a full disk, an I/O error) never raises into the user's program: the
lines that could not be written are dropped and counted, one warning names the file, and
later flushes try again (the disk may have been freed). Text that UTF-8 cannot encode (the
undecodable bytes of a peer, kept as surrogates) is written as backslash escapes.
"""

from __future__ import annotations

import os
import warnings

from ..items import write_all

BUFFER_MAX = 1 << 16  # characters collected before a write even between flushes


class LogFile:
    def __init__(self, path: str, truncate: bool = False):
        self.path = path
        self.lost = 0  # bytes that could not be written
        self._parts: list[str] = []
        self._size = 0
        self._warned = False
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
        try:
            self._fd = os.open(path, flags, 0o644)
        except OSError as e:
            self._fd = -1
            self._failed(e)

    @property
    def closed(self) -> bool:
        return self._fd == -2

    def write(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= BUFFER_MAX:
            self.flush()

    def flush(self) -> None:
        if not self._parts:
            return
        data = "".join(self._parts).encode("utf-8", "backslashreplace")
        self._parts.clear()
        self._size = 0
        if self._fd < 0:
            self.lost += len(data)
            return
        try:
            write_all(self._fd, data)
        except OSError as e:
            self.lost += len(data)
            self._failed(e)

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -2

    def _failed(self, error: OSError) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"taskvine: cannot write the log {self.path} ({error}); its lines "
                          "are dropped while this lasts and the manager carries on",
                          RuntimeWarning, stacklevel=2)
