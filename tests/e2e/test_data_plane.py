"""Data plane end to end: temp files between workers, peer copies, recovery, URLs, forever."""

import functools
import http.server
import os
import signal
import socket
import threading

import pytest

import ndcctools.taskvine as vine
from tests.conftest import tree_tarball, wait_connected, wait_tasks, wait_until


def transactions(m):
    m.wait(0)  # the manager flushes its logs before it idles
    with open(os.path.join(m.logging_directory, "transactions")) as f:
        return [line.split() for line in f if not line.startswith("#")]


def manager_sent(m, cachename):
    """Bytes of ``cachename`` the manager itself sent to workers (TRANSFER INPUT records)."""
    return [r for r in transactions(m) if r[2:3] == ["WORKER"] and r[4:7] == [
        "TRANSFER", "INPUT", cachename]]


def cache_updates(m, cachename):
    return {r[3] for r in transactions(m) if r[4:6] == ["CACHE_UPDATE", cachename]}


def pinned(cmd, feature):
    t = vine.Task(cmd)
    t.set_cores(1)
    t.add_feature(feature)
    return t


def start_featured(workers, m, names, **kw):
    procs = {name: workers.start(m, extra=("--feature", name), **kw) for name in names}
    wait_connected(m, len(names))
    return procs


def test_temp_chain_moves_between_workers_without_the_manager(manager, workers):
    m = manager
    start_featured(workers, m, ["A", "B", "C"])
    t1, t2 = m.declare_temp(), m.declare_temp()
    a = pinned("seq 1 1000 > out", "A")
    a.add_output(t1, "out")
    b = pinned("awk '{s+=$1} END {print s}' in > out", "B")
    b.add_input(t1, "in")
    b.add_output(t2, "out")
    out = m.declare_buffer()
    c = pinned("cat in; cat in > final", "C")
    c.add_input(t2, "in")
    c.add_output(out, "final")
    for t in (a, b, c):
        m.submit(t)
    done = {t.id: t for t in wait_tasks(m, 3)}
    assert all(t.successful() for t in done.values()), [t.result for t in done.values()]
    assert out.contents() == b"500500\n"
    for temp in (t1, t2):
        assert manager_sent(m, temp.cachename) == []
        assert len(cache_updates(m, temp.cachename)) == 2  # producer, then the peer copy
    assert m.fetch_file(t2) == "500500\n"
    assert m.get_file_replica_count(t1) == 2


def test_cached_file_is_sent_once_then_copied_between_workers(manager, workers, tmp_path):
    m = manager
    data = tmp_path / "data.txt"
    data.write_bytes(b"x" * 100_000)
    start_featured(workers, m, ["A", "B", "C"], cores=1)
    f = m.declare_file(str(data), cache=True)
    for i in range(20):
        t = pinned("wc -c < data", "ABC"[i % 3])
        t.add_input(f, "data")
        m.submit(t)
    done = wait_tasks(m, 20)
    assert all(t.successful() and t.std_output.strip() == "100000" for t in done)
    assert len(manager_sent(m, f.cachename)) == 1
    assert len(cache_updates(m, f.cachename)) == 3


def test_losing_the_only_replica_of_a_temp_recovers_it(manager, workers):
    m = manager
    procs = start_featured(workers, m, ["A", "B"])
    temp = m.declare_temp()
    a = vine.Task("echo recovered > out")
    a.set_cores(1)
    a.add_output(temp, "out")
    m.submit(a)
    (first,) = wait_tasks(m, 1)
    assert first.successful()
    holder_proc = next(p for p in procs.values() if _holds(p, temp.cachename))
    os.killpg(holder_proc.pid, signal.SIGKILL)
    holder_proc.wait(10)
    survivor = "B" if holder_proc is procs["A"] else "A"
    b = pinned("cat in", survivor)
    b.add_input(temp, "in")
    m.submit(b)
    (second,) = wait_tasks(m, 1, timeout=60)
    assert second.successful() and second.std_output == "recovered\n"
    assert second.id == b.id
    assert m.stats.tasks_recovery == 1


def _holds(proc, cachename):
    return os.path.exists(os.path.join(proc.workspace, "cache", cachename))


