"""What the dashboard answers, with no socket in sight: ``App.respond(method, target, host)``
returns a ``Response``; ``_server`` only carries bytes between it and the network.

Two kinds of resource, both GET (and HEAD) only:

- the files under ``static/`` (the page, its script and style, the vendored uPlot), read
  once when the dashboard starts and served from memory;
- ``/api/<reader>``: one of ``observe``'s readers as JSON, and ``/api/state``, all of them
  in one document (what the page polls).

Whatever a reader raises becomes a 500 here (a 503 once the manager is gone), so nothing a
request does can reach the manager.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .. import observe

#: what /api/state holds, and each alone as /api/<name>
READERS: dict[str, Callable[[Any], Any]] = {
    "overview": observe.overview, "workers": observe.workers, "transfers": observe.transfers,
    "libraries": observe.libraries, "finished": observe.finished}
METHODS = ("GET", "HEAD")
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
TEXT = "text/plain; charset=utf-8"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml",
         ".md": "text/markdown; charset=utf-8", ".LICENSE": TEXT}
#: sent with every answer: the page may load nothing but its own files, and is never framed
HEADERS = (("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
           ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"))


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


def text(status: int, message: str, *headers: tuple[str, str]) -> Response:
    return Response(status, f"{message}\n".encode(), TEXT, headers)


def static_files(root: Traversable) -> dict[str, Response]:
    """Every file below ``root``, by its URL path ("/" is ``index.html``)."""
    files = {}
    for path, item in _walk(root, "/"):
        kind = TYPES.get(PurePosixPath(item.name).suffix) or (
            mimetypes.guess_type(item.name)[0] or "application/octet-stream")
        files[path] = Response(200, item.read_bytes(), kind, (("Cache-Control", "no-cache"),))
    files["/"] = files["/index.html"]
    return files


def _walk(folder: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for item in folder.iterdir():
        if item.is_dir():
            yield from _walk(item, f"{prefix}{item.name}/")
        elif not item.name.startswith("."):
            yield f"{prefix}{item.name}", item


def host_name(host: str) -> str:
    """``Host`` without its port: "127.0.0.1:8080" -> "127.0.0.1", "[::1]:80" -> "[::1]"."""
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


class App:
    """The dashboard's answers for one manager (read through a weak proxy)."""

    def __init__(self, manager: Any, loopback_only: bool,
                 static: dict[str, Response] | None = None) -> None:
        self.manager = manager
        # bound to loopback, a page of another site (DNS rebinding) must not read the run
        self.loopback_only = loopback_only
        self.static = static_files(resources.files(__package__) / "static") \
            if static is None else static

    def respond(self, method: str, target: str, host: str | None) -> Response:
        if self.loopback_only and host is not None and host_name(host) not in LOOPBACK_NAMES:
            return text(403, f"host {host!r} not served: open the dashboard on 127.0.0.1")
        path = urlsplit(target).path
        answer = self._resource(path)
        if answer is None:
            return text(404, f"no such page: {path}")
        if method not in METHODS:
            return text(405, f"{method} not allowed", ("Allow", ", ".join(METHODS)))
        return answer()

    def _resource(self, path: str) -> Callable[[], Response] | None:
        if path in self.static:
            return lambda: self.static[path]
        if not path.startswith("/api/"):
            return None
        name = path.removeprefix("/api/")
        if name == "state":
            return lambda: self._json(lambda m: {n: read(m) for n, read in READERS.items()})
        read = READERS.get(name)
        return None if read is None else lambda: self._json(read)

    def _json(self, read: Callable[[Any], Any]) -> Response:
        try:
            data = read(self.manager)
            body = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
        except ReferenceError:
            return text(503, "the manager is gone")
        except Exception as e:  # a reader's bug must not escape: the page shows the 500
            return text(500, f"reading the manager failed: {type(e).__name__}: {e}")
        return Response(200, body.encode(), "application/json", (("Cache-Control", "no-store"),))
