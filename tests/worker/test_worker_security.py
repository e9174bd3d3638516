"""The worker's side of issue 12: TLS to the manager, the password exchange, the transfer
secret, and what a stranger gets from the transfer port.

The fake manager here is a TCP (or TLS) server on 127.0.0.1 that plays the manager's side by
hand. Its password exchange is written straight from the table of protocol spec §2.2, not
with ``security.py``, so a mistake made the same way on both sides of ``security.py`` would
still be caught."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import socket
import ssl
import string
import subprocess
import sys
import time
import types

import pytest

from ndcctools.taskvine import protocol as p
from ndcctools.taskvine import security
from ndcctools.taskvine.core import catalog_reporter
from ndcctools.taskvine.worker.locate import ByName
from ndcctools.taskvine.worker.transfer_server import Throttled
from tests.conftest import wait_until

DEADLINE = 20.0
PASSWORD = b"0123456789abcdef correct horse\n"  # raw file bytes, trailing newline included


# ---------------------------------------------------------------- the §2.2 exchange, by hand
def sha1_hex(password: bytes, challenge: bytes) -> bytes:
    """Step 3 of the table: hex(SHA1(password + b" " + challenge))."""
    return hashlib.sha1(password + b" " + challenge).hexdigest().encode()


def spec_exchange(conn: Conn, password: bytes) -> tuple[bool, bytes]:
    """One side of §2.2 on ``conn``: (whether we accepted the peer, the peer's verdict)."""
    mine = "".join(random.choice(string.ascii_lowercase) for _ in range(63)).encode()
    conn.sendall(b"auth password sha1\n" + mine + b"\n")  # steps 1 and 2
    assert conn.readline() == b"auth password sha1"
    theirs = conn.readline()
    assert len(theirs) == 63 and theirs.isalpha() and theirs.islower()
    conn.sendall(sha1_hex(password, theirs) + b"\n")  # step 3
    accepted = conn.readline() == sha1_hex(password, mine)
    conn.sendall(b"ok\n" if accepted else b"failure\n")  # step 4
    return accepted, conn.readline()


class Conn:
    """A connected socket (plain or TLS) read by lines, then by protocol messages."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.settimeout(DEADLINE)
        self.buf = b""
        self.decoder = p.Decoder("worker")

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the worker closed the connection")
        self.buf += data

    def readline(self) -> bytes:
        while b"\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def next(self):
        """The next message from the worker."""
        self.decoder.feed(self.buf)
        self.buf = b""
        while (ev := self.decoder.next_event()) is None:
            self._more()
            self.decoder.feed(self.buf)
            self.buf = b""
        return ev

    def until(self, kind):
        while not isinstance(ev := self.next(), kind):
            pass
        return ev

    def hello(self) -> list:
        """The hello, up to and including the resources block."""
        out = [self.next()]
        while not isinstance(out[-1], p.Resources):
            out.append(self.next())
        return out

    def rest(self) -> bytes:
        """Everything until the worker closes (or the deadline)."""
        try:
            while True:
                self._more()
        except (EOFError, OSError):
            pass
        return self.buf

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------- the fake manager
class Manager:
    """A listening socket on 127.0.0.1 (TLS with a fresh self-signed certificate if ``tls``)
    and a real ``vine_worker`` pointed at it."""

    def __init__(self, tmp_path, *worker_args, tls=False, timeout=30, max_backoff=8,
                 where=None):
        self.tmp_path = tmp_path
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.srv.settimeout(DEADLINE)
        self.port = self.srv.getsockname()[1]
        self.sni: list[str | None] = []
        self.ctx = None
        if tls:
            key, cert = security.make_self_signed(str(tmp_path))
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(cert, key)
            self.ctx.sni_callback = lambda obj, name, ctx: self.sni.append(name)
        self.workspace = tmp_path / "ws"
        self.log = tmp_path / "worker.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ndcctools.taskvine.tools.vine_worker",
             *(where or ["127.0.0.1", str(self.port)]), "--cores", "1", "--memory", "500",
             "--disk", "500",
             "--workspace", str(self.workspace), "-d", "all", "-o", str(self.log),
             "--timeout", str(timeout), "--max-backoff", str(max_backoff), *worker_args],
            stdin=subprocess.DEVNULL, stderr=open(tmp_path / "worker.stderr", "wb"))

    def accept(self) -> Conn:
        conn, _ = self.srv.accept()
        if self.ctx is not None:
            conn.settimeout(DEADLINE)
            conn = self.ctx.wrap_socket(conn, server_side=True)
        return Conn(conn)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def logged(self, text: str) -> None:
        wait_until(lambda: text in self.log_text(), timeout=DEADLINE)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.srv.close()


@pytest.fixture
def made(tmp_path):
    """``made(*args, **kw)`` starts a worker and its fake manager; all are stopped after."""
    started = []

    def make(*args, **kw):
        m = Manager(tmp_path, *args, **kw)
        started.append(m)
        return m
    yield make
    for m in started:
        m.close()


def password_file(tmp_path, data: bytes = PASSWORD) -> str:
    path = tmp_path / f"pw-{len(data)}"
    path.write_bytes(data)
    return str(path)


# ---------------------------------------------------------------- passwords
def test_right_password_then_the_hello(made, tmp_path):
    m = made("-P", password_file(tmp_path))
    conn = m.accept()
    accepted, verdict = spec_exchange(conn, PASSWORD)
    assert accepted and verdict == b"ok"
    hello = conn.hello()
    assert isinstance(hello[0], p.Hello) and hello[1].key == "worker-id"
    # with a password the transfer port uses it: no transfer secret is asked for
    assert p.Info(security.TRANSFER_AUTH_INFO, "1") not in hello
    assert hello[2] == p.Info(p.MONITOR_INFO, "1") and isinstance(hello[3], p.TransferPort)


def test_wrong_password_is_logged_once_retried_with_growing_waits_then_gives_up(made, tmp_path):
    m = made("-P", password_file(tmp_path), timeout=5)
    times = []
    for _ in range(4):  # tries at about 0, 1, 3 and 7 s; after 7 > 5 s it gives up
        conn = m.accept()
        times.append(time.monotonic())
        accepted, verdict = spec_exchange(conn, b"another password\n")
        assert not accepted and verdict == b"failure"
        assert conn.rest() == b""  # nothing of the hello follows
        conn.close()
    assert m.proc.wait(DEADLINE) == 0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] > 0.5 and gaps[1] > gaps[0] + 0.5 and gaps[2] > gaps[1] + 1
    log = m.log_text()
    assert log.count("password exchange failed: the peer presented the wrong password") == 1
    assert "no manager for 5s: exiting" in log


def test_manager_without_password_hangs_up_on_a_worker_with_one(made, tmp_path):
    m = made("-P", password_file(tmp_path))
    for _ in range(2):  # it comes back (after a wait), and says why once
        conn = m.accept()
        assert conn.readline() == b"auth password sha1"  # not what a manager expects
        assert len(conn.readline()) == 63  # read it all, so that closing sends no reset
        conn.close()
    m.logged("would take us; retrying in 2s")  # the second refusal was handled
    assert m.log_text().count("the peer closed the connection during the password") == 1


def test_manager_with_password_turns_away_a_worker_without(made):
    m = made()
    for _ in range(2):
        conn = m.accept()
        conn.sendall(b"auth password sha1\n" + b"q" * 63 + b"\n")
        assert conn.readline().startswith(b"taskvine 13 ")  # where the auth line should be
        conn.hello()  # read it all, so that closing sends no reset
        conn.close()
    m.logged("would take us; retrying in 2s")
    assert m.log_text().count("this manager requires a password (see --password)") == 1


# ---------------------------------------------------------------- TLS
@pytest.mark.parametrize("args,sni", [
    (["--ssl"], None),  # given an IP address: no server name is sent
    (["--tls-sni", "manager.example.org"], "manager.example.org"),
    (["--ssl", "--tls-sni", "other.example", "-P", "PW"], "other.example"),
])
def test_tls_with_a_self_signed_certificate(made, tmp_path, args, sni):
    password = "-P" in args
    args = [password_file(tmp_path) if a == "PW" else a for a in args]
    m = made(*args, tls=True)
    conn = m.accept()
    assert isinstance(conn.sock, ssl.SSLSocket) and m.sni == [sni]
    if password:
        assert spec_exchange(conn, PASSWORD) == (True, b"ok")
    hello = conn.hello()
    assert hello[0].protocol == 13 and isinstance(hello[-1], p.Resources)
    conn.sendall(p.Check().encode())
    assert isinstance(conn.until(p.Alive), p.Alive)


def test_plain_worker_against_a_tls_manager_fails_and_says_so(made, tmp_path):
    m = made(tls=True)
    for _ in range(2):
        with pytest.raises(OSError):
            m.accept()  # the handshake fails: the worker sent its plain hello
    m.logged("would take us; retrying in 2s")
    # the manager hangs up, or first answers with a TLS alert
    log = m.log_text()
    assert log.count("does it use TLS") + log.count("answered with TLS (see --ssl)") == 1
    assert m.proc.poll() is None


def test_a_single_shot_worker_turned_away_after_its_hello_exits(made):
    m = made("--single-shot", tls=True)
    with pytest.raises(OSError):
        m.accept()
    assert m.proc.wait(DEADLINE) == 0
    assert "TLS" in m.log_text()


def test_tls_worker_against_a_plain_manager_fails_and_says_so(made):
    m = made("--ssl")
    for _ in range(2):
        conn = m.accept()
        header = conn.sock.recv(5, socket.MSG_WAITALL)
        assert header[:2] == b"\x16\x03"  # a TLS handshake record, not a hello
        conn.sock.recv(int.from_bytes(header[3:5]), socket.MSG_WAITALL)  # no reset at close
        conn.sendall(b"this is no TLS\n")
        conn.close()
    m.logged("would take us; retrying in 2s")
    assert m.log_text().count("TLS handshake failed") == 1


def test_a_put_of_megabytes_over_tls_lands_intact(made):
    m = made("--ssl", tls=True)
    conn = m.accept()
    conn.hello()
    content = os.urandom(5 << 20) + b"tail"
    conn.sendall(p.Put("file-big", 1, len(content)).encode()
                 + p.FileItem("file-big", len(content), 0o644, 1).encode() + content)
    update = conn.until(p.CacheUpdate)
    assert (update.cachename, update.size) == ("file-big", len(content))
    assert (m.workspace / "cache" / "file-big").read_bytes() == content
    conn.sendall(p.GetFile("file-big").encode())  # and back, through the TLS outbox
    item = conn.until(p.FileItem)
    got = bytearray()
    while len(got) < item.size:
        got += conn.next().chunk
    assert item.size == len(content) and bytes(got) == content


def test_a_put_larger_than_the_free_disk_is_refused_and_the_session_goes_on(made):
    m = made()
    conn = m.accept()
    conn.hello()
    conn.sendall(p.Put("file-huge", 1, 1 << 60).encode()
                 + p.FileItem("file-huge", 3, 0o644, 1).encode() + b"abc" + p.Check().encode())
    invalid = conn.until(p.CacheInvalid)
    assert invalid.cachename == "file-huge" and "free" in invalid.text
    assert isinstance(conn.until(p.Alive), p.Alive)
    assert not (m.workspace / "cache" / "file-huge").exists()


# ---------------------------------------------------------------- the transfer port
def transfer_get(port: int, name: str, password: bytes | None) -> bytes:
    """What the worker's transfer port answers to ``get name`` (after the exchange, if a
    password is given); raises if the exchange fails."""
    conn = Conn(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE))
    try:
        if password is not None:
            accepted, verdict = spec_exchange(conn, password)
            assert accepted and verdict == b"ok", "the exchange failed"
        conn.sendall(f"get {name}\n".encode())
        return conn.rest()
    finally:
        conn.close()


def put_secret(conn: Conn, name: str, content: bytes) -> None:
    conn.sendall(p.Put(name, 1, len(content)).encode()
                 + p.FileItem(name, len(content), 0o644, 1).encode() + content)
    assert conn.until(p.CacheUpdate).cachename == name


CONTENT = b"the secret input of a task\n"


def test_with_the_managers_secret_only_peers_holding_it_read_the_cache(made):
    m = made("--single-shot")
    conn = m.accept()
    hello = conn.hello()
    assert hello[2] == p.Info(security.TRANSFER_AUTH_INFO, "1")  # right after worker-id
    port = next(e.port for e in hello if isinstance(e, p.TransferPort))
    secret = security.new_secret()
    conn.sendall(p.TransferSecret(secret.decode()).encode())
    put_secret(conn, "file-s", CONTENT)
    stranger = transfer_get(port, "file-s", None)
    assert CONTENT not in stranger and stranger.startswith(b"auth password sha1\n")
    with pytest.raises(AssertionError, match="the exchange failed"):
        transfer_get(port, "file-s", b"a guess")
    assert CONTENT in transfer_get(port, "file-s", secret)
    m.logged("transfer server: refused 127.0.0.1")
    assert m.log_text().count("transfer server: refused") == 1  # the second one: later
    # the worker's own fetches prove the secret too (here from itself)
    conn.sendall(p.PutUrl(f"workerip://127.0.0.1:{port}/file-s", "file-c", 1, 0, 0o644,
                          "T1").encode())
    done = conn.until((p.CacheUpdate, p.CacheInvalid))
    assert isinstance(done, p.CacheUpdate) and done.transfer_id == "T1"
    assert (m.workspace / "cache" / "file-c").read_bytes() == CONTENT
    assert secret.decode() not in m.log_text()  # the debug log does not show it


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2)
    sock.settimeout(DEADLINE)
    return sock


def keyed_worker(made):
    """A single-shot worker that said hello and was given a transfer secret."""
    m = made("--single-shot")
    conn = m.accept()
    conn.hello()
    conn.sendall(p.TransferSecret(security.new_secret().decode()).encode())
    return conn, m


def test_noauth_sources_are_fetched_without_the_exchange(made):
    upstream = listening()  # an upstream worker's transfer port: no exchange at all
    conn, m = keyed_worker(made)
    conn.sendall(p.PutUrl(f"workerip+noauth://127.0.0.1:{upstream.getsockname()[1]}/file-u",
                          "file-u", 1, 0, 0o644, "T2").encode())
    peer = Conn(upstream.accept()[0])
    assert peer.readline() == b"get file-u"  # no "auth password sha1" first
    peer.sendall(p.FileItem("file-u", 5, 0o644, 1).encode() + b"fresh")
    peer.close()
    assert conn.until((p.CacheUpdate, p.CacheInvalid)).transfer_id == "T2"
    assert (m.workspace / "cache" / "file-u").read_bytes() == b"fresh"
    upstream.close()


def test_a_peer_without_the_secret_cannot_serve_forged_content(made):
    impostor = listening()  # says it is a worker of the run, but knows no secret
    conn, m = keyed_worker(made)
    conn.sendall(p.PutUrl(f"workerip://127.0.0.1:{impostor.getsockname()[1]}/file-f",
                          "file-f", 1, 0, 0o644, "T3").encode())
    peer = Conn(impostor.accept()[0])
    accepted, verdict = spec_exchange(peer, b"a guess")
    assert not accepted and verdict == b"failure"
    assert peer.rest() == b""  # no "get" follows
    peer.close()
    failed = conn.until((p.CacheUpdate, p.CacheInvalid))
    assert isinstance(failed, p.CacheInvalid) and failed.transfer_id == "T3"
    assert "wrong password" in failed.text
    assert not (m.workspace / "cache" / "file-f").exists()
    impostor.close()


def test_with_a_password_the_transfer_port_demands_it(made, tmp_path):
    m = made("--single-shot", "-P", password_file(tmp_path))
    conn = m.accept()
    assert spec_exchange(conn, PASSWORD) == (True, b"ok")
    hello = conn.hello()
    port = next(e.port for e in hello if isinstance(e, p.TransferPort))
    put_secret(conn, "file-p", CONTENT)
    assert CONTENT not in transfer_get(port, "file-p", None)
    assert CONTENT in transfer_get(port, "file-p", PASSWORD)


def test_a_new_manager_that_gives_no_secret_opens_the_port_again(made):
    m = made()  # not single-shot: it comes back after the release
    conn = m.accept()
    port = next(e.port for e in conn.hello() if isinstance(e, p.TransferPort))
    conn.sendall(p.TransferSecret(security.new_secret().decode()).encode())
    conn.sendall(p.Release().encode())
    conn.rest()
    conn.close()
    conn = m.accept()  # an upstream manager, say: its first message is no secret
    conn.hello()
    put_secret(conn, "file-o", CONTENT)
    assert CONTENT in transfer_get(port, "file-o", None)


def test_a_malformed_secret_ends_the_session(made):
    m = made("--single-shot")
    conn = m.accept()
    conn.hello()
    conn.sendall(b"transfer-secret not-hex\n")
    assert conn.rest() == b""
    assert m.proc.wait(DEADLINE) == 0


# ---------------------------------------------------------------- -M and the catalog's "ssl"
def test_a_manager_whose_catalog_record_says_ssl_gets_tls_with_its_name_as_sni(made, catalog):
    name = "vinetest-tls-record"
    m = made(tls=True, where=["-M", name, "-C", catalog.spec, "--connection-mode",
                              "by_hostname"])
    record = {"type": "vine_manager", "project": name, "name": "localhost", "port": m.port,
              "ssl": True}
    catalog_reporter.send_update("127.0.0.1", catalog.port, json.dumps(record).encode(), False)
    conn = m.accept()  # the worker asks again until the record is there
    assert m.sni == ["localhost"]
    assert isinstance(conn.hello()[0], p.Hello)



RECORDS = [{"project": "p", "name": "tls-host", "port": 1, "address": "10.0.0.1", "ssl": True},
           {"project": "p", "name": "plain-host", "port": 2, "address": "10.0.0.2"}]


def test_catalog_records_say_which_managers_use_tls():
    where = ByName("p", None, "by_apparent_ip", [].append, find=lambda *a: RECORDS)
    assert sorted(where.addresses()) == [("10.0.0.1", 1), ("10.0.0.2", 2)]
    assert where.uses_tls(("10.0.0.1", 1)) and not where.uses_tls(("10.0.0.2", 2))


def test_a_worker_given_ssl_skips_managers_without_it():
    log = []
    where = ByName("p", None, "by_apparent_ip", log.append, find=lambda *a: RECORDS,
                   tls_only=True)
    assert where.addresses() == [("10.0.0.1", 1)]
    assert any("plain-host:2" in line and "--ssl" in line for line in log)


# ---------------------------------------------------------------- refusals in the log
def test_refused_peers_are_logged_at_most_once_a_minute_with_a_count():
    lines, now = [], [0.0]
    say = Throttled(types.SimpleNamespace(error=lines.append), 60.0, lambda: now[0])
    for t in (0, 1, 2, 59, 61, 62, 200):
        now[0] = t
        say(f"refused at {t}")
    assert lines == ["refused at 0", "refused at 61 (3 more since the last such line)",
                     "refused at 200 (1 more since the last such line)"]
