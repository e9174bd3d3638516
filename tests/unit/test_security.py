"""Pure logic of security.py and of who authenticates to whom (no sockets but socket pairs)."""

from __future__ import annotations

import hashlib
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndcctools.taskvine import security
from ndcctools.taskvine.core.delivery import peer_url
from ndcctools.taskvine.core.workers import WorkerRecord


def _pair(password_a: bytes, password_b: bytes) -> tuple[object, object]:
    a, b = socket.socketpair()
    out: dict[str, object] = {}

    def side(name, sock, password):
        try:
            security.exchange_blocking(sock, password, 5)
            out[name] = "ok"
        except security.AuthError as e:
            out[name] = str(e)

    t = threading.Thread(target=side, args=("a", a, password_a))
    t.start()
    side("b", b, password_b)
    t.join()
    a.close()
    b.close()
    return out["a"], out["b"]


def test_the_same_password_passes_both_ways_and_a_different_one_fails_both():
    assert _pair(b"pw\n", b"pw\n") == ("ok", "ok")
    a, b = _pair(b"pw\n", b"pw")
    assert "wrong password" in a and "wrong password" in b


def test_the_response_is_sha1_of_password_space_challenge():
    ex = security.PasswordExchange(b"secret\n", challenge=b"c" * 63)
    assert ex.opening() == b"auth password sha1\n" + b"c" * 63 + b"\n"
    assert ex.receive(b"auth password sha1") == b""
    theirs = b"x" * 63
    assert ex.receive(theirs) == hashlib.sha1(b"secret\n " + theirs).hexdigest().encode() + b"\n"
    good = hashlib.sha1(b"secret\n " + b"c" * 63).hexdigest().encode()
    assert ex.receive(good) == b"ok\n"
    assert ex.receive(b"ok") == b"" and ex.done and ex.ok


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), min_size=4, max_size=4))
def test_any_four_lines_end_the_exchange_without_success_or_a_crash(lines):
    ex = security.PasswordExchange(b"pw")
    lines[0] = lines[0] if lines[0][:1] == b"x" else b"auth password sha1"  # both branches
    for line in lines:
        ex.receive(line)
        if ex.done:
            break
    assert ex.done and not ex.ok and ex.error
    with pytest.raises(security.AuthError):
        ex.receive(b"more")


def _worker(addr: str, port: int, peer_auth: bool) -> WorkerRecord:
    w = WorkerRecord(None, f"{addr}:40000", 0.0)
    w.transfer_port, w.peer_auth = port, peer_auth
    return w


def test_only_sources_that_cannot_authenticate_are_marked_for_our_workers():
    ours_a, ours_b = _worker("10.0.0.1", 9001, True), _worker("10.0.0.2", 9002, True)
    upstream = _worker("10.0.0.3", 9003, False)
    assert peer_url(ours_a, ours_b, "file-x") == "workerip://10.0.0.1:9001/file-x"
    assert peer_url(upstream, ours_b, "file-x") == "workerip+noauth://10.0.0.3:9003/file-x"
    # an upstream destination is never told anything but upstream's own scheme
    assert peer_url(ours_a, upstream, "file-x") == "workerip://10.0.0.1:9001/file-x"


def test_password_files_keep_their_bytes(tmp_path):
    path = tmp_path / "pw"
    path.write_bytes(b"abc\n")
    assert security.read_password_file(str(path)) == b"abc\n"
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        security.read_password_file(str(tmp_path / "empty"))
