"""One TCP connection of the manager: bytes in through a decoder, bytes out through an outbox.

The outbox holds ``bytes`` and ``FileSegment``s; ``flush()`` sends as much as the socket takes
without blocking, file contents with ``os.sendfile`` (no copy through Python). Replies the
peer owes us are kept in order in ``replies``: the worker answers requests in the order they
were sent, and never puts an asynchronous line inside a reply, so the head of the FIFO owns
every reply event that arrives.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from ..items import FileSegment
from ..protocol import Decoder


class Reply:
    """A reply the peer owes: ``on_event(event) -> bool`` returns True when it is complete;
    ``on_lost()`` is called if the connection ends first."""

    def on_event(self, event: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def on_lost(self) -> None:  # pragma: no cover - interface
        pass


class Connection:
    __slots__ = ("sock", "addrport", "decoder", "outbox", "replies", "worker", "closed",
                 "want_write", "_segment_fd", "bytes_sent", "bytes_received", "trace")

    def __init__(self, sock: socket.socket, addrport: str, trace: Callable[[str], None] | None):
        self.sock = sock
        self.addrport = addrport
        self.decoder = Decoder("worker")
        self.outbox: deque[bytes | FileSegment] = deque()
        self.replies: deque[Reply] = deque()
        self.worker = None
        self.closed = False
        self.want_write = False
        self._segment_fd: tuple[int, int] | None = None  # (fd, offset) of the file being sent
        self.bytes_sent = 0
        self.bytes_received = 0
        self.trace = trace

    def send(self, data: bytes | FileSegment) -> None:
        self.outbox.append(data)

    def recv(self) -> bool:
        """Read what is available; False when the peer closed the connection."""
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        self.bytes_received += len(data)
        self.decoder.feed(data)
        return True

    def flush(self) -> bool:
        """Send queued bytes without blocking; True when the outbox is empty."""
        outbox = self.outbox
        while outbox:
            head = outbox[0]
            if isinstance(head, FileSegment):
                if not self._send_segment(head):
                    return False
                continue
            if len(outbox) > 1 and not isinstance(outbox[1], FileSegment):
                head = self._coalesce()
            try:
                n = self.sock.send(head)
            except (BlockingIOError, InterruptedError):
                return False
            self.bytes_sent += n
            if n < len(head):
                outbox[0] = head[n:]
                return False
            outbox.popleft()
        return True

    def _coalesce(self) -> bytes:
        parts = []
        outbox = self.outbox
        while outbox and not isinstance(outbox[0], FileSegment):
            parts.append(outbox.popleft())
        joined = b"".join(parts)
        outbox.appendleft(joined)
        return joined

    def _send_segment(self, seg: FileSegment) -> bool:
        if self._segment_fd is None:
            self._segment_fd = (os.open(seg.path, os.O_RDONLY), 0)
        fd, offset = self._segment_fd
        while offset < seg.length:
            try:
                n = os.sendfile(self.sock.fileno(), fd, offset, seg.length - offset)
            except (BlockingIOError, InterruptedError):
                self._segment_fd = (fd, offset)
                return False
            if n == 0:  # the file shrank: pad so the stream stays well-formed
                raise OSError(f"{seg.path} shrank while being sent")
            offset += n
            self.bytes_sent += n
        os.close(fd)
        self._segment_fd = None
        self.outbox.popleft()
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._segment_fd is not None:
            os.close(self._segment_fd[0])
            self._segment_fd = None
        try:
            self.sock.close()
        except OSError:
            pass
