"""Moving bytes between sockets and files: the outbox shared by the manager and the worker,
and the splicer that receives file contents.

An ``Outbox`` holds ``bytes`` and ``FileSegment``s in order. ``flush(sock)`` sends as much as
the socket takes without blocking; consecutive byte strings go out in one ``send``, and file
contents go with ``os.sendfile`` straight from the page cache, never through Python.

A ``Splicer`` moves received file contents from a socket into a file through a kernel pipe
(``os.splice``), so large transfers never pass through Python either.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections import deque

from .items import FileSegment


class Outbox:
    __slots__ = ("_queue", "_file", "bytes_sent")

    def __init__(self) -> None:
        self._queue: deque[bytes | FileSegment] = deque()
        self._file: tuple[int, int] | None = None  # (fd, offset) of the segment being sent
        self.bytes_sent = 0

    def __bool__(self) -> bool:
        return bool(self._queue)

    def append(self, piece: bytes | FileSegment) -> None:
        self._queue.append(piece)

    def flush(self, sock: socket.socket) -> bool:
        """Send without blocking; True once everything queued has been sent."""
        queue = self._queue
        while queue:
            head = queue[0]
            if isinstance(head, FileSegment):
                if not self._send_segment(sock, head):
                    return False
                continue
            if len(queue) > 1 and not isinstance(queue[1], FileSegment):
                head = self._coalesce()
            try:
                n = sock.send(head)
            except (BlockingIOError, InterruptedError):
                return False
            self.bytes_sent += n
            if n < len(head):
                queue[0] = head[n:]
                return False
            queue.popleft()
        return True

    def _coalesce(self) -> bytes:
        queue = self._queue
        parts = []
        while queue and not isinstance(queue[0], FileSegment):
            parts.append(queue.popleft())
        joined = b"".join(parts)
        queue.appendleft(joined)
        return joined

    def _send_segment(self, sock: socket.socket, seg: FileSegment) -> bool:
        if self._file is None:
            self._file = (os.open(seg.path, os.O_RDONLY), 0)
        fd, offset = self._file
        while offset < seg.length:
            try:
                n = os.sendfile(sock.fileno(), fd, offset, seg.length - offset)
            except (BlockingIOError, InterruptedError):
                self._file = (fd, offset)
                return False
            if n == 0:
                raise OSError(f"{seg.path} shrank while it was being sent")
            offset += n
            self.bytes_sent += n
        os.close(fd)
        self._file = None
        self._queue.popleft()
        return True

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file[0])
            self._file = None
        self._queue.clear()


_F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20


class Splicer:
    """socket → pipe → file with ``os.splice``; one per receiving connection."""

    __slots__ = ("_r", "_w", "size")

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        try:
            self.size = fcntl.fcntl(self._w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            self.size = 1 << 16  # the default pipe capacity
        os.set_blocking(self._w, False)

    def move(self, sock: socket.socket, fd: int, n: int) -> int:
        """Move up to ``n`` bytes that the socket has ready into ``fd``; 0 means the peer
        closed. Raises ``BlockingIOError`` if nothing is ready (non-blocking sockets)."""
        got = os.splice(sock.fileno(), self._w, min(n, self.size))
        left = got
        while left:
            left -= os.splice(self._r, fd, left)
        return got

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def bind_listener(port: int | tuple[int, int], backlog: int = 256) -> socket.socket:
    """A listening socket on all interfaces: on ``port`` (0 = any free port), or on the first
    free port of ``(low, high)``."""
    low, high = (port, port) if isinstance(port, int) else port
    last: OSError | None = None
    for candidate in range(low, high + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", candidate))
        except OSError as e:
            sock.close()
            last = e
            continue
        sock.listen(backlog)
        return sock
    raise OSError(f"no free port in {low}..{high}: {last}")