def test_url_inputs_are_fetched_by_the_worker(manager, workers, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "page.txt").write_bytes(b"served over http\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        m = manager
        workers.start(m)
        url = m.declare_url(f"http://127.0.0.1:{server.server_address[1]}/page.txt", cache=True)
        missing = m.declare_url(f"http://127.0.0.1:{server.server_address[1]}/nothing")
        t = vine.Task("cat page")
        t.add_input(url, "page")
        bad = vine.Task("cat page")
        bad.add_input(missing, "page")
        bad.set_max_forsaken(1)
        m.submit(t)
        m.submit(bad)
        done = {x.id: x for x in wait_tasks(m, 2)}
        assert done[t.id].std_output == "served over http\n"
        assert done[bad.id].result == "forsaken"
        assert manager_sent(m, url.cachename) == []
    finally:
        server.shutdown()


def test_forever_file_survives_a_worker_restart(tmp_path, workers):
    data = tmp_path / "model.bin"
    data.write_bytes(b"weights")
    workspace = tmp_path / "shared-workspace"
    for round_ in range(2):
        with vine.Manager(port=0, run_info_path=str(tmp_path / f"ri{round_}")) as m:
            workers.start(m, extra=("--workspace", str(workspace)))
            f = m.declare_file(str(data), cache="forever")
            t = vine.Task("cat model")
            t.add_input(f, "model")
            m.submit(t)
            (done,) = wait_tasks(m, 1)
            assert done.std_output == "weights"
            sent = manager_sent(m, f.cachename)
            assert len(sent) == (1 if round_ == 0 else 0)
        workers.procs[-1].wait(20)
    assert (workspace / "cache" / f.cachename).exists()


@pytest.mark.parametrize("peer_transfers", [True, False])
def test_peer_transfers_can_be_disabled(manager, workers, peer_transfers):
    m = manager
    if not peer_transfers:
        m.disable_peer_transfers()
    start_featured(workers, m, ["A", "B"])
    temp = m.declare_temp()
    a = pinned("echo moved > out", "A")
    a.add_output(temp, "out")
    b = pinned("cat in", "B")
    b.add_input(temp, "in")
    m.submit(a)
    m.submit(b)
    done = {t.id: t for t in wait_tasks(m, 2)}
    assert done[b.id].std_output == "moved\n"
    assert bool(manager_sent(m, temp.cachename)) is not peer_transfers


def test_failure_only_and_success_only_outputs(manager, workers, tmp_path):
    m = manager
    workers.start(m)
    results = {}
    for code in (0, 3):
        ok, bad = tmp_path / f"ok{code}", tmp_path / f"bad{code}"
        t = vine.Task(f"echo out > ok; echo out > bad; exit {code}")
        t.add_output(m.declare_file(str(ok)), "ok", success_only=True)
        t.add_output(m.declare_file(str(bad)), "bad", failure_only=True)
        m.submit(t)
        results[code] = (ok, bad)
    wait_tasks(m, 2)
    assert [p.exists() for p in results[0]] == [True, False]
    assert [p.exists() for p in results[3]] == [False, True]
    with pytest.raises(ValueError, match="exclude"):
        vine.Task("x").add_output(m.declare_buffer(), "x", failure_only=True, success_only=True)


def test_a_source_that_refuses_connections_is_routed_around(manager, workers, tmp_path):
    from tests.e2e.test_faults_and_api import FakeWorker
    m = manager
    data = tmp_path / "data.txt"
    data.write_bytes(b"the real bytes\n")
    f = m.declare_file(str(data), cache=True)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connections are refused
    fake = FakeWorker(m.port)
    fake.send(b"taskvine 13 fakehost Linux x86_64 8.0.0\ninfo worker-id worker-fake\n"
              + f"cache-update {f.cachename} 0 1 15 0 0 0 X\n".encode()
              + f"transfer-port {dead_port}\n".encode())
    fake.pump(m, lambda: m.get_file_replica_count(f) == 1)
    workers.start(m)
    t = vine.Task("cat data")
    t.add_input(f, "data")
    m.submit(t)
    (done,) = wait_tasks(m, 1)
    assert done.successful() and done.std_output == "the real bytes\n"
    assert len(manager_sent(m, f.cachename)) == 1  # the fallback, after the peer failed
    with open(os.path.join(m.logging_directory, "debug")) as log:
        assert "not using it as a source" in log.read()


def test_untar_and_minitask_inputs_are_built_on_the_worker(manager, workers, tmp_path):
    m = manager
    tarball = tree_tarball(tmp_path, "pkg", {"hello.txt": "unpacked\n"}, ".tar.gz")
    workers.start(m)
    untarred = m.declare_untar(m.declare_file(str(tarball), cache=True), cache=True)
    recipe = vine.Task("echo built by a mini task > made.txt")
    made = m.declare_minitask(recipe, "made.txt", cache=True)
    broken = m.declare_minitask(vine.Task("exit 1"), "nothing")
    tasks = []
    for _ in range(2):
        t = vine.Task("cat tree/pkg/hello.txt extra.txt")
        t.add_input(untarred, "tree")
        t.add_input(made, "extra.txt")
        m.submit(t)
        tasks.append(t)
    bad = vine.Task("cat nothing")
    bad.add_input(broken, "nothing")
    bad.set_max_forsaken(0)
    m.submit(bad)
    done = {t.id: t for t in wait_tasks(m, 3)}
    for t in tasks:
        assert done[t.id].std_output == "unpacked\nbuilt by a mini task\n"
    assert done[bad.id].result == "forsaken"
    assert m.fetch_file(made) == "built by a mini task\n"
    assert len(cache_updates(m, made.cachename)) == 1  # built once, then reused


def _kill(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_recovery_goes_up_the_chain_when_every_replica_is_lost(manager, workers):
    m = manager
    first = workers.start(m)
    t1, t2 = m.declare_temp(), m.declare_temp()
    a = vine.Task("seq 1 10 > out")
    a.add_output(t1, "out")
    b = vine.Task("sort -rn in > out")
    b.add_input(t1, "in")
    b.add_output(t2, "out")
    m.submit(a)
    m.submit(b)
    assert all(t.successful() for t in wait_tasks(m, 2))
    workers.start(m)
    wait_connected(m, 2)
    _kill(first)  # it held the only replicas of both temps
    c = vine.Task("head -n 3 in")
    c.add_input(t2, "in")
    m.submit(c)
    (done,) = wait_tasks(m, 1, timeout=60)
    assert done.id == c.id and done.successful() and done.std_output == "10\n9\n8\n"
    assert m.stats.tasks_recovery == 2


def test_immediate_recovery_recreates_a_lost_temp_without_waiting_for_a_consumer(manager,
                                                                               workers):
    m = manager
    m.tune("immediate-recovery", 1)
    first = workers.start(m)
    temp = m.declare_temp()
    a = vine.Task("echo again > out")
    a.add_output(temp, "out")
    m.submit(a)
    wait_tasks(m, 1)
    workers.start(m)
    wait_connected(m, 2)
    _kill(first)

    def recovered():
        assert m.wait(0.05) is None  # recovery tasks are never returned
        return m.get_file_replica_count(temp) == 1
    wait_until(recovered)
    assert m.stats.tasks_recovery == 1
    assert m.fetch_file(temp) == "again\n"


def test_temp_replica_count_keeps_extra_copies(manager, workers):
    m = manager
    m.tune("temp-replica-count", 2)
    procs = [workers.start(m), workers.start(m)]
    wait_connected(m, 2)
    temp = m.declare_temp()
    a = vine.Task("echo twice > out")
    a.add_output(temp, "out")
    m.submit(a)
    wait_tasks(m, 1)
    wait_until(lambda: m.wait(0) is None and m.get_file_replica_count(temp) == 2)
    holder = next(p for p in procs if _holds(p, temp.cachename))
    _kill(holder)
    c = vine.Task("cat in")
    c.add_input(temp, "in")
    m.submit(c)
    (done,) = wait_tasks(m, 1)
    assert done.std_output == "twice\n"
    assert m.stats.tasks_recovery == 0
