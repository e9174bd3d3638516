"""Regression tests of the hardening issue: what real programs, broken inputs and hostile
peers did to the manager, one test (or more) per item found. Each one failed before its fix.
"""

import gc
import os
import resource
import socket
import tarfile
import time
import warnings

import psutil
import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine.core.engine import FORSAKEN_STREAK_MAX, forsaken_delay
from tests.conftest import wait_connected, wait_tasks, wait_until
from tests.fakes import HELLO, FakeWorker


def debug_log(m) -> str:
    m._debug.flush()
    with open(os.path.join(m.logging_directory, "debug"), errors="replace") as f:
        return f.read()


def add(m, workers, n=1, **kw):
    for _ in range(n):
        workers.start(m, **kw)
    wait_connected(m, m.stats.workers_able + n)


# ---------------------------------------------------------------- 1. missing recipe sources

@pytest.mark.parametrize("declare", ["untar", "poncho"])
def test_a_mini_task_whose_source_is_missing_ends_its_task(manager, workers, tmp_path, declare):
    m = manager
    add(m, workers)
    missing = str(tmp_path / "gone.tar.gz")
    if declare == "untar":
        env = m.declare_untar(m.declare_file(missing, cache=True))
    else:
        env = m.declare_poncho(missing)
    t = vine.Task("ls env")
    t.add_input(env, "env")
    m.submit(t)
    (done,) = wait_tasks(m, 1, timeout=20)
    assert done.result == "input missing"
    assert missing in done.std_output
    ok = vine.Task("echo alive")  # the worker is still there and serving
    m.submit(ok)
    (after,) = wait_tasks(m, 1, timeout=20)
    assert after.successful() and after.std_output == "alive\n"
    assert m.stats.workers_connected == 1


# ---------------------------------------------------------------- 2. poncho_env="" and add_env

def test_library_environment_only_with_a_poncho_env_and_add_env(manager, tmp_path):
    m = manager
    env = tmp_path / "env.tar.gz"
    with tarfile.open(env, "w:gz"):
        pass
    assert m.create_library_from_functions("a", len, poncho_env="", add_env=False)._contexts \
        == []
    assert m.create_library_from_functions("b", len, poncho_env=str(env),
                                           add_env=False)._contexts == []  # the caller adds it
    assert len(m.create_library_from_functions("c", len, poncho_env=str(env))._contexts) == 1


def test_parsl_style_library_without_environment_serves_calls(manager, workers):
    m = manager
    add(m, workers)
    lib = m.create_library_from_functions("parsl-like", abs, poncho_env="", add_env=False)
    m.install_library(lib)
    m.submit(vine.FunctionCall("parsl-like", "abs", -7))
    (done,) = wait_tasks(m, 1, timeout=30)
    assert done.successful() and done.output == 7


# ---------------------------------------------------------------- 3. no hot retry loop

def test_forsaken_delays_grow_to_the_transient_error_interval():
    assert [forsaken_delay(n, 15) for n in range(1, 9)] == [0, 0.5, 1, 2, 4, 8, 15, 15]
    assert forsaken_delay(10_000, 15) == 15


def test_a_broken_archive_fails_its_task_after_a_few_tries(manager, workers, tmp_path):
    m = manager
    add(m, workers)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not an archive\n" * 100)
    t = vine.Task("ls out")
    t.add_input(m.declare_untar(m.declare_file(str(bad), cache=True)), "out")
    m.submit(t)
    (done,) = wait_tasks(m, 1, timeout=30)
    assert done.result == "input missing"
    assert "could not be built" in done.std_output and "3 times" in done.std_output
    assert debug_log(m).count(": mini_task ") == 3  # not thousands


def test_a_worker_that_forsakes_everything_is_dropped(manager):
    m = manager
    fake = FakeWorker(m.port)
    fake.send(HELLO)
    tasks = [vine.Task(f"echo {i}") for i in range(FORSAKEN_STREAK_MAX + 2)]
    for t in tasks:
        t.set_cores(1)
        m.submit(t)
    answered = 0
    while not fake.eof:
        assert answered < 3 * FORSAKEN_STREAK_MAX, "the worker is never dropped"
        body = fake.expect(m, b"end\n")  # the next task sent to us
        task_id = int(body.split(b"task ")[-1].split(b"\n")[0])
        fake.send(b"complete 40 0 0 0 1 2 0 %d\n" % task_id)
        answered += 1
        fake.pump(m, lambda: fake.eof or b"task " in fake.buf, timeout=30)
    assert answered == FORSAKEN_STREAK_MAX
    assert "forsook 10 tasks in a row" in debug_log(m)
    assert m.stats.workers_connected == 0 and not fake.returned  # the tasks wait for others


