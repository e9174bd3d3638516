"""Who may talk to whom: TLS contexts, the password exchange, and per-run transfer secrets.

**TLS** (protocol spec §2.1). The manager wraps every accepted connection with
``server_context(key, cert)``; workers and status clients use ``client_context()``, which
checks no certificate (self-signed ones are the norm, as upstream) and sends the SNI name the
caller gives. ``make_self_signed(directory)`` writes a throw-away key and certificate for one
run with the ``cryptography`` library.

**Passwords** (§2.2). ``PasswordExchange`` is the mutual challenge/response of upstream, as a
state machine without I/O, so the manager's event loop and the worker's blocking sockets run
the same code. Each side sends ``auth password sha1``, a challenge of 63 lowercase letters,
the SHA-1 of ``password + b" " + the peer's challenge`` and its verdict (``ok``/``failure``);
the password itself never crosses the wire. ``exchange_blocking(sock, ...)`` runs it on a
blocking socket within a deadline.

**Transfer secrets** (ours). Without a password, a manager of ours gives each worker of ours
(those that say ``info transfer-auth 1`` in their hello) a per-run secret
(``transfer-secret <hex>``), and our workers' transfer ports then demand the same exchange with
that secret as the password: a stranger on the network reads nothing from a worker's cache.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import secrets
import socket
import ssl
import string
import time

AUTH_LINE = b"auth password sha1"
CHALLENGE_LENGTH = 63
HANDSHAKE_TIMEOUT = 10.0  # seconds a peer has to finish TLS and the password exchange
TRANSFER_AUTH_INFO = "transfer-auth"  # info key by which our workers ask for a secret
_LETTERS = string.ascii_lowercase


class AuthError(ConnectionError):
    """The peer did not prove it knows the password (or did not speak the exchange)."""


def read_password_file(path: str) -> bytes:
    """The raw bytes of a password file, trailing newline included (as upstream reads it)."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError(f"password file {path} is empty")
    return data


def new_secret() -> bytes:
    """A fresh per-run transfer secret (64 hex characters)."""
    return secrets.token_hex(32).encode()


def _response(password: bytes, challenge: bytes) -> bytes:
    return hashlib.sha1(password + b" " + challenge).hexdigest().encode()


class PasswordExchange:
    """One side of the exchange. ``opening()`` gives the first bytes to send; then each line
    the peer sends (without its newline) goes to ``receive(line)``, which returns the bytes to
    send next (maybe none). ``done`` is set after the peer's verdict; ``ok`` says whether both
    sides accepted, else ``error`` says why."""

    __slots__ = ("_password", "_challenge", "_step", "_accepted", "done", "ok", "error")

    def __init__(self, password: bytes, challenge: bytes | None = None):
        self._password = password
        self._challenge = challenge or "".join(
            secrets.choice(_LETTERS) for _ in range(CHALLENGE_LENGTH)).encode()
        self._step = 0
        self._accepted = False
        self.done = False
        self.ok = False
        self.error = ""

    def opening(self) -> bytes:
        """Step 1 and our challenge: neither depends on what the peer sends."""
        return AUTH_LINE + b"\n" + self._challenge + b"\n"

    def receive(self, line: bytes) -> bytes:
        if self.done:
            raise AuthError("the password exchange is over")
        self._step += 1
        if self._step == 1:
            if line.rstrip(b"\r") != AUTH_LINE:
                self._finish("the peer does not use a password"
                             if line.startswith(b"taskvine ") else
                             "the peer did not start the password exchange")
            return b""
        if self._step == 2:
            return _response(self._password, line.rstrip(b"\r")) + b"\n"
        if self._step == 3:
            self._accepted = hmac.compare_digest(line.rstrip(b"\r"),
                                                 _response(self._password, self._challenge))
            return b"ok\n" if self._accepted else b"failure\n"
        peer_ok = line.rstrip(b"\r") == b"ok"
        if not self._accepted:
            self._finish("the peer presented the wrong password")
        elif not peer_ok:
            self._finish("the peer rejected our password")
        else:
            self.done = self.ok = True
        return b""

    def _finish(self, error: str) -> None:
        self.done = True
        self.error = error


def exchange_blocking(sock: socket.socket, password: bytes,
                      timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """Run the exchange on a connected socket; raise ``AuthError`` (or ``OSError`` for a lost
    connection) unless both sides accepted. Reads one byte at a time so that nothing after
    the exchange is taken from the socket."""
    deadline = time.monotonic() + timeout
    ex = PasswordExchange(password)
    old = sock.gettimeout()
    try:
        sock.sendall(ex.opening())
        while not ex.done:
            reply = ex.receive(_read_line(sock, deadline))
            if reply:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                sock.sendall(reply)
    finally:
        sock.settimeout(old)
    if not ex.ok:
        raise AuthError(ex.error)


def _read_line(sock: socket.socket, deadline: float, limit: int = 256) -> bytes:
    line = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AuthError("the peer did not finish the password exchange in time")
        sock.settimeout(left)
        try:
            byte = sock.recv(1)
        except TimeoutError:
            raise AuthError("the peer did not finish the password exchange in time") from None
        if not byte:
            raise AuthError("the peer closed the connection during the password exchange")
        if byte == b"\n":
            return bytes(line)
        line += byte
        if len(line) > limit:
            raise AuthError("the peer sent an overlong line during the password exchange")


# ---------------------------------------------------------------------- TLS
def server_context(key: str, cert: str) -> ssl.SSLContext:
    """The manager's TLS context for the given PEM key and certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    return ctx


def client_context() -> ssl.SSLContext:
    """A worker's (or status client's) context: TLS without certificate checks, as upstream."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wrap_client(sock: socket.socket, server_name: str | None,
                timeout: float = HANDSHAKE_TIMEOUT) -> ssl.SSLSocket:
    """TLS over a connected blocking socket, handshake done within ``timeout``."""
    old = sock.gettimeout()
    sock.settimeout(timeout)
    name = server_name if server_name and not _is_ip(server_name) else None
    tls = client_context().wrap_socket(sock, server_hostname=name)
    tls.settimeout(old)
    return tls


def _is_ip(name: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
    except OSError:
        return False
    return True


def make_self_signed(directory: str, host: str = "localhost") -> tuple[str, str]:
    """Write a new key and a self-signed certificate (valid 30 days) into ``directory``;
    returns ``(key_path, cert_path)``. The key file is readable by its owner only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_path = os.path.join(directory, "key.pem")
    cert_path = os.path.join(directory, "cert.pem")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
