"""Downloads asked for by ``puturl``/``puturl_now`` (protocol spec §7, §8.4).

Each download runs in its own thread (at most ``max_active`` at once; the rest wait in
order), writing into ``<workspace>/transfer/<cachename>``. Sources:

* ``workerip://HOST:PORT/<cachename>`` and ``worker://HOST:PORT/<cachename>``: a peer's
  transfer server; the item stream is received by ``transport.Splicer`` (``splice``, or
  ``O_DIRECT`` writes for large files) on a blocking socket whose ``SO_RCVTIMEO`` is
  ``IO_TIMEOUT``, and checked like any item stream (one plain name per level, no escaping
  symlinks);
* ``http``, ``https``, ``ftp``, ``file`` URLs: fetched with ``urllib``.

Before asking a peer, the fetcher proves it knows the ``PeerKey`` (the ``--password``, or
the manager's transfer secret) with the exchange of protocol spec §2.2, as the peer's
transfer server demands then. Sources named ``workerip+noauth://`` or ``worker+noauth://``
are peers that cannot authenticate (upstream workers, as our manager marks them): they are
asked like ``workerip://``/``worker://``, without the exchange.

A finished download is put on a queue and a byte is written to a pipe that the session's
selector watches; the session then calls ``collect()`` and moves the object into the cache
(or reports ``cache-invalid`` with the error text).
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .. import protocol as p
from ..items import ItemReceiver, UnsafeName, check_component, remove_tree
from ..security import HANDSHAKE_TIMEOUT, exchange_blocking
from ..transport import Splicer, set_io_timeout
from .transfer_server import PeerKey

CONNECT_TIMEOUT = 30.0
IO_TIMEOUT = 300.0
PEER_SCHEMES = {"workerip": True, "worker": True,  # scheme -> whether to authenticate
                "workerip+noauth": False, "worker+noauth": False}


@dataclass(slots=True)
class Fetched:
    msg: p.PutUrl
    path: str  # the staged object (when error is None)
    start_us: int
    error: str | None = None


class Fetcher:
    def __init__(self, transfer_dir: str, max_active: int = 10, key: PeerKey | None = None):
        self.transfer_dir = transfer_dir
        self.key = key or PeerKey()
        self.max_active = max_active
        self.waiting: deque[p.PutUrl] = deque()
        self.active: dict[str, p.PutUrl] = {}  # cachename -> request being downloaded
        self.cancelled: set[str] = set()
        self._done: queue.SimpleQueue[Fetched] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)

    def fileno(self) -> int:
        return self._wake_r

    def __contains__(self, cachename: str) -> bool:
        return cachename in self.active or any(m.cachename == cachename for m in self.waiting)

    def submit(self, msg: p.PutUrl) -> None:
        check_component(msg.cachename)
        if msg.now:
            self.waiting.appendleft(msg)
        else:
            self.waiting.append(msg)
        self._start_more()

    def cancel(self, cachename: str) -> p.PutUrl | None:
        """Forget a download; returns its request if it had not started yet."""
        for msg in self.waiting:
            if msg.cachename == cachename:
                self.waiting.remove(msg)
                return msg
        if cachename in self.active:
            self.cancelled.add(cachename)
        return None

    def collect(self) -> list[Fetched]:
        """Finished downloads (cancelled ones are cleaned up and left out)."""
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        out = []
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                break
            name = done.msg.cachename
            self.active.pop(name, None)
            if name in self.cancelled:
                self.cancelled.discard(name)
                remove_tree(done.path)
                continue
            out.append(done)
        self._start_more()
        return out

    def abandon(self) -> None:
        """The session is over: drop queued downloads; running ones are discarded when they
        finish. (The fetcher and its wake-up pipe live as long as the worker process.)"""
        self.waiting.clear()
        self.cancelled.update(self.active)

    def _start_more(self) -> None:
        while self.waiting and len(self.active) < self.max_active:
            msg = self.waiting.popleft()
            if msg.cachename in self.active:  # the same object twice: one download serves
                continue
            self.active[msg.cachename] = msg
            threading.Thread(target=self._run, args=(msg,), daemon=True).start()

    def _run(self, msg: p.PutUrl) -> None:
        start_us = int(time.time() * 1e6)
        path = os.path.join(self.transfer_dir, msg.cachename)
        remove_tree(path)
        error = None
        try:
            download(msg.url, msg.cachename, path, self.key.current())
            if msg.mode and not os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, msg.mode & 0o777)
        except (OSError, ValueError, UnsafeName, p.RemoteProtocolError) as e:
            remove_tree(path)
            error = f"error transferring {msg.url}: {e}\n"
        self._done.put(Fetched(msg, path, start_us, error))
        os.write(self._wake_w, b"x")


def download(url: str, cachename: str, dest: str, password: bytes | None = None) -> None:
    """Fetch ``url`` into ``dest`` (a file, or a tree for peer objects); ``password``: what
    to prove to a peer that authenticates."""
    parts = urlsplit(url)
    if parts.scheme in PEER_SCHEMES:
        if not parts.hostname or not parts.port:
            raise ValueError(f"peer URL {url!r} has no host:port")
        fetch_from_peer(parts.hostname, parts.port, unquote(parts.path.lstrip("/")), dest,
                        password if PEER_SCHEMES[parts.scheme] else None)
    elif parts.scheme == "file":
        shutil.copyfile(unquote(parts.path), dest)
    elif parts.scheme in ("http", "https", "ftp"):
        with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as r, open(dest, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    else:
        raise ValueError(f"unsupported URL scheme in {url!r}")


def fetch_from_peer(host: str, port: int, name: str, dest: str,
                    password: bytes | None = None) -> None:
    """Receive cache object ``name`` from a peer's transfer server into ``dest``, first
    passing the password exchange if ``password`` is given."""
    check_component(name)
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as sock:
        if password is not None:
            exchange_blocking(sock, password, HANDSHAKE_TIMEOUT)
        set_io_timeout(sock, IO_TIMEOUT)
        sock.sendall(f"get {name}\n".encode())
        receive_item(sock, dest, f"{host}:{port}")


def receive_item(sock: socket.socket, dest: str, peer: str) -> None:
    """Read one top-level item from a blocking socket into ``dest``."""
    decoder = p.Decoder("transfer")
    receiver = ItemReceiver(dest)
    splicer = Splicer()
    try:
        while True:
            if decoder.raw_left and not decoder.buffered and receiver.content_fd >= 0:
                try:
                    n = splicer.move(sock, receiver.content_fd, decoder.raw_left)
                except BlockingIOError:  # the socket's SO_RCVTIMEO ran out
                    raise TimeoutError(f"{peer} sent nothing for {IO_TIMEOUT}s") from None
                if n == 0:
                    raise OSError(f"{peer} closed the connection in the middle of a file")
                decoder.consume_raw(n)
                if receiver.advance(n):
                    break
                continue
            event = decoder.next_event()
            if event is None:
                try:
                    data = sock.recv(1 << 16)
                except BlockingIOError:
                    raise TimeoutError(f"{peer} sent nothing for {IO_TIMEOUT}s") from None
                if not data:
                    raise OSError(f"{peer} closed the connection before the object was whole")
                decoder.feed(data)
                continue
            if receiver.feed(event):
                break
    except BaseException:
        receiver.abort()
        raise
    finally:
        splicer.close()
    if receiver.write_error is not None:
        raise receiver.write_error
    if receiver.error is not None:
        raise OSError(f"{peer} reported error {receiver.error.errno} for "
                      f"{receiver.error.name!r}: {os.strerror(receiver.error.errno)}")
