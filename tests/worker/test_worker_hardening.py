"""The worker under abuse: a workspace left by a killed worker or deleted under a running
one, peers that hold transfer slots, a killed worker's tasks, a manager that talks garbage."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import cloudpickle
import psutil
import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine import protocol as p
from ndcctools.taskvine.items import UnsafeName
from ndcctools.taskvine.worker import main as worker_main
from ndcctools.taskvine.worker import reaper
from ndcctools.taskvine.worker import transfer_server as ts
from ndcctools.taskvine.worker.cache import LEVEL_FOREVER, Cache
from ndcctools.taskvine.worker.pyfork import ForkServer
from ndcctools.taskvine.worker.sandbox import Sandbox, SandboxPool
from tests.conftest import wait_connected, wait_tasks, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def start_worker(workers, manager, workspace, stderr_path, *extra):
    """A worker without a debug log (so what it says on stderr is what an operator sees);
    the ``workers`` fixture kills it at the end of the test."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ndcctools.taskvine.tools.vine_worker", "127.0.0.1",
         str(manager.port), "--cores", "2", "--memory", "1000", "--disk", "1000",
         "--workspace", str(workspace), "--timeout", "60", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(stderr_path, "wb"),
        start_new_session=True)
    proc.workspace = workspace
    workers.procs.append(proc)
    return proc