# ---------------------------------------------------------------- 4. fuzzed input never raises

@pytest.mark.parametrize("line", [
    b"info worker-end-time nan\n",              # ValueError
    b"info worker-end-time 1e400\n",            # OverflowError
    b"cache-update x 0 0 1e400 0 0 0 X\n",      # OverflowError
    b"info library-update 1e400 2\n",
    b"resources\ncores nan\nend\n",
])
def test_a_malformed_line_closes_that_connection_only(manager, workers, line):
    m = manager
    add(m, workers)
    fake = FakeWorker(m.port)
    fake.send(HELLO + line)
    fake.wait_closed(m)  # wait() was called all along: it raised nothing
    m.submit(vine.Task("echo fine"))
    (done,) = wait_tasks(m, 1)
    assert done.successful()
    assert "disconnecting" in debug_log(m)


def test_bytes_that_are_not_utf8_reach_the_logs_escaped(manager):
    m = manager
    fake = FakeWorker(m.port)
    fake.send(HELLO.replace(b"fakehost", b"h\xff\xfeost").replace(b"worker-fake", b"w\xed"))
    wait_connected(m, 1)  # UnicodeEncodeError escaped wait() here
    m.close()
    with open(os.path.join(m.logging_directory, "transactions"), "rb") as f:
        assert b"WORKER w\\udced CONNECTION" in f.read()
    assert "h\\udcff\\udcfeost" in debug_log(m)


# ---------------------------------------------------------------- 5. out of descriptors

def test_out_of_descriptors_the_manager_backs_off_and_keeps_serving(manager, workers):
    m = manager
    add(m, workers)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hogs = []

    def hog_all():
        try:
            while True:
                hogs.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass

    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        hog_all()
        for _ in range(8):  # room to start one more worker, then none at all
            os.close(hogs.pop())
        newcomer = workers.start(m)  # its connection cannot be accepted now
        hog_all()
        deadline = time.monotonic() + 20
        while not m._engine.listener.refused:  # wait() raises nothing while it knocks
            assert m.wait(0.1) is None and time.monotonic() < deadline
        t = vine.Task("echo served")
        m.submit(t)
        while m.wait(0.2) is None:  # the worker we have still serves
            assert time.monotonic() < deadline
        assert t.std_output == "served\n"
    finally:
        for fd in hogs:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wait_connected(m, 2)  # and once descriptors are back, the newcomer gets in
    assert newcomer.poll() is None
    log = debug_log(m)
    assert log.count("cannot accept connections") == 1  # logged once, not in a loop
    assert "accepting connections again" in log


# ---------------------------------------------------------------- 6. a bad hello blocks no host

def test_a_wrong_protocol_hello_closes_only_that_connection(manager, workers):
    m = manager
    fake = FakeWorker(m.port)
    host = socket.gethostname().split()[0]
    fake.send(b"taskvine 12 %s Linux x86_64 7.0.0\n" % host.encode())
    fake.wait_closed(m)
    assert m.stats.workers_blocked == 0
    add(m, workers)  # a real worker from the same host gets tasks
    m.submit(vine.Task("echo fine"))
    (done,) = wait_tasks(m, 1)
    assert done.successful()


# ---------------------------------------------------------------- 7. huge stdout

def test_stdout_over_the_limit_is_truncated_without_holding_it(manager, workers):
    m = manager
    add(m, workers)
    m.tune("max-task-stdout-storage", 1 << 20)
    gc.collect()
    before = psutil.Process().memory_info().rss
    t = vine.Task("head -c 200000000 /dev/zero")
    m.submit(t)
    (done,) = wait_tasks(m, 1, timeout=60)
    grew = psutil.Process().memory_info().rss - before
    assert done.result == "stdout missing" and done.exit_code == 0
    assert len(done.std_output) == 1 << 20
    assert grew < 60 << 20, f"the manager grew by {grew >> 20} MiB"


