"""Scripted peers for end-to-end tests: plain sockets that say exactly what a test wants."""

import socket
import time

HELLO = (b"taskvine 13 fakehost Linux x86_64 8.0.0\ninfo worker-id worker-fake\n"
         b"transfer-port 1\ninfo worker-end-time 0\nalive\nresources\ncores 1.000000\n"
         b"memory 1000.000000\ndisk 1000.000000\ngpus 0.000000\nworkers 1.000000\ntag 0\nend\n")


class FakeWorker:
    """A scripted worker: a plain socket that says exactly what the test wants."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.returned = []  # tasks m.wait() gave back while we served the manager
        self.eof = False

    def send(self, data: bytes):
        self.sock.sendall(data)

    def pump(self, m, done, timeout: float = 10.0) -> None:
        """Serve manager ``m`` and read what it sends us until ``done()``, with a deadline."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.01)
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"fake worker: condition not met; got {self.buf!r}")
            t = m.wait(0)
            if t is not None:
                self.returned.append(t)
            if self.eof:
                continue
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            self.eof = not chunk
            self.buf += chunk

    def expect(self, m, marker: bytes) -> bytes:
        """Serve ``m`` until it has sent ``marker``; returns what came up to it."""
        self.pump(m, lambda: marker in self.buf or self.eof)
        if marker not in self.buf:
            raise EOFError(f"closed before {marker!r}; got {self.buf!r}")
        head, _, self.buf = self.buf.partition(marker)
        return head + marker

    def wait_closed(self, m) -> None:
        """Serve ``m`` until it closes our connection."""
        self.pump(m, lambda: self.eof)
