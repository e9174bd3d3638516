"""``vine.Factory("local")`` and ``vine_factory -T local`` with a real manager and real
workers: the pool grows to what the tasks need within max, drains back to min, and nothing
it started outlives it however it ends."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess

import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine.factory.daemon import CONNECT_GRACE
from tests.conftest import wait_tasks, wait_until
from tests.factory.conftest import BIN, alive, doomed_program, factory_state


def serve_until(m, predicate, timeout=30.0):
    """Keep the manager answering (status queries are answered inside wait) until true."""
    def check():
        m.wait(0.05)
        return predicate()
    wait_until(check, timeout=timeout, step=0)


def local_factory(m, tmp_path, **options):
    f = vine.Factory("local", manager=m, log_file=str(tmp_path / "factory.log"))
    for name, value in {"min_workers": 0, "max_workers": 3, "cores": 1, "memory": 500,
                        "disk": 500, "timeout": 2, **options}.items():
        setattr(f, name, value)
    return f


def job_pids(f) -> list[int]:
    return [int(j["id"]) for j in factory_state(f)["jobs"]]


def test_pool_grows_to_max_runs_the_tasks_and_drains_to_min(manager, tmp_path):
    for i in range(12):
        manager.submit(vine.Task(f"sleep 0.2; echo {i}"))
    f = local_factory(manager, tmp_path, min_workers=1, max_workers=3)
    with f:
        peak = 0

        def connected():
            nonlocal peak
            peak = max(peak, manager.stats.workers_connected)
            return peak == 3
        serve_until(manager, connected)
        done = wait_tasks(manager, 12)
        assert sorted(int(t.output) for t in done) == list(range(12))
        assert all(t.successful() for t in done)
        serve_until(manager, lambda: manager.stats.workers_connected == 1
                    and len(factory_state(f)["jobs"]) == 1)
        assert manager.stats.workers_idled_out >= 2
        pids = job_pids(f)
        rows = manager.status("workers")
        assert rows[0]["factory_name"] == factory_state(f)["name"]
        factory_pid = f._proc.pid
    assert peak == 3
    wait_until(lambda: not any(map(alive, pids + [factory_pid])), timeout=15)
    assert "aiming at 3 of ours" in (tmp_path / "factory.log").read_text()


def test_stop_and_an_exception_in_the_body_remove_every_worker(manager, tmp_path):
    f = local_factory(manager, tmp_path, min_workers=2, max_workers=2)
    with pytest.raises(ZeroDivisionError), f:
        serve_until(manager, lambda: manager.stats.workers_connected == 2)
        pids = job_pids(f)
        assert len(pids) == 2
        raise ZeroDivisionError("the program's own error")
    assert not f.running
    wait_until(lambda: not any(map(alive, pids)), timeout=15)
    serve_until(manager, lambda: manager.stats.workers_connected == 0)


def test_a_killed_program_leaves_no_factory_and_no_workers(tmp_path):
    prog, started = doomed_program(tmp_path, "local")
    try:
        pids = [started["factory"]] + [int(i) for i in started["jobs"]]
        assert len(pids) == 3 and all(map(alive, pids))
    finally:
        prog.kill()
        prog.wait()
    wait_until(lambda: not any(map(alive, pids)), timeout=20)
    assert "parent process is gone" in (tmp_path / "factory.log").read_text()


def test_a_manager_that_goes_away_takes_the_workers_with_it(tmp_path):
    m = vine.Manager(port=0, run_info_path=str(tmp_path / "runs"))
    f = local_factory(m, tmp_path, min_workers=1, max_workers=1, timeout=60)
    with f:
        serve_until(m, lambda: m.stats.workers_connected == 1)
        pids = job_pids(f)
        m.close()
        wait_until(lambda: not factory_state(f)["jobs"], timeout=30)
        assert not any(map(alive, pids))
        assert "removing 1 workers" in (tmp_path / "factory.log").read_text()


def test_a_wrong_manager_address_is_reported_within_a_period(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    f = vine.Factory("local", manager_host_port=f"127.0.0.1:{port}",
                     log_file=str(tmp_path / "factory.log"))
    f.min_workers = 1
    f.scratch_dir = str(tmp_path)
    with f:
        wait_until(lambda: "cannot reach 127.0.0.1" in
                   (tmp_path / "factory.log").read_text(), timeout=5)
        assert factory_state(f)["jobs"] == []  # no workers for a manager that is not there


def test_dynamic_options_take_effect_while_running(manager, tmp_path):
    f = local_factory(manager, tmp_path, min_workers=2, max_workers=2, timeout=60)
    with f:
        serve_until(manager, lambda: manager.stats.workers_connected == 2)
        f.max_workers = 1
        serve_until(manager, lambda: manager.stats.workers_connected == 1
                    and len(factory_state(f)["jobs"]) == 1)
        with pytest.raises(AttributeError, match="cannot change while"):
            f.extra_options = "--feature x"
        with pytest.raises(AttributeError, match="constructor"):
            f.batch_type = "slurm"


def test_option_errors_are_clear(tmp_path, manager):
    with pytest.raises(ValueError, match="host:port"):
        vine.Factory(manager_host_port="nocolon")
    with pytest.raises(ValueError, match="needs a manager"):
        vine.Factory()
    with pytest.raises(OSError) as e:
        vine.Factory(manager=manager, factory_binary="no_such_vine_factory")
    assert e.value.errno == errno.ENOENT
    plain = tmp_path / "not_executable"
    plain.write_text("")
    with pytest.raises(OSError) as e:
        vine.Factory(manager=manager, worker_binary=str(plain))
    assert e.value.errno == errno.EPERM
    f = vine.Factory(manager=manager)
    with pytest.raises(KeyError):
        f.max_workers  # noqa: B018 - a valid option never set
    with pytest.raises(AttributeError):
        f.max_wrokers = 3
    with pytest.raises(AttributeError, match="constructor"):
        f.manager_name = "x"


def test_a_missing_batch_system_fails_start_with_its_name(manager, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", BIN)  # vine_factory and vine_worker, but no sbatch
    f = vine.Factory("slurm", manager_host_port=f"127.0.0.1:{manager.port}")
    f.scratch_dir = str(tmp_path)
    with pytest.raises(RuntimeError, match="needs sbatch"):
        f.start()
    assert not f.running


def test_vine_factory_command_line_serves_a_manager_and_exits_clean(manager, tmp_path):
    proc = subprocess.Popen(
        [os.path.join(BIN, "vine_factory"), "-T", "local", "--min-workers", "1",
         "--max-workers", "1", "--cores", "1", "--memory", "500", "--disk", "500",
         "-S", str(tmp_path / "scratch"), "127.0.0.1", str(manager.port)],
        stdout=open(tmp_path / "factory.log", "wb"), stderr=subprocess.STDOUT)
    try:
        manager.submit(vine.Task("echo hello"))
        (t,) = wait_tasks(manager, 1)
        assert t.output == "hello\n"
        state = json.loads((tmp_path / "scratch" / "state.json").read_text())
        (worker,) = [int(j["id"]) for j in state["jobs"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert not alive(worker)


def test_vine_submit_workers_starts_n_workers(manager, tmp_path):
    out = subprocess.run(
        [os.path.join(BIN, "vine_submit_workers"), "-T", "local", "--cores", "1",
         "--memory", "500", "--disk", "500", "-t", "30", "-S", str(tmp_path / "jobs"),
         "127.0.0.1", str(manager.port), "2"], capture_output=True, text=True, check=True)
    pids = [int(line) for line in out.stdout.split()]
    try:
        assert len(pids) == 2
        serve_until(manager, lambda: manager.stats.workers_connected == 2)
        for i in range(4):
            manager.submit(vine.Task(f"echo {i}"))
        assert len(wait_tasks(manager, 4)) == 4
    finally:
        for pid in pids:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_sizes_the_pool_from_any_protocol_13_manager(tmp_path):
    """The factory reads only the manager_status record: a stand-in manager that answers
    it as upstream's does (no ``tasks_total_*``) gets a pool sized to its tasks."""
    record = {"type": "vine_manager", "project": "", "tasks_waiting": 3,
              "tasks_on_workers": 1, "workers_connected": 0}
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    fake_worker = tmp_path / "fake_worker"
    fake_worker.write_text("#!/bin/sh\nexec sleep 60\n")
    fake_worker.chmod(0o755)
    f = vine.Factory("local", manager_host_port=f"127.0.0.1:{port}",
                     worker_binary=str(fake_worker), log_file=str(tmp_path / "factory.log"))
    f.min_workers, f.max_workers = 0, 10
    f.scratch_dir = str(tmp_path)
    with f:
        def answered():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                return len(factory_state(f)["jobs"]) == 4
            with conn:
                if conn.recv(100).startswith(b"manager_status"):
                    conn.sendall(json.dumps([record]).encode())
            return len(factory_state(f)["jobs"]) == 4
        wait_until(answered, timeout=20, step=0)
        pids = job_pids(f)
    server.close()
    assert not any(map(alive, pids))