def gone(process: psutil.Process) -> bool:
    """Dead: no such process, or a zombie nobody collected yet."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def small_task(i, cores=1):
    t = vine.Task(f"echo out{i}")
    t.set_cores(cores)
    t.set_memory(10)
    t.set_disk(10)
    return t


# ---------------------------------------------------------------- 1. a killed worker's workspace
@pytest.mark.slow
def test_a_worker_restarted_on_a_killed_workers_workspace_runs_every_task(manager, workers,
                                                                          tmp_path):
    m = manager
    first = workers.start(m, cores=2)
    ws = first.workspace
    for t in [small_task(i) for i in range(20)]:
        m.submit(t)
    wait_tasks(m, 20)
    hold = vine.Task("sleep 300")
    hold.set_cores(1)
    m.submit(hold)
    # killed once its sandbox pool has spares ready: what made the next worker crash
    wait_until(lambda: m.wait(0) is None and any(ws.glob("task.*"))
               and any((ws / "trash").glob("spare.*")))
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    assert any((ws / "trash").glob("spare.*"))
    m.cancel_by_task_id(hold.id)
    wait_tasks(m, 1)
    # more leftovers, in the way of the sandboxes of the next tasks
    for name in [f"task.{hold.id + i}" for i in range(1, 41)] + ["mini.1", "libr.99"]:
        (ws / name / "sub").mkdir(parents=True)
        (ws / name / "sub" / "f").write_text("left over")
    (ws / "trash" / "spare.17").write_text("a file where a spare would go")
    second = workers.start(m, cores=2, extra=("--workspace", str(ws)))
    tasks = [small_task(i) for i in range(40)]
    for t in tasks:
        m.submit(t)
    done = []
    deadline = time.monotonic() + 60
    while len(done) < len(tasks) and time.monotonic() < deadline:
        assert second.poll() is None, "the worker on the old workspace died"
        if (t := m.wait(1)) is not None:
            done.append(t)
    assert sorted(t.id for t in done) == sorted(t.id for t in tasks)
    assert [t.result for t in done if not t.successful()] == []
    assert all(t.std_output == f"out{tasks.index(t)}\n" for t in tasks)
    assert second.poll() is None
    assert not (ws / "mini.1").exists() and not (ws / "libr.99").exists()


def test_the_sandbox_pool_clears_whatever_is_in_its_way(tmp_path):
    ws = tmp_path / "ws"
    (ws / "trash" / "spare.1" / "x").mkdir(parents=True)  # an earlier worker's spare
    pool = SandboxPool(str(ws))
    assert os.listdir(ws / "trash") == []
    boxes = [Sandbox(str(ws), f"task.{i}", pool) for i in range(3)]
    (ws / "trash" / "spare.1" / "y").mkdir(parents=True)  # in the way of the next spares
    (ws / "trash" / "spare.2").write_text("in the way too")
    for box in boxes:
        box.remove()  # never raises: a spare that cannot go to the trash is deleted
    assert not any(ws.glob("task.*"))
    (ws / "task.7" / "old" / "deep").mkdir(parents=True)  # a sandbox left behind
    (ws / "task.8").write_text("a file where a sandbox goes")
    for name in ("task.7", "task.8", "task.9"):
        box = Sandbox(str(ws), name, pool)
        assert sorted(os.listdir(box.path)) == [".taskvine.tmp"]


# ---------------------------------------------------------------- 2. a workspace deleted under it
@pytest.mark.slow
def test_a_worker_whose_workspace_is_deleted_leaves_and_its_tasks_run_elsewhere(
        manager, workers, tmp_path):
    m = manager
    doomed = start_worker(workers, m, tmp_path / "doomed", tmp_path / "doomed.stderr")
    wait_connected(m, 1)
    data = m.declare_buffer("payload\n")
    tasks = []
    for i in range(60):
        t = vine.Task(f"cat in.txt; echo {i}; sleep 0.05")
        t.add_input(data, "in.txt")
        t.set_cores(1)
        tasks.append(t)
        m.submit(t)
    done = wait_tasks(m, 4)
    first_addr = done[0].addrport
    while doomed.workspace.exists():  # the worker may be creating entries while we delete
        shutil.rmtree(doomed.workspace, ignore_errors=True)
    deleted = time.monotonic()
    workers.start(m, cores=2)
    deadline = deleted + 60
    exited = None
    while len(done) < len(tasks) and time.monotonic() < deadline:
        t = m.wait(1)
        if t is not None:
            done.append(t)
        if exited is None and doomed.poll() is not None:
            exited = time.monotonic()
    assert exited is not None and exited - deleted < 10
    assert doomed.returncode != 0
    assert "workspace" in (tmp_path / "doomed.stderr").read_text()
    assert sorted(t.id for t in done) == sorted(t.id for t in tasks)
    assert [t.result for t in done if t.result != "success"] == []
    assert any(t.addrport != first_addr for t in done)  # the healthy worker ran the rest
    assert all(t.std_output.startswith("payload\n") for t in done if t.addrport != first_addr)


# ---------------------------------------------------------------- 3. the peer transfer server
@pytest.fixture
def server(tmp_path, monkeypatch):
    """A transfer server in this process with 4 slots, a cache on tmp_path, and its log."""
    monkeypatch.setattr(ts, "MAX_CLIENTS", 4)
    lines = []
    cache = Cache(str(tmp_path / "ws"))
    srv = ts.TransferServer(cache, None, lines.append)
    srv.lines = lines
    srv.cache = cache
    yield srv
    srv.close()


def test_metadata_is_never_written_through_a_planted_link(tmp_path):
    """A hostile manager once put a ``forever`` object named ``x.meta`` that was a link to a
    file outside the workspace, then an object ``x``: writing x's metadata followed the link
    (as root, over /etc/passwd). Names ending in ``.meta`` are refused, and metadata is
    written through a new file renamed into place."""
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    cache = Cache(str(tmp_path / "ws"))
    with pytest.raises(UnsafeName, match="metadata"):
        cache.path("x.meta")
    os.symlink(outside, os.path.join(cache.dir, "x.meta"))  # left by an earlier run, say
    staged = cache.staging_path("x")
    with open(staged, "wb") as f:
        f.write(b"data")
    cache.add("x", staged, LEVEL_FOREVER, 0, 0)
    assert outside.read_text() == "precious\n"
    meta = os.path.join(cache.dir, "x.meta")
    assert not os.path.islink(meta) and "cache_level 3" in open(meta).read()


def put_object(cache, name, data):
    staged = cache.staging_path(name)
    with open(staged, "wb") as f:
        f.write(data)
    cache.add(name, staged, 1, 0, 0)


def fetch(port, name, timeout=5.0):
    """The item stream of ``get name``; b"" if the server refused the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"get {name}\n".encode())
        reply = b""
        try:
            while chunk := s.recv(1 << 16):
                reply += chunk
        except ConnectionResetError:
            pass
        return reply


def test_tricklers_cannot_hold_every_transfer_slot(server, monkeypatch):
    monkeypatch.setattr(ts, "REQUEST_TIMEOUT", 2.0)
    put_object(server.cache, "obj", b"hello peer")
    stop = threading.Event()
    tricklers = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]

    def trickle(s):  # a byte every 0.3 s: never a whole line, never 2 s without a byte
        try:
            while not stop.wait(0.3):
                s.sendall(b"g")
        except OSError:
            pass
    threads = [threading.Thread(target=trickle, args=(s,), daemon=True) for s in tricklers]
    for t in threads:
        t.start()
    try:
        start = time.monotonic()
        reply = b""
        while not reply and time.monotonic() - start < 8:
            reply = fetch(server.port, "obj")  # refused (b"") while the slots are held
        served = time.monotonic() - start
        assert any("refusing" in line for line in server.lines)  # the slots were all taken
        assert reply, "never served: the tricklers kept every slot"
        d = p.Decoder("transfer")
        d.feed(reply)
        assert isinstance(d.next_event(), p.FileItem)
        assert d.next_event() == p.Data(b"hello peer")
        assert served < 6
    finally:
        stop.set()
        for s in tricklers:
            s.close()


