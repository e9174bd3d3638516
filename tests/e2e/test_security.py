"""The manager's side of TLS and passwords, with raw clients written from the spec (§2).

The client side of the password exchange here is written from protocol.md §2.2's table, not
with ``security.PasswordExchange``, so that a mistake shared by both ends of our own code
would still fail. The manager runs only while the test calls ``wait``: ``drive`` keeps it
running while a client thread talks to it.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import ssl
import string
import threading
import time

import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine import security
from ndcctools.taskvine.core import admission
from ndcctools.taskvine.status_client import StatusError, query_manager
from tests.conftest import transfer_request

PASSWORD = b"correct horse battery staple\n"


def drive(m, clients, timeout=20.0):
    """Run ``clients`` (callables) in threads while the manager serves; their results."""
    results: list = [None] * len(clients)

    def run(i, fn):
        try:
            results[i] = fn()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    while any(t.is_alive() for t in threads):
        assert time.monotonic() < deadline, "clients did not finish"
        m.wait(0.05)
    return results


def serve_until(m, condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the manager never got there"
        m.wait(0.1)


def spec_exchange(sock, password: bytes) -> bytes:
    """The client side of §2.2, step by step; returns the manager's verdict line."""
    f = sock.makefile("rb")
    mine = "".join(random.choice(string.ascii_lowercase) for _ in range(63)).encode()
    sock.sendall(b"auth password sha1\n")
    assert f.readline() == b"auth password sha1\n"
    sock.sendall(mine + b"\n")
    theirs = f.readline().rstrip(b"\n")
    assert len(theirs) == 63 and theirs.isalpha() and theirs.islower()
    sock.sendall(hashlib.sha1(password + b" " + theirs).hexdigest().encode() + b"\n")
    response = f.readline().rstrip(b"\n")
    ok = response == hashlib.sha1(password + b" " + mine).hexdigest().encode()
    sock.sendall(b"ok\n" if ok else b"failure\n")
    return f.readline()


def connect(m, tls=False, sni="localhost"):
    sock = socket.create_connection(("127.0.0.1", m.port), timeout=10)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock, server_hostname=sni)
    return sock


def hello(sock, worker_id="worker-test", transfer_auth=False) -> bytes:
    """Say hello as a worker; what the manager says first (within 3 s), or b""."""
    lines = [b"taskvine 13 testhost Linux x86_64 8.0.0", b"info worker-id " + worker_id.encode()]
    if transfer_auth:
        lines.append(b"info transfer-auth 1")
    lines += [b"info worker-end-time 0", b"alive", b"resources", b"cores 1", b"memory 100",
              b"disk 100", b"gpus 0", b"workers 1", b"tag 0", b"end"]
    sock.sendall(b"\n".join(lines) + b"\n")
    sock.settimeout(3)
    try:
        return sock.recv(4096)
    except (TimeoutError, ConnectionResetError):  # silent, or closed on us
        return b""


def debug_log(m) -> str:
    m._debug.flush()
    with open(f"{m.logging_directory}/debug") as f:
        return f.read()


@pytest.fixture
def tls_manager(tmp_path):
    with vine.Manager(port=0, run_info_path=str(tmp_path / "run"), ssl=True) as m:
        yield m


def test_a_generated_certificate_serves_tls_and_is_kept_in_the_run_info(tls_manager):
    m = tls_manager
    assert m.using_ssl
    key, cert = m.ssl_files
    assert key.startswith(m.runtime_directory) and cert.startswith(m.runtime_directory)

    def client():
        sock = connect(m, tls=True)
        version = sock.version()
        said = hello(sock)
        sock.close()
        return version, said

    (version, said), = drive(m, [client])
    assert version in ("TLSv1.2", "TLSv1.3")
    assert said.startswith(b"transfer-secret ") is False  # no transfer-auth asked
    assert m.stats.workers_joined == 1


def test_a_given_key_and_certificate_are_used(tmp_path):
    key, cert = security.make_self_signed(str(tmp_path), host="given.example")
    with vine.Manager(port=0, run_info_path=str(tmp_path / "run"), ssl=(key, cert)) as m:
        def client():
            sock = connect(m, tls=True)
            der = sock.getpeercert(binary_form=True)
            sock.close()
            return der
        der, = drive(m, [client])
    with open(cert) as f:
        assert ssl.DER_cert_to_PEM_cert(der).strip() == f.read().strip()


def test_bad_ssl_arguments_raise_errors_that_name_them(tmp_path):
    with pytest.raises(TypeError, match="ssl must be"):
        vine.Manager(port=0, run_info_path=str(tmp_path / "a"), ssl="yes")
    with pytest.raises(FileNotFoundError, match="nope.pem"):
        vine.Manager(port=0, run_info_path=str(tmp_path / "b"),
                     ssl=(str(tmp_path / "nope.pem"), str(tmp_path / "nope.pem")))
    with vine.Manager(port=0, run_info_path=str(tmp_path / "c"), ssl=(None, None)) as m:
        assert not m.using_ssl


