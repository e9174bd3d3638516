"""Ask a manager about itself over its own port (protocol.md §4.7), as ``vine_status HOST
PORT`` and the factory do: send one request line, read one JSON array until the manager
closes. Works against any protocol-13 manager, ours or upstream's, over TLS (``ssl=True``) and
with its password (``password=`` the password file's bytes) when the manager asks for them."""

from __future__ import annotations

import json
import socket

from .security import AuthError, exchange_blocking, wrap_client

REQUESTS = ("manager_status", "resources_status", "task_status", "worker_status",
            "wable_status")
MAX_REPLY = 256 << 20  # a status reply larger than this is not believed


class StatusError(OSError):
    """The manager could not be asked, or its answer was not a JSON list."""


def query_manager(host: str, port: int, request: str = "manager_status",
                  timeout: float = 10.0, ssl: bool = False,
                  password: bytes | None = None) -> list[dict]:
    """The manager's answer to ``request`` (one of ``REQUESTS``), as a list of dicts.

    Raises ``ValueError`` for an unknown request, ``StatusError`` (an ``OSError``) when the
    manager cannot be reached in ``timeout`` seconds or answers something else."""
    if request not in REQUESTS:
        raise ValueError(f"unknown status request {request!r}; one of {', '.join(REQUESTS)}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if ssl:
                sock = wrap_client(sock, host, timeout)
            if password is not None:
                exchange_blocking(sock, password, timeout)
            sock.sendall(request.encode() + b"\n")
            chunks, size = [], 0
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_REPLY:
                    raise StatusError(f"{host}:{port} sent more than {MAX_REPLY} bytes")
    except StatusError:
        raise
    except AuthError as e:
        raise StatusError(f"cannot ask {host}:{port} for {request}: password refused ({e})") \
            from e
    except OSError as e:
        raise StatusError(f"cannot ask {host}:{port} for {request}: {e}") from e
    try:
        rows = json.loads(b"".join(chunks))
    except ValueError as e:
        raise StatusError(f"{host}:{port} answered {request} with something not JSON") from e
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise StatusError(f"{host}:{port} answered {request} with JSON that is not a list")
    return rows