def test_factory_finds_a_named_manager_through_the_catalog(catalog, tmp_path):
    """``manager_name`` (and ``vine_factory -M``): the factory reads the manager's record in
    a real catalog, and its workers find the manager there too."""
    with vine.Manager(port=0, name="factory-test-proj",
                      run_info_path=str(tmp_path / "runs")) as m:
        m.set_catalog_servers(catalog.spec)
        m.update_catalog()
        for i in range(3):
            m.submit(vine.Task(f"echo {i}"))
        serve_until(m, lambda: catalog.records("factory-test-proj"))
        f = vine.Factory("local", manager_name="factory-test-.*",
                         log_file=str(tmp_path / "factory.log"))
        f.catalog, f.scratch_dir = catalog.spec, str(tmp_path)
        f.min_workers, f.max_workers, f.cores, f.memory, f.disk = 0, 1, 1, 500, 500
        with f:
            done = wait_tasks(m, 3)
            assert sorted(t.output for t in done) == ["0\n", "1\n", "2\n"]
            assert m.status("workers")[0]["factory_name"] == factory_state(f)["name"]


def test_workers_run_inside_the_shipped_python_package(manager, tmp_path):
    """``python_package``: each job unpacks the packed environment, activates it and runs the
    package's own ``vine_worker`` (here a wrapper that marks its tasks); ``env`` reaches the
    tasks too."""
    env_dir = tmp_path / "env"
    (env_dir / "bin").mkdir(parents=True)
    (env_dir / "bin" / "activate").write_text("export FROM_PACKAGE=activated\n")
    wrapper = env_dir / "bin" / "vine_worker"
    wrapper.write_text(f"#!/bin/sh\nexport WORKER_FROM=package\n"
                       f"exec {os.path.join(BIN, 'vine_worker')} \"$@\"\n")
    wrapper.chmod(0o755)
    package = tmp_path / "env.tar.gz"
    subprocess.run(["tar", "czf", str(package), "-C", str(env_dir), "."], check=True)
    f = local_factory(manager, tmp_path, min_workers=1, max_workers=1)
    f.python_package, f.env = str(package), ["GREETING=hello there"]
    with f:
        manager.submit(vine.Task('echo "$FROM_PACKAGE $WORKER_FROM $GREETING"'))
        (t,) = wait_tasks(manager, 1)
    assert t.output == "activated package hello there\n"


@pytest.mark.slow
def test_workers_that_never_connect_are_reported(manager, tmp_path):
    """The factory reaches the manager but its workers do not (here: a stand-in worker that
    only says why): the log says so once they have had their grace, quoting a worker."""
    silent = tmp_path / "silent_worker"
    silent.write_text("#!/bin/sh\necho 'no route to the manager from this node'\n"
                      "exec sleep 120\n")
    silent.chmod(0o755)
    f = vine.Factory("local", manager=manager, worker_binary=str(silent),
                     log_file=str(tmp_path / "factory.log"))
    f.min_workers, f.max_workers = 1, 1
    log = tmp_path / "factory.log"
    with f:
        serve_until(manager, lambda: "none is connected" in log.read_text(),
                    timeout=CONNECT_GRACE + 15)
        pids = job_pids(f)
    text = log.read_text()
    assert "1 workers have run over" in text and "no route to the manager" in text
    wait_until(lambda: not any(map(alive, pids)), timeout=15)
