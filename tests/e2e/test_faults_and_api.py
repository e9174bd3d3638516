"""End-to-end: misbehaving peers, the manager's reports, logs and argument checking."""

import json
import os
import socket

import pytest

import ndcctools.taskvine as vine
from tests.conftest import wait_connected, wait_tasks
from tests.fakes import HELLO, FakeWorker


def test_garbage_from_one_worker_closes_only_that_connection(manager, workers, tmp_path):
    m = manager
    workers.start(m, cores=2)
    wait_connected(m, 1)
    fake = FakeWorker(m.port)
    fake.send(HELLO)
    wait_connected(m, 2)
    ids = [m.submit(vine.Task(f"echo {i}")) for i in range(10)]
    fake.send(b"this is not a protocol line\n")
    done = wait_tasks(m, 10)
    assert sorted(t.id for t in done) == ids
    assert all(t.successful() for t in done)
    fake.wait_closed(m)
    debug = open(os.path.join(m.logging_directory, "debug")).read()
    assert "this is not a protocol line" in debug
    assert m.stats.workers_connected == 1


def test_forsaken_task_is_retried_then_returned(manager):
    m = manager
    fake = FakeWorker(m.port)
    fake.send(HELLO)
    t = vine.Task("true")
    t.set_max_forsaken(1)
    m.submit(t)
    for _ in range(2):
        body = fake.expect(m, b"end\n")
        assert body.startswith(b"task %d\ncmd 4\ntrue" % t.id)
        fake.send(b"complete 40 0 0 0 1 2 0 %d\n" % t.id)
        fake.expect(m, b"kill %d\n" % t.id)
    while not fake.returned:
        fake.returned.append(m.wait(10))
    assert fake.returned == [t]
    assert (t.result, t.exit_code) == ("forsaken", -1)


def test_status_stats_and_hungry(manager, workers):
    m = manager
    workers.start(m, cores=2, memory=1000, disk=2000)
    wait_connected(m, 1)
    (w,) = m.status("workers")
    assert (w["cores_total"], w["memory_total"], w["disk_total"]) == (2, 1000, 2000)
    assert m.summarize_workers() == [{"workers": 1, "cores": 2, "gpus": 0, "memory": 1000,
                                      "disk": 2000}]
    assert m.hungry() == 10  # hungry-minimum with nothing queued
    for _ in range(3):
        t = vine.Task("sleep 1")
        t.set_cores(1)
        m.submit(t)
    m.wait(0)
    assert len(m.status("tasks")) == 3
    assert m.status("manager")[0]["tasks_left"] == 3
    wait_tasks(m, 3)
    assert m.stats.tasks_done == 3 and m.stats.tasks_successful == 3
    with pytest.raises(ValueError):
        m.status("nonsense")


def test_status_over_the_manager_port(manager, workers):
    m = manager
    workers.start(m, cores=1)
    wait_connected(m, 1)
    client = socket.create_connection(("127.0.0.1", m.port), timeout=10)
    client.sendall(b"worker_status\n")
    data = b""
    while True:
        m.wait(0)
        client.settimeout(0.05)
        try:
            chunk = client.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    assert json.loads(data)[0]["cores_total"] == 1
    assert m.stats.workers_connected == 1


def test_transactions_and_debug_logs(tmp_path, workers):
    with vine.Manager(port=0, run_info_path=str(tmp_path / "ri")) as m:
        workers.start(m, cores=1)
        m.submit(vine.Task("true"))
        wait_tasks(m, 1)
        logs = m.logging_directory
    txn = open(os.path.join(logs, "transactions")).read().splitlines()
    header = [line for line in txn if line.startswith("#")]
    assert len(header) == 16
    records = [line.split(" ", 3)[2:] for line in txn if not line.startswith("#")]
    kinds = [r[0] + " " + r[1].split(" ")[1] if r[0] == "TASK" else r[0] for r in records]
    assert kinds[0] == "MANAGER" and kinds[-1] == "MANAGER"
    for step in ("TASK READY", "TASK RUNNING", "TASK WAITING_RETRIEVAL", "TASK RETRIEVED",
                 "TASK DONE"):
        assert step in kinds
    debug = open(os.path.join(logs, "debug")).read()
    assert "Manager is listening on port" in debug
    assert "tx to" in debug and "rx from" in debug
    assert debug.rstrip().endswith("manager end")
    assert os.path.islink(tmp_path / "ri" / "most-recent")


def test_single_shot_worker_exits_when_manager_closes(tmp_path, workers):
    with vine.Manager(port=0, run_info_path=str(tmp_path / "ri")) as m:
        proc = workers.start(m, cores=1)
        m.submit(vine.Task("true"))
        wait_tasks(m, 1)
    assert proc.wait(10) == 0


def test_argument_errors_are_clear(manager):
    m = manager
    with pytest.raises(ValueError, match="not a valid cache level"):
        m.declare_file("x", cache="sometimes")
    with pytest.warns(UserWarning, match="unknown parameter 'hungry-minumum'"):
        assert m.tune("hungry-minumum", 1) == -1  # as upstream (its manual has this typo)
    assert m._tuning.hungry_minimum == 10
    with pytest.raises(TypeError):
        vine.Task({"command": "true"})
    with pytest.raises(TypeError):
        vine.Task("true").add_input("not a file", "x")
    with pytest.raises(TypeError):
        m.submit("true")
    with pytest.raises(ValueError):
        vine.Manager(port="nine")
    for name in ("attempt-schedule-depth", "hungry-minimum", "keepalive-interval",
                 "temp-replica-count", "max-library-retries"):
        assert m.tune(name, 3) == 0


def test_port_range_and_busy_port(tmp_path):
    with vine.Manager(port=0, run_info_path=str(tmp_path / "a")) as a:
        with pytest.raises(Exception, match="Could not create manager on"):
            vine.Manager(port=a.port, run_info_path=str(tmp_path / "b"))
        with vine.Manager(port=[a.port, a.port + 20], run_info_path=str(tmp_path / "c")) as c:
            assert a.port < c.port <= a.port + 20
