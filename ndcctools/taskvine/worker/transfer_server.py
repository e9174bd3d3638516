"""The worker's transfer server: other workers fetch cache objects from it (protocol spec §7).

One thread accepts; each connection is served by its own thread (at most ``MAX_CLIENTS`` at
once): it reads one line ``get <cachename>`` within ``REQUEST_TIMEOUT`` seconds in all,
answers with the item stream of ``cache/<cachename>``, or of its content if the cache holds
it in memory (file contents with ``os.sendfile`` on a blocking socket: one system call per
file, waiting in the kernel) or an ``error`` item, and closes. Only plain cache entries are
served: a name that is not one path component, or that names a ``.meta`` file, gets
``error <name> 22``.

A slot must never be held forever by a slow or hostile peer. The request line has one
deadline in all (not one per ``recv``: a peer trickling a byte every few seconds would
otherwise keep its slot). Sending has two limits: each system call may make no progress
for at most ``SEND_IDLE_TIMEOUT`` (the kernel's ``SO_SNDTIMEO``), and the whole object must
go within ``send_deadline(size)``; a watchdog thread shuts the connection down when that
passes, which ends a ``sendfile`` blocked in the kernel at once (a deadline checked between
calls would not bound one call that keeps making a little progress).

Who may fetch (``PeerKey``): with ``--password``, a peer must first pass the password
exchange of protocol spec §2.2 (within ``AUTH_TIMEOUT``), as upstream's ``-P``; without one,
once the manager has handed this worker a transfer secret, the same exchange with the
secret's bytes as the password. A peer that fails gets nothing of the cache; refusals are
logged at most once per ``REFUSAL_LOG_INTERVAL`` (with a count of the others).

The server only reads the cache directory; objects enter it by an atomic rename, so a peer
never sees half of one. An object unlinked while it is being sent is still sent whole (the
open descriptor keeps it), or the connection breaks and the fetching peer reports a failure.
"""

from __future__ import annotations

import heapq
import os
import socket
import threading
import time
from collections.abc import Callable

from .. import protocol as p
from ..items import FileSegment, UnsafeName, open_segment, outgoing, outgoing_bytes
from ..protocol.urlcode import decode as unurl
from ..security import AuthError, exchange_blocking
from ..transport import bind_listener, set_io_timeout
from .cache import Cache
from .log import WorkerLog

MAX_CLIENTS = 128
NAME_MAX = 255  # bytes in a file name: no longer name can be a cache entry
REQUEST_TIMEOUT = 5.0  # seconds for the whole request line
AUTH_TIMEOUT = 5.0  # seconds for the whole password exchange (before the request line)
REFUSAL_LOG_INTERVAL = 60.0  # seconds between two log lines about refused peers
SEND_IDLE_TIMEOUT = 60.0  # seconds one send may make no progress at all
# The whole object must go within SEND_BASE seconds plus its size at SEND_MIN_RATE: 60 s +
# 1 s per MiB. A peer slower than 1 MiB/s on a large object is better served by another
# replica (the manager retries a failed transfer elsewhere) than holding a slot for hours.
SEND_BASE = 60.0
SEND_MIN_RATE = float(1 << 20)  # bytes per second


def send_deadline(size: int) -> float:
    """Seconds allowed to send an object of ``size`` bytes."""
    return SEND_BASE + max(0, size) / SEND_MIN_RATE


def parse_port_spec(spec: str | None) -> tuple[int, int]:
    """``--transfer-port``: ``P`` or ``P1:P2``; none means any free port."""
    if not spec:
        return (0, 0)
    low, _, high = spec.partition(":")
    try:
        bounds = int(low), int(high or low)
    except ValueError:
        raise ValueError(f"--transfer-port wants P or P1:P2, not {spec!r}") from None
    if not 0 <= bounds[0] <= bounds[1] <= 65535:
        raise ValueError(f"--transfer-port {spec!r} is not a valid port range")
    return bounds


class PeerKey:
    """What peers prove to each other on transfer connections (both the transfer server and
    the fetcher read it): the ``--password``, else the transfer secret the manager of the
    current session gave (``None`` before it does, or if it never does), else nothing."""

    __slots__ = ("password", "secret")

    def __init__(self, password: bytes | None = None):
        self.password = password
        self.secret: bytes | None = None

    def current(self) -> bytes | None:
        """The password to use on a transfer connection now; ``None``: no exchange."""
        return self.password or self.secret


