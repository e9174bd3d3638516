"""One TCP connection of the manager: a decoder for what arrives, an outbox for what leaves.

Replies the peer owes us are kept in order in ``replies``: the worker answers requests in
the order they were sent and never puts an asynchronous line inside a reply, so the reply
at the head of the FIFO owns every reply event that arrives.
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Any

from ..items import FileSegment
from ..protocol import Decoder
from ..transport import Outbox, receive


class Reply:
    """A reply the peer owes: ``on_event(event) -> bool`` returns True when it is complete;
    ``on_lost()`` is called if the connection ends first."""

    def on_event(self, event: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def on_lost(self) -> None:  # pragma: no cover - interface
        pass


class Connection:
    __slots__ = ("sock", "addrport", "decoder", "outbox", "replies", "worker", "closed",
                 "want_write", "bytes_received")

    def __init__(self, sock: socket.socket, addrport: str):
        self.sock = sock
        self.addrport = addrport
        self.decoder = Decoder("worker")
        self.outbox = Outbox()
        self.replies: deque[Reply] = deque()
        self.worker = None
        self.closed = False
        self.want_write = False
        self.bytes_received = 0

    def send(self, data: bytes | FileSegment) -> None:
        self.outbox.append(data)

    def recv(self) -> bool:
        """Read what is available; False when the peer closed the connection."""
        try:
            data = receive(self.sock)
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
        return self.outbox.flush(self.sock)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.outbox.close()
        try:
            self.sock.close()
        except OSError:
            pass
