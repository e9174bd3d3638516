"""The manager's debug log, ``vine-logs/debug`` (protocol spec §11.2).

Line shape: ``YYYY/MM/DD HH:MM:SS.cc vine_manager[<pid>]<flag>: <text>`` in local time with
centiseconds. Every wire line goes through ``tx()``/``rx()`` (the I/O choke point), so the
date prefix is formatted once per second and writes are buffered (``LogFile``: a failing
disk never stops the manager); the buffer is flushed when a second has passed since the last
flush, by the engine's timer and before it idles, and at ``close()``.

Log readers (``taskvine-report-tool``) split these lines on spaces and read the protocol
fields by position, so a message of several lines (a task and its body) is echoed one
``tx to`` line per protocol line, exactly as sent; the counted payloads inside it (the
command, environment values) are not echoed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .logfile import LogFile


class DebugLog:
    def __init__(self, path: str, pid: int, clock: Callable[[], float] = time.time):
        self.path = path
        self._file = LogFile(path)
        self._pid = pid
        self._clock = clock
        self._second = -1
        self._prefix = ""
        self._last_flush = 0.0

    def write(self, flag: str, text: str) -> None:
        now = self._clock()
        self._file.write(f"{self._stamp(now)}{flag}: {text}\n")
        self._flush_if_due(now)

    def _stamp(self, now: float) -> str:
        """``YYYY/MM/DD HH:MM:SS.cc vine_manager[<pid>]``"""
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(second))
        return f"{self._prefix}.{int((now - second) * 100):02d} vine_manager[{self._pid}]"

    def _flush_if_due(self, now: float) -> None:
        if now - self._last_flush >= 1.0:
            self._last_flush = now
            self._file.flush()

    def tx(self, host: str, addrport: str, line: str) -> None:
        self.write("vine", f"tx to {host} ({addrport}): {line}")

    def tx_lines(self, host: str, addrport: str, lines: list[str]) -> None:
        """The lines of one message of several (``wire_lines``), one ``tx to`` line each."""
        now = self._clock()
        head = f"{self._stamp(now)}vine: tx to {host} ({addrport}): "
        self._file.write("".join(f"{head}{line}\n" for line in lines))
        self._flush_if_due(now)

    def rx(self, host: str, addrport: str, line: str) -> None:
        self.write("vine", f"rx from {host} ({addrport}): {line}")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


_COUNTED = (b"cmd ", b"env ")  # lines followed by that many bytes of payload


def wire_lines(data: bytes) -> list[str]:
    """The protocol lines of an encoded message, without its counted payloads: ``task 7``,
    ``cmd 9`` (not the command), ``category default``, ..., ``end``."""
    lines = []
    pos, end = 0, len(data)
    while pos < end:
        nl = data.find(b"\n", pos)
        if nl < 0:
            nl = end
        line = data[pos:nl]
        pos = nl + 1
        if line:
            lines.append(line.decode("utf-8", "replace"))
            if line[:4] in _COUNTED:
                pos += int(line[4:])
    return lines