def test_stdout_under_the_limit_arrives_exactly(manager, workers):
    m = manager
    add(m, workers)
    t = vine.Task("seq 1 500000")
    m.submit(t)
    (done,) = wait_tasks(m, 1, timeout=60)
    assert done.successful()
    assert done.std_output == "".join(f"{i}\n" for i in range(1, 500001))


# ---------------------------------------------------------------- 10. status after tasks

@pytest.mark.parametrize("request_line", [b"task_status\n", b"GET / HTTP/1.1\r\n"])
def test_a_worker_that_turns_status_client_gives_its_tasks_back(manager, workers,
                                                                  request_line):
    m = manager
    fake = FakeWorker(m.port)
    fake.send(HELLO)
    t = vine.Task("echo rescued")
    m.submit(t)
    fake.expect(m, b"end\n")  # the task is ours now
    fake.send(request_line)
    fake.wait_closed(m)
    add(m, workers)
    (done,) = wait_tasks(m, 1)
    assert done is t and done.std_output == "rescued\n"
    assert m.empty()


# ---------------------------------------------------------------- 11. links in outputs

def test_links_in_a_directory_output_are_kept_as_links(manager, workers, tmp_path):
    m = manager
    add(m, workers)
    out = tmp_path / "out"
    t = vine.Task("mkdir out && echo hi > out/f && ln -s /etc/hostname out/abs && "
                  "ln -s ../elsewhere out/up")
    t.add_output(m.declare_file(str(out)), "out")
    t.set_retries(1)
    m.submit(t)
    (done,) = wait_tasks(m, 1)
    assert done.successful()
    assert (out / "f").read_text() == "hi\n"
    assert os.readlink(out / "abs") == "/etc/hostname"
    assert os.readlink(out / "up") == "../elsewhere"
    assert m.stats.workers_connected == 1


# ---------------------------------------------------------------- 12. disk trouble

def limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_a_worker_that_cannot_store_an_input_is_paused_not_looped(manager, workers, tmp_path):
    m = manager
    add(m, workers, preexec_fn=limit_file_size)  # its disk takes no file over 1 MiB
    big = tmp_path / "big"
    big.write_bytes(os.urandom(1 << 16) * 64)  # 4 MiB
    t = vine.Task("wc -c < big")
    t.add_input(m.declare_file(str(big)), "big")
    m.submit(t)
    wait_until(lambda: m.wait(0) or "could not store" in debug_log(m))
    add(m, workers)  # a worker with room
    (done,) = wait_tasks(m, 1, timeout=30)
    assert done.successful() and done.std_output.strip() == str(4 << 20)
    assert debug_log(m).count(": put file-") == 2  # once to each: no loop
    assert m.stats.workers_connected == 2  # the full worker stayed connected


def test_a_full_disk_under_the_logs_stops_nothing(tmp_path, workers):
    run = tmp_path / "run" / "fixed"
    (run / "vine-logs").mkdir(parents=True)
    for log in ("debug", "transactions", "taskgraph"):
        os.symlink("/dev/full", run / "vine-logs" / log)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with vine.Manager(port=0, run_info_path=str(tmp_path / "run"),
                          run_info_template="fixed") as m:
            workers.start(m)
            for i in range(20):
                m.submit(vine.Task(f"echo {i}"))
            done = wait_tasks(m, 20)
    assert sorted(t.std_output for t in done) == sorted(f"{i}\n" for i in range(20))
    full = [w for w in caught if "cannot write the log" in str(w.message)]
    assert len(full) == 3  # once per log


# ---------------------------------------------------------------- 14. unacknowledged puts

def test_a_worker_that_never_acknowledges_a_put_does_not_block_the_file(manager, workers,
                                                                        tmp_path):
    m = manager
    m.tune("min-transfer-timeout", 1)
    shared = tmp_path / "shared"
    shared.write_text("data\n")
    f = m.declare_file(str(shared), cache=True)
    fake = FakeWorker(m.port)
    fake.send(HELLO)
    tasks = [vine.Task("cat shared") for _ in range(2)]
    for t in tasks:
        t.set_cores(1)
        t.add_input(f, "shared")
        m.submit(t)
    fake.expect(m, b"put ")  # the fake takes the file and never says it has it
    workers.start(m)
    done = wait_tasks(m, 2, timeout=30)
    assert all(t.std_output == "data\n" for t in done)
    assert "did not acknowledge" in debug_log(m)
