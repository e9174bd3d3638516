"""The worker's transfer server: other workers fetch cache objects from it (protocol spec §7).

One thread accepts; each connection is served by its own thread (at most ``MAX_CLIENTS`` at
once): it reads one line ``get <cachename>`` within ``REQUEST_TIMEOUT`` seconds, answers with
the item stream of ``cache/<cachename>``, or of its content if the cache holds it in memory
(file contents with ``os.sendfile`` on a blocking
socket: one system call per file, waiting in the kernel) or an ``error`` item, and closes.
Only plain cache entries are served: a name that is not one path component, or that names
a ``.meta`` file, gets ``error <name> 22``.

The server only reads the cache directory; objects enter it by an atomic rename, so a peer
never sees half of one. An object unlinked while it is being sent is still sent whole (the
open descriptor keeps it), or the connection breaks and the fetching peer reports a failure.
"""

from __future__ import annotations

import os
import socket
import threading

from .. import protocol as p
from ..items import FileSegment, UnsafeName, outgoing, outgoing_bytes
from ..protocol.urlcode import decode as unurl
from ..transport import bind_listener, set_io_timeout
from .cache import Cache
from .log import WorkerLog

MAX_CLIENTS = 128
REQUEST_TIMEOUT = 5.0
SEND_TIMEOUT = 300.0


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


class TransferServer:
    def __init__(self, cache: Cache, port_spec: str | None, log: WorkerLog):
        self.cache = cache
        self.log = log
        self.listener = bind_listener(parse_port_spec(port_spec), MAX_CLIENTS)
        self.port = self.listener.getsockname()[1]
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._closed = False
        threading.Thread(target=self._accept_loop, name="transfer-server", daemon=True).start()

    def close(self) -> None:
        self._closed = True
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
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            name = _read_request(conn)
            set_io_timeout(conn, SEND_TIMEOUT)
            self.log(f"transfer server: {addr[0]}:{addr[1]} gets {name}")
            self._send_object(conn, name)
        except (OSError, ValueError) as e:
            self.log(f"transfer server: {addr[0]}:{addr[1]}: {e}")
        finally:
            conn.close()
            self._slots.release()

    def _send_object(self, conn: socket.socket, name: str) -> None:
        try:
            if name.endswith(".meta"):
                raise UnsafeName(name)
            path = self.cache.path(name)
        except UnsafeName:
            conn.sendall(p.ErrorItem(name or "-", 22).encode())
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


def send_file(conn: socket.socket, seg: FileSegment) -> None:
    """``seg`` over a blocking socket with ``os.sendfile`` (``socket.sendfile`` would poll
    before every chunk when the socket has a timeout)."""
    fd = os.open(seg.path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, seg.length, os.POSIX_FADV_SEQUENTIAL)
        offset = 0
        while offset < seg.length:
            try:
                n = os.sendfile(conn.fileno(), fd, offset, seg.length - offset)
            except BlockingIOError:
                raise TimeoutError(f"peer took nothing for {SEND_TIMEOUT}s") from None
            if n == 0:
                raise OSError(f"{seg.path}: sent {offset} of {seg.length} bytes (it shrank)")
            offset += n
    finally:
        os.close(fd)


def _read_request(conn: socket.socket) -> str:
    data = b""
    while b"\n" not in data:
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