def test_a_plain_client_is_refused_by_a_tls_manager_which_keeps_serving(tls_manager):
    m = tls_manager

    def plain():
        sock = connect(m)
        said = hello(sock)
        sock.close()
        return said

    def good():
        sock = connect(m, tls=True)
        said = hello(sock, "worker-good")
        sock.close()
        return said

    said, _ = drive(m, [plain, good])
    assert said == b""  # closed without a word (or reset)
    assert m.stats.workers_joined == 1
    assert "TLS handshake failed" in debug_log(m)


def test_password_right_wrong_and_missing(manager):
    m = manager
    m.set_password(PASSWORD)

    def right():
        sock = connect(m)
        verdict = spec_exchange(sock, PASSWORD)
        said = hello(sock, "worker-right", transfer_auth=True)
        sock.close()
        return verdict, said

    def wrong():
        sock = connect(m)
        verdict = spec_exchange(sock, b"wrong\n")
        sock.close()
        return verdict

    def missing():
        sock = connect(m)
        first = hello(sock, "worker-missing")
        sock.settimeout(3)
        rest = sock.recv(100)
        sock.close()
        return first, rest

    (verdict, said), wrong_verdict, (first, rest) = drive(m, [right, wrong, missing])
    assert verdict == b"ok\n"
    assert said == b""  # a password manager gives no transfer secret: peers use the password
    assert wrong_verdict == b"failure\n"
    assert first.startswith(b"auth password sha1\n") and rest == b""  # then closed
    assert m.stats.workers_joined == 1
    log = debug_log(m)
    assert log.count("presented the wrong password") == 1
    assert log.count("does not use a password") == 1


def test_password_file_and_trailing_newline_matter(manager, tmp_path):
    path = tmp_path / "pw"
    path.write_bytes(PASSWORD)
    assert manager.set_password_file(str(path)) is True
    assert manager.set_password_file(str(tmp_path / "missing")) is False

    def without_newline():
        sock = connect(manager)
        verdict = spec_exchange(sock, PASSWORD.rstrip(b"\n"))
        sock.close()
        return verdict

    assert drive(manager, [without_newline]) == [b"failure\n"]
    with pytest.raises(ValueError, match="non-empty"):
        manager.set_password("")


def test_tls_and_password_together_and_status_clients(tls_manager):
    m = tls_manager
    m.set_password(PASSWORD)

    def status():
        return query_manager("127.0.0.1", m.port, "manager_status", 5, ssl=True,
                             password=PASSWORD)

    def status_without_password():
        return query_manager("127.0.0.1", m.port, "manager_status", 5, ssl=True)

    rows, refused = drive(m, [status, status_without_password])
    assert rows[0]["ssl"] is True and rows[0]["port"] == m.port
    assert isinstance(refused, StatusError)


def test_our_workers_get_a_transfer_secret_and_others_do_not(manager):
    def ours(worker_id):
        def client():
            sock = connect(manager)
            said = hello(sock, worker_id, transfer_auth=True)
            sock.close()
            return said
        return client

    def upstream_like():
        sock = connect(manager)
        said = hello(sock, "worker-upstream")
        sock.close()
        return said

    a, b, c = drive(manager, [ours("worker-a"), ours("worker-b"), upstream_like])
    assert a.startswith(b"transfer-secret ") and a == b  # one secret per run
    assert len(a.split()[1]) == 64
    assert c == b""
    assert debug_log(manager).count("does not authenticate peer transfers") == 1


def flood(manager, settled, dropped: str, refusing: str) -> None:
    """Five silent connections against a limit of 3: serve until ``settled()``; the log must
    say the 3 taken were ``dropped`` and, once, that it was ``refusing`` the others."""
    socks = [connect(manager) for _ in range(5)]
    serve_until(manager, settled)
    log = debug_log(manager)
    assert log.count(dropped) == 3
    assert log.count(refusing) == 1
    for sock in socks:
        sock.close()


def test_silent_and_half_finished_handshakes_are_dropped_and_bounded(manager, monkeypatch):
    monkeypatch.setattr(admission, "HANDSHAKE_TIMEOUT", 0.5)
    monkeypatch.setattr(admission, "MAX_PENDING", 3)
    manager.set_password(PASSWORD)
    admitting = manager._engine.admission
    flood(manager, lambda: admitting.refused >= 2 and not admitting.pending,
          dropped="did not authenticate within", refusing="still authenticating")

    def right():
        sock = connect(manager)
        return spec_exchange(sock, PASSWORD)

    assert drive(manager, [right]) == [b"ok\n"]  # it still serves


def test_the_catalog_record_says_ssl(tls_manager):
    record = json.loads(tls_manager._status_bytes("manager"))[0]
    assert record["ssl"] is True


