"""End-to-end: managing workers (block, shut down, release) and the life of declared files."""

import os
import socket
import subprocess
import sys
import textwrap

import ndcctools.taskvine as vine
from tests.conftest import wait_connected, wait_tasks, wait_until


def test_blocked_host_gets_no_tasks_until_unblocked(manager, workers):
    m = manager
    workers.start(m, cores=1)
    wait_connected(m, 1)
    m.block_host(socket.gethostname())
    m.submit(vine.Task("echo hi"))
    for _ in range(3):
        assert m.wait(1) is None
    assert m.stats.tasks_waiting == 1
    assert m.status("manager")[0]["workers_blocked"] == [socket.gethostname()]
    m.unblock_host()
    (t,) = wait_tasks(m, 1)
    assert t.std_output == "hi\n"


def test_workers_shutdown_and_shutdown_on_close(tmp_path, workers):
    with vine.Manager(port=0, run_info_path=str(tmp_path / "a")) as m:
        one = workers.start(m, cores=1, single_shot=False)
        two = workers.start(m, cores=1, single_shot=False)
        wait_connected(m, 2)
        assert m.workers_shutdown(1) == 1
        wait_until(lambda: m.wait(0) is None and (one.poll() is not None
                                                  or two.poll() is not None))
    assert (one.poll() is None) != (two.poll() is None)  # the other was only released
    with vine.Manager(port=0, shutdown=True, run_info_path=str(tmp_path / "b")) as m:
        three = workers.start(m, cores=1, single_shot=False)
        wait_connected(m, 1)
    assert three.wait(10) == 0


def test_min_task_id_and_task_state(manager):
    m = manager
    assert m.set_min_task_id(100) == 100
    t = vine.Task("true")
    assert m.submit(t) == 100
    assert m.task_state(100) == vine.VINE_TASK_READY
    assert m.task_state(5) is None
    assert m.cancel_by_category("default") == 1
    assert m.wait(5) is t and t.result == "cancelled"


def test_unlink_when_done_and_undeclare(manager, workers, tmp_path):
    m = manager
    proc = workers.start(m, cores=1)
    scratch = tmp_path / "scratch.txt"
    scratch.write_text("temporary\n")
    f = m.declare_file(str(scratch), cache=True, unlink_when_done=True)
    t = vine.Task("cat in")
    t.add_input(f, "in")
    m.submit(t)
    (t,) = wait_tasks(m, 1)
    assert t.std_output == "temporary\n"
    cached = proc.workspace / "cache" / f.cachename
    assert cached.exists()  # workflow level: kept on the worker between tasks
    m.undeclare_file(f)
    assert not scratch.exists()
    m.submit(vine.Task("true"))  # serve the worker until the unlink has surely arrived
    wait_tasks(m, 1)
    assert not cached.exists()


def test_task_level_inputs_are_removed_from_the_worker(manager, workers, tmp_path):
    m = manager
    proc = workers.start(m, cores=1)
    (tmp_path / "in.txt").write_text("x")
    f = m.declare_file(str(tmp_path / "in.txt"))
    t = vine.Task("cat in")
    t.add_input(f, "in")
    m.submit(t)
    wait_tasks(m, 1)
    m.submit(vine.Task("true"))
    wait_tasks(m, 1)
    assert not (proc.workspace / "cache" / f.cachename).exists()


def test_workers_are_released_when_the_program_ends(tmp_path):
    """A script that never closes its manager: its single-shot worker must exit promptly."""
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys
        import ndcctools.taskvine as vine
        m = vine.Manager(port=0, run_info_path={str(tmp_path / 'ri')!r})
        w = subprocess.Popen([sys.executable, "-m", "ndcctools.taskvine.tools.vine_worker",
                              "127.0.0.1", str(m.port), "--single-shot", "--cores", "1",
                              "--workspace", {str(tmp_path / 'ws')!r}])
        print(w.pid, flush=True)
        m.submit(vine.Task("true"))
        assert m.wait(30).successful()
    """))
    prog = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert prog.returncode == 0, prog.stderr
    pid = int(prog.stdout.split()[0])
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=10)
    assert not (tmp_path / "ws").exists()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_an_idle_worker_with_the_only_copy_of_a_temp_is_kept(manager, workers):
    """A worker asking to leave for idleness (``--idle-timeout``, as factory workers do) is
    let go only once no temp file would be lost with it."""
    workers.start(manager, extra=["--idle-timeout", "1"])
    temp = manager.declare_temp()
    t = vine.Task("echo data > out")
    t.add_output(temp, "out")
    manager.submit(t)
    assert wait_tasks(manager, 1)[0].successful()
    debug = os.path.join(manager.logging_directory, "debug")

    def asked_twice():
        manager.wait(0.1)
        with open(debug) as f:
            return f.read().count("idle-disconnect-request") >= 2
    wait_until(asked_twice, timeout=30, step=0)
    assert manager.stats.workers_connected == 1 and manager.stats.workers_idled_out == 0
    manager.undeclare_file(temp)

    def gone():
        manager.wait(0.1)
        return manager.stats.workers_connected == 0
    wait_until(gone, timeout=30, step=0)
    assert manager.stats.workers_idled_out == 1
