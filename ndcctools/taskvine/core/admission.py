"""New connections before they may speak: the TLS handshake and the password exchange.

A manager with TLS or a password does not hand a new connection to the engine at once: the
connection first finishes the TLS handshake (``ssl.SSLSocket.do_handshake`` without blocking)
and then the password exchange of protocol spec §2.2 (``security.PasswordExchange``), both
within ``security.HANDSHAKE_TIMEOUT`` seconds. A peer that fails either, says nothing, or is
too slow is closed and logged; the manager serves everyone else meanwhile. At most
``MAX_PENDING`` connections may be in this state: more are refused at once (logged once per
burst), so a flood of silent connections cannot exhaust the manager's descriptors.

``Admission.step(pending)`` is called when a pending connection's socket is ready;
``admitted(sock, addr, leftover)`` receives it when done, with any bytes the peer sent after
the exchange (a worker sends its hello right after its verdict).
"""

from __future__ import annotations

import selectors
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..security import HANDSHAKE_TIMEOUT, PasswordExchange
from ..transport import Outbox, receive

if TYPE_CHECKING:
    from .debuglog import DebugLog

MAX_PENDING = 256
_LINE_MAX = 256  # the exchange's lines are short: 63 letters at most


class Pending:
    """One connection being admitted."""

    __slots__ = ("sock", "addr", "deadline", "exchange", "outbox", "inbuf", "handshaking")

    def __init__(self, sock: socket.socket, addr: tuple, deadline: float):
        self.sock = sock
        self.addr = addr
        self.deadline = deadline
        self.exchange: PasswordExchange | None = None
        self.outbox = Outbox()
        self.inbuf = b""
        self.handshaking = isinstance(sock, ssl.SSLSocket)

    def label(self) -> str:
        return f"{self.addr[0]}:{self.addr[1]}"


class Admission:
    def __init__(self, sel: selectors.BaseSelector, debug: DebugLog,
                 tls: ssl.SSLContext | None, password: bytes | None,
                 admitted: Callable[[socket.socket, tuple, bytes], None]):
        self.sel = sel
        self.debug = debug
        self.tls = tls
        self.password = password
        self.admitted = admitted
        self.pending: dict[socket.socket, Pending] = {}
        self.refused = 0  # connections refused since the last one was taken

    def add(self, sock: socket.socket, addr: tuple) -> None:
        if len(self.pending) >= MAX_PENDING:
            if not self.refused:
                self.debug.write("tcp", f"{MAX_PENDING} connections are still authenticating: "
                                 "refusing new ones until they finish (logged once)")
            self.refused += 1
            sock.close()
            return
        self.refused = 0
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False)
            except (OSError, ValueError) as e:
                self.debug.write("tcp", f"connection from {addr[0]}:{addr[1]}: TLS failed: {e}")
                sock.close()
                return
        pending = Pending(sock, addr, time.monotonic() + HANDSHAKE_TIMEOUT)
        self.pending[sock] = pending
        self.sel.register(sock, selectors.EVENT_READ, pending)
        self.step(pending)

    def step(self, pending: Pending) -> None:
        try:
            if pending.handshaking:
                if not self._handshake(pending):
                    return
            if self.password is None:
                self._admit(pending)
                return
            if pending.exchange is None:
                pending.exchange = PasswordExchange(self.password)
                pending.outbox.append(pending.exchange.opening())
            self._exchange(pending)
        except (OSError, ValueError) as e:
            self._drop(pending, f"{e.__class__.__name__}: {e}")

    def _handshake(self, pending: Pending) -> bool:
        try:
            pending.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(pending, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._want(pending, selectors.EVENT_WRITE)
            return False
        except ssl.SSLError as e:
            self._drop(pending, f"TLS handshake failed ({e.reason or e}); a worker without "
                       "--ssl?")
            return False
        pending.handshaking = False
        return True

    def _exchange(self, pending: Pending) -> None:
        ex = pending.exchange
        while True:
            if not pending.outbox.flush(pending.sock):
                self._want(pending, selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            if ex.done:
                break
            nl = pending.inbuf.find(b"\n")
            if nl < 0:
                if len(pending.inbuf) > _LINE_MAX:
                    self._drop(pending, "an overlong line in the password exchange")
                    return
                try:
                    data = receive(pending.sock, 4096)
                except BlockingIOError:
                    self._want(pending, selectors.EVENT_READ)
                    return
                if not data:
                    self._drop(pending, "closed during the password exchange")
                    return
                pending.inbuf += data
                continue
            line, pending.inbuf = pending.inbuf[:nl], pending.inbuf[nl + 1:]
            reply = ex.receive(line)
            if reply:
                pending.outbox.append(reply)
        if not ex.ok:
            self._drop(pending, f"{ex.error}; closing the connection")
            return
        self._admit(pending)

    def _want(self, pending: Pending, events: int) -> None:
        self.sel.modify(pending.sock, events, pending)

    def _admit(self, pending: Pending) -> None:
        del self.pending[pending.sock]
        self.sel.unregister(pending.sock)
        self.admitted(pending.sock, pending.addr, pending.inbuf)

    def _drop(self, pending: Pending, why: str) -> None:
        self.debug.write("vine", f"connection from {pending.label()} refused: {why}")
        self.pending.pop(pending.sock, None)
        try:
            self.sel.unregister(pending.sock)
        except (KeyError, ValueError):
            pass
        pending.outbox.close()
        pending.sock.close()

    def expire(self, now: float) -> None:
        """Close connections that did not finish in time."""
        for pending in [p for p in self.pending.values() if p.deadline < now]:
            self._drop(pending, f"did not authenticate within {HANDSHAKE_TIMEOUT:.0f}s")

    def close(self) -> None:
        for pending in list(self.pending.values()):
            self._drop(pending, "the manager is closing")
