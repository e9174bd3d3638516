"""The manager's listening socket: new connections, and what to do when it cannot take them.

``accept()`` hands over up to ``limit`` new connections per call. When ``accept`` fails for
lack of resources (no file descriptors left, no memory), the listener stops listening for a
while (0.1 s, doubling up to 5 s while it keeps failing) rather than spin on a socket that
stays readable, says so once in the debug log, and listens again when ``resume_if_due`` finds
the pause over; the connections the manager has are served all along.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .debuglog import DebugLog

BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0  # seconds without listening after accept failed
_CLIENT_GAVE_UP = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}  # try the next one


class Listener:
    def __init__(self, sock: socket.socket, sel: selectors.BaseSelector, debug: DebugLog):
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.sel = sel
        self.debug = debug
        self.refused = 0  # accept() failures since connections were last accepted
        self._resume_at = 0.0  # monotonic time to listen again (0: listening)
        self._backoff = BACKOFF_MIN
        sel.register(sock, selectors.EVENT_READ, None)

    def accept(self, limit: int) -> list[tuple[socket.socket, tuple]]:
        """Up to ``limit`` connections waiting to be accepted."""
        out: list[tuple[socket.socket, tuple]] = []
        while len(out) < limit:
            try:
                out.append(self.sock.accept())
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno not in _CLIENT_GAVE_UP:
                    self._pause(e)
                    break
        if out and self.refused:
            self.debug.write("tcp", f"accepting connections again ({self.refused} attempts "
                             "refused while they could not be accepted)")
            self.refused, self._backoff = 0, BACKOFF_MIN
        return out

    def _pause(self, error: OSError) -> None:
        if not self.refused:
            self.debug.write("tcp", f"cannot accept connections: {error}; pausing new "
                             "connections (logged once until they are accepted again)")
        self.refused += 1
        self.sel.unregister(self.sock)
        self._resume_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def resume_if_due(self) -> None:
        if self._resume_at and time.monotonic() >= self._resume_at:
            self._resume_at = 0.0
            self.sel.register(self.sock, selectors.EVENT_READ, None)

    def close(self) -> None:
        self.sock.close()