def test_a_slow_reader_cannot_hold_a_slot_past_the_send_deadline(server, monkeypatch):
    monkeypatch.setattr(ts, "SEND_BASE", 1.0)
    monkeypatch.setattr(ts, "SEND_MIN_RATE", float(1 << 30))  # ~1 s for this object
    size = 32 << 20
    put_object(server.cache, "big", os.urandom(1 << 20) * 32)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    s.connect(("127.0.0.1", server.port))
    s.settimeout(10)
    received = 0
    try:
        s.sendall(b"get big\n")
        start = time.monotonic()
        # 64 KiB every 0.1 s: steady progress, but the whole object would take ~50 s
        while not any("not sent within" in line for line in server.lines):
            assert time.monotonic() - start < 6, "the server still sends to a slow reader"
            received += len(s.recv(1 << 16))
            time.sleep(0.1)  # the reader's pace, not synchronisation
        s.settimeout(5)
        try:
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < size  # cut off, not completed
    finally:
        s.close()
    assert fetch(server.port, "missing").startswith(b"error missing 2")  # the slot came back


# ---------------------------------------------------------------- 4. tasks die with their worker
def nap(tag):
    import subprocess
    import time
    subprocess.Popen(["sleep", tag])
    time.sleep(300)


@pytest.mark.slow
def test_tasks_of_a_killed_worker_die_with_it(manager, workers, tmp_path):
    m = manager
    proc = workers.start(m, cores=4)
    lib = m.create_library_from_functions("sleepers", nap, add_env=False)
    lib.set_cores(1)
    m.install_library(lib)
    shell = vine.Task("sleep 300 & sleep 299; wait")
    python = vine.PythonTask(nap, "301")
    call = vine.FunctionCall("sleepers", "nap", "302")
    for t in (shell, python, call):
        t.set_cores(1)
        m.submit(t)

    def descendants():
        try:
            return psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def running(words):
        names = set()
        for child in descendants():
            try:
                names.add(" ".join(child.cmdline()))
            except psutil.Error:
                pass
        return all(w in names for w in words)
    wanted = ["sleep 300", "sleep 299", "sleep 301", "sleep 302"]
    wait_until(lambda: m.wait(0) is None and running(wanted), timeout=60)
    doomed = descendants()
    assert len(doomed) >= 8  # sh, 2 sleeps, fork server, its child, sleep, library, its child...
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: all(gone(c) for c in doomed), timeout=10)
        assert "reaper: the worker is gone" in (tmp_path / "worker0.stderr").read_text()
    finally:
        for child in doomed:
            try:
                child.kill()
            except psutil.Error:
                pass


def test_the_reaper_kills_what_is_registered_or_in_a_sandbox_and_nothing_else(tmp_path):
    ws = tmp_path / "ws"
    (ws / "task.3").mkdir(parents=True)
    (ws / "cache").mkdir()

    def sleeper(seconds, cwd):
        return subprocess.Popen(["sleep", seconds], cwd=cwd, start_new_session=True)
    the_reaper = reaper.Reaper(str(ws))
    registered = sleeper("304", tmp_path)
    the_reaper.watch(registered.pid)
    unregistered = sleeper("305", ws / "task.3")  # as if the worker died before its write
    forgotten = sleeper("306", tmp_path)
    the_reaper.watch(forgotten.pid)
    the_reaper.forget(forgotten.pid)
    bystander = sleeper("307", ws / "cache")  # nothing of the worker's
    try:
        the_reaper.close()  # end of file, as when the worker dies
        assert the_reaper.proc.returncode == 0
        for proc in (registered, unregistered):
            assert proc.wait(5) == -signal.SIGKILL
        assert forgotten.poll() is None and bystander.poll() is None
    finally:
        for proc in (registered, unregistered, forgotten, bystander):
            proc.kill()
            proc.wait()


def test_a_worker_that_exits_normally_leaves_its_reaper_nothing_to_kill(manager, workers,
                                                                        tmp_path):
    """Every group the worker registers is forgotten once collected: at a normal exit the
    reaper kills nothing (else it could kill a group id reused by then)."""
    m = manager
    proc = workers.start(m, cores=2)
    lib = m.create_library_from_functions("quick", len, add_env=False)
    lib.set_cores(1)
    m.install_library(lib)
    tasks = [small_task(i) for i in range(5)] + [vine.PythonTask(len, "ab") for _ in range(5)]
    tasks += [vine.FunctionCall("quick", "len", "abc") for _ in range(3)]
    for t in tasks:
        t.set_cores(1)
        m.submit(t)
    assert all(t.successful() for t in wait_tasks(m, len(tasks)))
    doomed = vine.Task("sleep 300")
    m.submit(doomed)
    wait_until(lambda: m.wait(0) is None and any(proc.workspace.glob(f"task.{doomed.id}")))
    m.cancel_by_task_id(doomed.id)
    wait_tasks(m, 1)
    m.workers_shutdown()
    wait_until(lambda: m.wait(0) is None and proc.poll() is not None)
    assert proc.returncode == 0
    assert "reaper" not in (tmp_path / "worker0.stderr").read_text()