def test_plain_connections_that_never_say_hello_are_bounded_and_dropped(manager, monkeypatch):
    from ndcctools.taskvine.core import engine as engine_module

    monkeypatch.setattr(engine_module, "HELLO_TIMEOUT", 0.5)
    monkeypatch.setattr(engine_module, "MAX_UNIDENTIFIED", 3)
    engine = manager._engine
    flood(manager, lambda: engine._refusing and not engine.unidentified,
          dropped="said no hello in", refusing="have not said hello yet")

    def worker():
        sock = connect(manager)
        return hello(sock, "worker-late", transfer_auth=True)

    said, = drive(manager, [worker])
    assert said.startswith(b"transfer-secret ")  # it still serves
    assert manager.stats.workers_joined == 1


def test_the_transfer_secret_is_not_written_in_the_debug_log(manager):
    def ours():
        sock = connect(manager)
        said = hello(sock, "worker-log", transfer_auth=True)
        sock.close()
        return said

    said, = drive(manager, [ours])
    secret = said.split()[1].decode()
    log = debug_log(manager)
    assert "transfer-secret (hidden)" in log and secret not in log


# ------------------------------------------------------------------ with real workers
def _run_pipeline(m, tmp_path, n=4):
    """Tasks whose inputs are a 3 MB file and temps made on one worker and read on another;
    returns the outputs."""
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (3 * 4096))
    data = m.declare_file(str(big))
    temps = []
    for i in range(n):
        temp = m.declare_temp()
        t = vine.Task(f"cat data > t; echo part {i} >> t")
        t.add_input(data, "data")
        t.add_output(temp, "t")
        t.set_cores(1)
        m.submit(t)
        temps.append(temp)
    while not m.empty():
        t = m.wait(5)
        if t is not None:
            assert t.successful(), (t.result, t.std_output)
    out = m.declare_buffer()
    merge = vine.Task("cat t* | md5sum > out")
    for i, temp in enumerate(temps):
        merge.add_input(temp, f"t{i}")
    merge.add_output(out, "out")
    merge.set_cores(2)
    m.submit(merge)
    t = m.wait(60)
    assert t is not None and t.successful(), (t and t.result, t and t.std_output)
    expected = b"".join(big.read_bytes() + f"part {i}\n".encode() for i in range(n))
    return out.contents(), hashlib.md5(expected).hexdigest()


def test_tls_and_password_with_real_workers_move_files_and_temps(workers, tmp_path):
    pw = tmp_path / "pw"
    pw.write_bytes(PASSWORD)
    with vine.Manager(port=0, run_info_path=str(tmp_path / "run"), ssl=True) as m:
        assert m.set_password_file(str(pw))
        extra = ("--ssl", "--password", str(pw))
        workers.start(m, cores=2, extra=extra)
        workers.start(m, cores=2, extra=extra)
        got, expected = _run_pipeline(m, tmp_path)
        assert got.split()[0].decode() == expected
        assert m.stats.workers_joined == 2


def test_a_stranger_reads_nothing_from_a_worker_cache_without_the_secret(manager, workers,
                                                                         tmp_path):
    m = manager
    workers.start(m, cores=2)
    workers.start(m, cores=2)
    got, expected = _run_pipeline(m, tmp_path, n=2)  # peers authenticated with the secret
    assert got.split()[0].decode() == expected
    holders = [w for w in m._engine.workers.values() if w.peer_auth and w.cache]
    assert holders, "no worker of ours received the transfer secret"
    w = holders[0]
    name = next(n for n in w.cache if n.startswith("file-") or n.startswith("temp-"))
    received = transfer_request(w.transfer_port, b"get " + name.encode() + b"\n")
    assert received.startswith(b"auth password sha1\n")
    assert b"file " not in received and len(received) < 200  # no item, no content


def test_a_wrong_password_worker_is_refused_and_the_right_one_works(workers, tmp_path):
    (tmp_path / "pw").write_bytes(PASSWORD)
    (tmp_path / "bad").write_bytes(b"not it\n")
    with vine.Manager(port=0, run_info_path=str(tmp_path / "run")) as m:
        m.set_password(PASSWORD)
        bad = workers.start(m, cores=1, extra=("--password", str(tmp_path / "bad")))
        good = workers.start(m, cores=1, extra=("--password", str(tmp_path / "pw")))
        t = vine.Task("echo fine")
        m.submit(t)
        done = m.wait(30)
        assert done is not None and done.successful() and done.std_output == "fine\n"
        serve_until(m, lambda: "presented the wrong password" in debug_log(m), 20)
        assert m.stats.workers_joined == 1
        assert bad.poll() is None and good.poll() is None  # the refused one keeps trying


def test_a_factory_follows_its_managers_tls_and_password(tmp_path):
    with vine.Manager(port=0, run_info_path=str(tmp_path / "run"), ssl=True) as m:
        m.set_password(PASSWORD)
        with vine.Factory("local", manager=m) as f:
            f.min_workers = f.max_workers = 1
            f.cores = 1
            t = vine.Task("echo from a factory worker")
            m.submit(t)
            done = m.wait(60)
            assert done is not None and done.successful(), done and done.result
            assert done.std_output == "from a factory worker\n"
