"""PythonTask end to end: return values, exceptions, large results, temp outputs, raw
outputs, closures; on our worker they run in forked children of a warm Python."""

import os
import sys

import cloudpickle
import psutil
import pytest

import ndcctools.taskvine as vine
from tests.conftest import wait_tasks

# Workers cannot import this test module: ship its functions by value, as a user would.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def add(x, y=0):
    return x + y


def fail(message):
    raise RuntimeError(message)


def test_return_values_come_back_as_output(manager, workers):
    m = manager
    workers.start(m)
    scale = 3
    tasks = [vine.PythonTask(add, i, y=10) for i in range(20)]
    tasks.append(vine.PythonTask(lambda v: [v * scale, {"k": v}], 7))
    for t in tasks:
        m.submit(t)
    done = {t.id: t for t in wait_tasks(m, len(tasks))}
    for i, t in enumerate(tasks[:20]):
        assert done[t.id].successful() and t.output == i + 10
    assert tasks[-1].output == [21, {"k": 7}]


def test_a_raising_function_gives_no_result_and_its_traceback(manager, workers, capsys):
    m = manager
    workers.start(m)
    t = vine.PythonTask(fail, "this went wrong")
    m.submit(t)
    wait_tasks(m, 1)
    assert t.result == "output missing" and t.exit_code == 1
    assert isinstance(t.output, vine.PythonTaskNoResult)
    assert "RuntimeError: this went wrong" in t.std_output
    assert "this went wrong" in capsys.readouterr().out  # output printed for the user


def test_large_results_and_raw_bytes(manager, workers):
    m = manager
    workers.start(m)
    big = vine.PythonTask(lambda n: os.urandom(n), 30_000_000)
    raw = vine.PythonTask(lambda: b"look ma no serialization")
    raw.disable_output_serialization()
    m.submit(big)
    m.submit(raw)
    wait_tasks(m, 2)
    assert len(big.output) == 30_000_000
    assert raw.output == b"look ma no serialization"


def test_results_chained_through_temp_outputs(manager, workers):
    m = manager
    workers.start(m)
    workers.start(m)
    first = vine.PythonTask(add, 20, 1)
    first.enable_temp_output()
    m.submit(first)
    wait_tasks(m, 1)
    assert first.successful()
    with pytest.raises(ValueError):
        _ = first.output
    second = vine.PythonTask(lambda: cloudpickle.load(open("prev", "rb")) * 2)
    second.add_input(first.output_file, "prev")
    m.submit(second)
    wait_tasks(m, 1)
    assert second.output == 42


def test_tasks_see_their_sandbox_and_environment(manager, workers):
    m = manager
    workers.start(m)

    def where():
        with open("data.txt") as f:
            return os.getcwd(), os.environ["CORES"], os.environ.get("MINE"), f.read()
    t = vine.PythonTask(where)
    t.set_cores(1)
    t.set_env_var("MINE", "set by the task")
    t.add_input(m.declare_buffer("from a buffer"), "data.txt")
    m.submit(t)
    wait_tasks(m, 1)
    cwd, cores, mine, data = t.output
    assert os.path.basename(cwd) == f"task.{t.id}"
    assert (cores, mine, data) == ("1", "set by the task", "from a buffer")


def test_wall_time_kills_a_forked_python_task(manager, workers):
    m = manager
    workers.start(m)
    import time
    t = vine.PythonTask(time.sleep, 60)
    t.set_time_max(1)
    m.submit(t)
    (done,) = wait_tasks(m, 1)
    assert done.result == "max wall time"


def test_cancelling_a_running_python_task_kills_it(manager, workers, tmp_path):
    from tests.conftest import wait_until
    m = manager
    workers.start(m)
    pidfile = tmp_path / "pid"

    def linger(path):
        import time
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
    t = vine.PythonTask(linger, str(pidfile))
    m.submit(t)
    wait_until(lambda: m.wait(0) is None and pidfile.exists() and pidfile.read_text())
    pid = int(pidfile.read_text())
    m.cancel_by_task_id(t.id)
    (done,) = wait_tasks(m, 1)
    assert done.result == "cancelled"
    wait_until(lambda: m.wait(0) is None and not os.path.exists(f"/proc/{pid}"))


def test_a_task_whose_fork_server_dies_runs_again_instead_of_hanging(manager, workers,
                                                                     tmp_path):
    """The fork server that forked a running task is killed: the task is no child of the
    worker, which cannot wait for it; it is killed and forsaken, and runs again."""
    import signal

    from tests.conftest import wait_until
    m = manager
    proc = workers.start(m, cores=1)
    marks = tmp_path / "marks"
    marks.mkdir()

    def first_run_lingers(directory):
        import pathlib
        import time
        runs = len(list(pathlib.Path(directory).iterdir()))
        pathlib.Path(directory, f"run{runs}-{os.getpid()}").write_text("")
        if runs == 0:
            time.sleep(120)
        return runs
    t = vine.PythonTask(first_run_lingers, str(marks))
    m.submit(t)
    wait_until(lambda: m.wait(0) is None and any(marks.iterdir()))
    (mark,) = marks.iterdir()
    task_pid = int(mark.name.split("-")[1])
    server = psutil.Process(task_pid).parent()  # the fork server that forked it
    assert server.pid != proc.pid and "pyfork" in " ".join(server.cmdline())
    os.kill(server.pid, signal.SIGKILL)
    (done,) = wait_tasks(m, 1, timeout=60)
    assert done.successful() and done.output == 1  # the second run, started the plain way
    wait_until(lambda: not psutil.pid_exists(task_pid) or
               psutil.Process(task_pid).status() == psutil.STATUS_ZOMBIE)


def test_a_python_without_cloudpickle_fails_the_task_instead_of_hanging(manager, workers,
                                                                        tmp_path):
    m = manager
    shim_dir = tmp_path / "shim"
    (shim_dir / "lib").mkdir(parents=True)
    (shim_dir / "lib" / "cloudpickle.py").write_text("raise ImportError('no cloudpickle here')\n")
    shim = shim_dir / "python3"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH={shim_dir / "lib"} exec {sys.executable} "$@"\n')
    shim.chmod(0o755)
    workers.start(m)
    t = vine.PythonTask(add, 1, 2)
    t.set_env_var("PATH", f"{shim_dir}:{os.environ['PATH']}")
    m.submit(t)
    (done,) = wait_tasks(m, 1)
    assert done.exit_code == 1 and isinstance(done.output, vine.PythonTaskNoResult)
    assert "no cloudpickle here" in done.std_output
    after = vine.PythonTask(add, 1, 2)  # the default interpreter still works
    m.submit(after)
    wait_tasks(m, 1)
    assert after.output == 3