class Throttled:
    """Logs a recurring complaint at most once per ``interval`` seconds, counting the rest
    (called from many threads)."""

    def __init__(self, log: WorkerLog, interval: float = REFUSAL_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self._log = log
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._quiet = 0  # complaints not logged since the last line

    def __call__(self, text: str) -> None:
        with self._lock:
            now = self._clock()
            if now < self._next:
                self._quiet += 1
                return
            quiet, self._quiet, self._next = self._quiet, 0, now + self._interval
        self._log.error(text + (f" ({quiet} more since the last such line)" if quiet else ""))


class TransferServer:
    def __init__(self, cache: Cache, port_spec: str | None, log: WorkerLog,
                 key: PeerKey | None = None):
        self.cache = cache
        self.log = log
        self.key = key or PeerKey()
        self._refused = Throttled(log)
        self.listener = bind_listener(parse_port_spec(port_spec), MAX_CLIENTS)
        self.port = self.listener.getsockname()[1]
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._watchdog = Watchdog()
        self._closed = False
        threading.Thread(target=self._accept_loop, name="transfer-server", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._watchdog.close()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, addr = self.listener.accept()
            except OSError:
                if self._closed:
                    return
                continue
            if not self._slots.acquire(blocking=False):
                self.log(f"transfer server: refusing {addr[0]}: {MAX_CLIENTS} clients already")
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, addr), daemon=True).start()

    def _serve(self, conn: socket.socket, addr: tuple) -> None:
        token, entry = 0, None
        try:
            if not self._admit(conn, addr):
                return
            name = _read_request(conn, time.monotonic() + REQUEST_TIMEOUT)
            set_io_timeout(conn, SEND_IDLE_TIMEOUT)
            entry = self.cache.objects.get(name)
            token = self._watchdog.arm(conn, send_deadline(entry.size if entry else 0))
            self.log(f"transfer server: {addr[0]}:{addr[1]} gets {name}")
            self._send_object(conn, name)
        except (OSError, ValueError) as e:
            why = str(e)
            if token and not self._watchdog.disarm(token):
                why = f"not sent within {send_deadline(entry.size if entry else 0):.0f}s ({e})"
            self.log(f"transfer server: {addr[0]}:{addr[1]}: {why}")
        finally:
            self._watchdog.disarm(token)  # before close: the watchdog never sees the fd again
            conn.close()
            self._slots.release()

    def _admit(self, conn: socket.socket, addr: tuple) -> bool:
        """Whether the peer may ask for something: it passed the exchange, if one is due."""
        key = self.key.current()
        if key is None:
            return True
        try:
            exchange_blocking(conn, key, AUTH_TIMEOUT)
        except (AuthError, OSError) as e:
            self._refused(f"transfer server: refused {addr[0]}:{addr[1]}: {e}")
            return False
        return True

    def _send_object(self, conn: socket.socket, name: str) -> None:
        try:
            # no cache entry ends in .meta, has a name longer than a file name may be, or
            # one that is not UTF-8 (raises UnicodeError)
            if name.endswith(".meta") or len(name.encode()) > NAME_MAX:
                raise UnsafeName(name)
            path = self.cache.path(name)
        except (UnsafeName, UnicodeError):
            conn.sendall(_refusal(name))
            return
        held = self.cache.memory(name)
        if held is not None:
            conn.sendall(b"".join(outgoing_bytes(name, held.data, held.mode, held.mtime)))
            return
        for piece in outgoing(path, name, follow_top=False):
            if isinstance(piece, FileSegment):
                send_file(conn, piece)
            else:
                conn.sendall(piece)


def _refusal(name: str) -> bytes:
    """``error <name> 22``; ``error - 22`` if ``name`` cannot be echoed in one line."""
    try:
        reply = p.ErrorItem(name or "-", 22).encode()
    except UnicodeError:
        reply = b""
    return reply if 0 < len(reply) <= p.LINE_MAX else p.ErrorItem("-", 22).encode()


class Watchdog:
    """Shuts down connections that pass their deadline (one thread for the whole server):
    a ``recv``, ``send`` or ``sendfile`` blocked on one then returns at once. A connection is
    armed before it is used and disarmed before it is closed; both under one lock, so the
    watchdog never touches a descriptor that may have been reused."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []  # (deadline, token); disarmed ones linger
        self._armed: dict[int, socket.socket] = {}  # token -> connection
        self._serial = 0
        self._closed = False
        threading.Thread(target=self._run, name="transfer-watchdog", daemon=True).start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def arm(self, conn: socket.socket, seconds: float) -> int:
        """Shut ``conn`` down in ``seconds`` unless disarmed first; returns a token."""
        with self._cond:
            self._serial += 1
            heapq.heappush(self._heap, (time.monotonic() + seconds, self._serial))
            self._armed[self._serial] = conn
            if self._heap[0][1] == self._serial:
                self._cond.notify()
            return self._serial

    def disarm(self, token: int) -> bool:
        """Cancel a deadline; False if it had already passed (the connection is shut)."""
        with self._cond:
            return self._armed.pop(token, None) is not None

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now
                                      or self._heap[0][1] not in self._armed):
                    _, token = heapq.heappop(self._heap)
                    conn = self._armed.pop(token, None)
                    if conn is not None:
                        try:
                            conn.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


def send_file(conn: socket.socket, seg: FileSegment) -> None:
    """``seg`` over a blocking socket with ``os.sendfile`` (``socket.sendfile`` would poll
    before every chunk when the socket has a timeout)."""
    fd = open_segment(seg)
    try:
        os.posix_fadvise(fd, 0, seg.length, os.POSIX_FADV_SEQUENTIAL)
        offset = 0
        while offset < seg.length:
            try:
                n = os.sendfile(conn.fileno(), fd, offset, seg.length - offset)
            except BlockingIOError:
                raise TimeoutError(f"peer took nothing for {SEND_IDLE_TIMEOUT}s") from None
            if n == 0:
                raise OSError(f"{seg.path}: sent {offset} of {seg.length} bytes (it shrank)")
            offset += n
    finally:
        os.close(fd)


def _read_request(conn: socket.socket, deadline: float) -> str:
    """The name in the request line, which must be complete by ``deadline`` (monotonic)."""
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete request within {REQUEST_TIMEOUT}s")
        conn.settimeout(left)
        chunk = conn.recv(p.LINE_MAX)
        if not chunk:
            raise ValueError("closed before sending a request")
        data += chunk
        if len(data) > p.LINE_MAX:
            raise ValueError("request line too long")
    words = data.split(b"\n", 1)[0].decode("utf-8", "surrogateescape").split()
    if len(words) != 2 or words[0] != "get":
        raise ValueError(f"bad request {data[:100]!r}")
    return unurl(words[1])

