"""The dashboard's I/O shell: a ``ThreadingHTTPServer`` in a daemon thread of its own, each
request in a daemon thread of its own, every method handed to ``App.respond``.

The serving loop is ours (``handle_request`` until told to stop) rather than
``serve_forever``: ``close()`` may then be called from any thread, even this one (the
manager's finalizer runs wherever garbage collection happens), without waiting on itself.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ._app import HEADERS, App, Response, text

POLL = 0.1  # seconds the serving thread waits for a connection before looking at its stop flag


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "taskvine-dashboard"

    def __getattr__(self, name: str) -> Any:
        # http.server calls do_<METHOD>; every method goes to the app, which says 405
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)

    def _answer(self) -> None:
        try:
            response = self.server.app.respond(self.command, self.path, self.headers.get("Host"))
        except Exception as e:  # the app catches the readers' errors; this is the last net
            response = text(500, f"dashboard error: {type(e).__name__}")
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in (("Content-Type", response.content_type),
                            ("Content-Length", str(len(response.body))),
                            *HEADERS, *response.headers):
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing on the manager's stderr for each request."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that went away mid-answer: nothing to do, and nothing to print."""


class DashboardServer:
    """The dashboard of one manager, served at ``url`` until ``close()``."""

    def __init__(self, manager: Any, port: int, host: str = "127.0.0.1") -> None:
        self._httpd = _HTTPServer((host, port), App(manager, _is_loopback(host)))
        self._httpd.timeout = POLL
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"vine-dashboard-{self.port}")
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                self._httpd.handle_request()
        finally:
            self._httpd.server_close()

    def close(self) -> None:
        """Stop serving and close the port (idempotent; from any thread)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
