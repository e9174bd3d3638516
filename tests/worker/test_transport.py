"""The splicer's receiving paths: splice, and O_DIRECT through aligned buffers (large files)."""

from __future__ import annotations

import errno
import fcntl
import os
import selectors
import socket
import threading
from collections.abc import Callable

import pytest

from ndcctools.taskvine import transport
from ndcctools.taskvine.transport import Splicer, set_io_timeout


@pytest.fixture
def small_direct(monkeypatch):
    """Direct writes from 100 kB on, in 64 KiB buffers; counts the files written that way."""
    monkeypatch.setattr(transport, "DIRECT_MIN", 100_000)
    monkeypatch.setattr(transport, "DIRECT_CHUNK", 64 << 10)
    started = []
    real_start = transport._DirectFile._start

    def start(self):
        started.append(self.fd)
        real_start(self)

    monkeypatch.setattr(transport._DirectFile, "_start", start)
    return started


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    return a, b


def send_in_thread(sock: socket.socket, data: bytes, piece: int) -> threading.Thread:
    def run():
        view = memoryview(data)
        for i in range(0, len(view), piece):
            sock.sendall(view[i:i + piece])
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def receive(splicer: Splicer, sock: socket.socket, fd: int, size: int) -> None:
    """Like the worker: blocking sockets move until done; non-blocking ones wait in a
    selector when dry."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    left = size
    while left:
        try:
            n = splicer.move(sock, fd, left)
        except BlockingIOError:
            assert sel.select(10), "no data for 10 s"
            continue
        assert n > 0, "peer closed early"
        left -= n
    sel.close()


def splice_into(fd: int, data: bytes, piece: int, blocking: bool = True,
                while_open: Callable[[], None] = lambda: None) -> None:
    """Send ``data`` over TCP in pieces of ``piece`` bytes and receive it into ``fd`` through
    a Splicer; ``while_open`` runs after the transfer, before ``fd`` is closed."""
    a, b = tcp_pair()
    if blocking:
        set_io_timeout(b, 30)
    else:
        b.setblocking(False)
    sender = send_in_thread(a, data, piece)
    splicer = Splicer()
    try:
        receive(splicer, b, fd, len(data))
        while_open()
    finally:
        sender.join()
        splicer.close()
        os.close(fd)
        a.close()
        b.close()


def transfer(path, data: bytes, piece: int) -> int:
    """``data`` received into a new file at ``path`` with a blocking socket; returns the
    file's fd number (closed by then)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    splice_into(fd, data, piece)
    return fd


@pytest.mark.parametrize("blocking", [True, False])
def test_direct_receive_unaligned_start_and_end(tmp_path, small_direct, blocking):
    data = os.urandom(1_000_003)
    head = 1234  # bytes the caller wrote itself (a decoder's buffered payload)
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
    os.write(fd, data[:head])

    def offset_and_flags_unchanged() -> None:
        assert os.lseek(fd, 0, os.SEEK_CUR) == len(data)
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT

    splice_into(fd, data[head:], 50_000, blocking, offset_and_flags_unchanged)
    assert small_direct == [fd]
    assert path.read_bytes() == data


def test_small_files_are_spliced(tmp_path, small_direct):
    data = os.urandom(99_999)
    transfer(tmp_path / "out", data, len(data))
    assert small_direct == []
    assert (tmp_path / "out").read_bytes() == data


class _NoDirect:
    """``fcntl`` as on a file system that refuses ``O_DIRECT``."""

    F_GETFL = fcntl.F_GETFL
    F_SETFL = fcntl.F_SETFL

    @staticmethod
    def fcntl(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return fcntl.fcntl(fd, cmd, arg)


def test_file_system_without_o_direct_is_spliced(tmp_path, small_direct, monkeypatch):
    monkeypatch.setattr(transport, "fcntl", _NoDirect)
    data = os.urandom(300_000)
    transfer(tmp_path / "out", data, 10_000)
    assert small_direct == []
    assert (tmp_path / "out").read_bytes() == data


def test_misaligned_direct_writes_fall_back_to_the_page_cache(tmp_path, small_direct,
                                                             monkeypatch):
    monkeypatch.setattr(transport, "DIRECT_ALIGN", 1000)  # no device takes that
    monkeypatch.setattr(transport, "DIRECT_CHUNK", 64_000)
    data = os.urandom(500_123)
    fd = transfer(tmp_path / "out", data, 30_000)
    assert small_direct == [fd]
    assert (tmp_path / "out").read_bytes() == data


def test_giving_up_mid_file_ends_the_writers(tmp_path, small_direct):
    a, b = tcp_pair()
    b.setblocking(False)
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    a.sendall(os.urandom(200_000))
    threads = threading.active_count()
    splicer = Splicer()
    sel = selectors.DefaultSelector()
    sel.register(b, selectors.EVENT_READ)
    got = 0
    while got < 200_000:
        try:
            got += splicer.move(b, fd, 1_000_000 - got)
        except BlockingIOError:
            assert sel.select(10)
    sel.close()
    assert threading.active_count() == threads + transport.DIRECT_WRITERS
    os.close(fd)  # the caller gives up: the writers finish on their own descriptor
    splicer.close()
    a.close()
    b.close()
    assert threading.active_count() == threads
    assert (tmp_path / "out").stat().st_size == 200_000


def test_blocking_socket_times_out(tmp_path, small_direct):
    a, b = tcp_pair()
    set_io_timeout(b, 0.2)
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    splicer = Splicer()
    try:
        with pytest.raises(TimeoutError):
            splicer.move(b, fd, 1_000_000)
    finally:
        splicer.close()
        os.close(fd)
        a.close()
        b.close()