def test_a_fork_server_kills_its_children_when_the_worker_goes(tmp_path):
    (tmp_path / "s.py").write_text(
        "import subprocess, time\nsubprocess.Popen(['sleep', '303'])\ntime.sleep(300)\n")
    server = ForkServer(sys.executable)
    pid = None
    try:
        assert server.start(1, ["s.py"], str(tmp_path), dict(os.environ), str(tmp_path / "out"))

        def started():
            nonlocal pid
            pid = next((e["pid"] for e in server.events() if "pid" in e), pid)
            return pid is not None and any(
                c.cmdline() == ["sleep", "303"] for c in psutil.Process(pid).children())
        wait_until(started)
        child = psutil.Process(pid)
        grandchild = child.children()[0]
        server.sock.close()  # as if the worker died: the server sees end of file
        assert server.proc.wait(10) == 0
        wait_until(lambda: gone(child) and gone(grandchild), timeout=5)
    finally:
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        server.close()


# ---------------------------------------------------------------- 8. garbage from a manager
@pytest.mark.slow
def test_a_manager_talking_garbage_never_kills_the_worker_and_backoff_grows(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(20)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ndcctools.taskvine.tools.vine_worker", "127.0.0.1",
         str(srv.getsockname()[1]), "--cores", "1", "--memory", "100", "--disk", "100",
         "--workspace", str(tmp_path / "ws"), "--timeout", "60", "-d", "all",
         "-o", str(tmp_path / "worker.log")],
        stdin=subprocess.DEVNULL, stderr=open(tmp_path / "worker.stderr", "wb"))
    try:
        gaps = []
        conn, _ = srv.accept()
        for _ in range(2):
            conn.settimeout(20)
            hello = b""
            while b"\nresources" not in hello:  # hello ends with the resources block
                hello += conn.recv(65536)
            conn.sendall(b"\xffgarbage that is no message\n")
            sent = time.monotonic()
            conn.close()
            conn, _ = srv.accept()
            gaps.append(time.monotonic() - sent)
            assert proc.poll() is None
        conn.close()
        assert gaps[1] > gaps[0] + 0.5  # 1 s, then 2 s: failing sessions back off more
    finally:
        proc.kill()
        proc.wait(10)
        srv.close()


def test_serve_survives_a_session_that_raises_and_backs_off(tmp_path, monkeypatch):
    """``serve`` in this process: sessions that raise are logged and retried, each after a
    longer wait; a real listening socket stands for the manager."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    outcomes = [RuntimeError("boom"), RuntimeError("boom again"), "lost", "exit"]

    class FakeSession:
        def __init__(self, sock, *rest):
            self.sock = sock

        def run(self):
            self.sock.close()
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
    slept, errors = [], []
    monkeypatch.setattr(worker_main, "Session", FakeSession)
    monkeypatch.setattr(worker_main.time, "sleep", slept.append)

    class Log:
        def __call__(self, text):
            pass

        def error(self, text):
            errors.append(text)
    args = types.SimpleNamespace(managers=[srv.getsockname()], manager_name=None, timeout=60,
                                 max_backoff=8, single_shot=False, ssl=False, tls_sni=None,
                                 password_bytes=None)
    config = types.SimpleNamespace(guard=None)
    try:
        status = worker_main.serve(args, config, None, None, None, Log())
    finally:
        srv.close()
    assert status == 0 and outcomes == []
    assert slept == [1.0, 2.0, 4.0]
    assert "boom again" in errors[0] + errors[1] and "Traceback" in errors[0]


def test_a_worker_whose_parent_goes_while_it_looks_for_a_manager_exits(tmp_path):
    """``--parent-death`` also holds while no manager answers (the quickstart's workers use it,
    so a killed example leaves none behind)."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys\n"
         "w = subprocess.Popen([sys.executable, '-m', 'ndcctools.taskvine.tools.vine_worker',"
         f" '--parent-death', '--timeout', '300', '--workspace', {str(tmp_path / 'ws')!r},"
         f" '127.0.0.1', '{port}'])\n"
         "print(w.pid, flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    worker = psutil.Process(int(parent.stdout.readline()))
    wait_until(lambda: (tmp_path / "ws").is_dir())  # it is up and looking for a manager
    parent.stdin.close()
    parent.wait(10)
    wait_until(lambda: gone(worker), timeout=15)
