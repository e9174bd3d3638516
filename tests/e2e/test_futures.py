"""Futures (api.md §17) with real workers: PythonTask and FunctionCall futures, futures of
futures (values move worker to worker as temp files), exceptions, higher-order helpers, the
standard library's ``wait``/``as_completed`` and upstream's, timeouts and cancellation, and an
executor that starts its own local factory."""

from __future__ import annotations

import concurrent.futures as cf
import io
import os
import re
import sys
import threading

import cloudpickle
import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine import futures
from tests.conftest import wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x):
    return x * x


def add(a, b):
    return a + b


def fail(x):
    raise ValueError(f"Expected failure {x}")


def uses_a_module(n):
    import math  # imported on the worker
    return math.factorial(n)


def where(_):
    return os.getcwd()


def slow(x):
    import time
    time.sleep(x)
    return x


@pytest.fixture(params=["tasks", "function-calls"])
def executor(request, workers):
    """An executor whose ``submit(fn)`` makes PythonTasks, or calls into its own library."""
    ex = vine.FuturesExecutor(port=0, factory=False, task_mode=request.param)
    workers.start(ex.manager, cores=2)
    yield ex
    ex.shutdown()


def test_python_futures_and_futures_of_futures(executor):
    a, b = executor.submit(square, 3), executor.submit(square, 4)
    c = executor.submit(add, a, b)
    assert isinstance(c, cf.Future) and isinstance(c, vine.VineFuture)
    assert c.result(timeout=60) == 25
    assert a.done() and a.result() == 9 and not a.cancelled()
    assert executor.submit(uses_a_module, 5).result(60) == 120
    # the dependency moved as a file: c's task had a's output as an input
    names = [m.remote_name for m in c.task._inputs]
    assert any(n.startswith("future_") for n in names)


def test_an_exception_reaches_the_caller_and_the_futures_built_on_it(executor):
    bad = executor.submit(fail, 1)
    with pytest.raises(ValueError, match="Expected failure 1") as raised:
        bad.result(60)
    assert "raised on the worker" in "".join(getattr(raised.value, "__notes__", []))
    assert str(bad.exception()) == "Expected failure 1"
    after = executor.submit(add, bad, 1)
    assert isinstance(after.exception(60), ValueError)
    with pytest.raises(TypeError, match="positional"):
        executor.submit(add, 1, b=after)


def test_a_failed_task_carries_its_result_and_output(executor, tmp_path):
    task = executor.future_task(square, 2)
    task.add_input(executor.manager.declare_file(str(tmp_path / "missing")), "x")
    future = executor.submit(task)
    with pytest.raises(futures.TaskFailed, match="input missing"):
        future.result(60)


def test_function_call_futures(executor):
    lib = executor.create_library_from_functions("future-lib", square, add)
    executor.install_library(lib)
    x = executor.submit(executor.future_funcall("future-lib", "square", 7))
    y = executor.submit(executor.future_funcall("future-lib", "add", x, 1))
    z = executor.submit(add, y, 10)  # a python future on a call's result
    assert (x.result(60), y.result(60), z.result(60)) == (49, 50, 60)
    bad = executor.submit(executor.future_funcall("future-lib", "square", "text"))
    with pytest.raises(vine.serverless.FunctionCallNoResult, match="TypeError"):
        bad.result(60)


def test_map_reduce_allpairs(executor):
    assert executor.map(square, range(10), chunk_size=3).result(60) == [x * x for x in range(10)]
    assert executor.reduce(sum, range(10), chunk_size=3).result(60) == 45
    assert executor.reduce(max, [executor.submit(square, i) for i in range(5)]).result(60) == 16
    assert executor.allpairs(add, [1, 2], [10, 20, 30]).result(60) == [[11, 21, 31],
                                                                       [12, 22, 32]]
    with pytest.raises(NotImplementedError):
        executor.map(square, [1], library_name="x")


def test_standard_and_upstream_wait_and_as_completed(executor):
    fs = [executor.submit(square, i) for i in range(20)]
    assert sorted(f.result() for f in cf.as_completed(fs, timeout=60)) == \
        sorted(i * i for i in range(20))
    done, not_done = cf.wait(fs, timeout=60)
    assert len(done) == 20 and not not_done
    more = [executor.submit(square, i) for i in range(5)]
    result = futures.wait(more, timeout=60, return_when=futures.ALL_COMPLETED)
    assert len(result.done) == 5 and not result.not_done
    assert sorted(f.result() for f in futures.as_completed(more, timeout=60)) == \
        [0, 1, 4, 9, 16]


def test_callbacks_run_on_completion_without_anyone_waiting(executor):
    seen = threading.Event()
    future = executor.submit(square, 6)
    future.add_done_callback(lambda f: seen.set() if f.result() == 36 else None)
    assert seen.wait(60)  # nobody called result() or the manager's wait


def test_timeouts_and_cancel(executor):
    # PythonTasks in both modes: a call running in a library process cannot be stopped
    future = executor.submit(executor.future_task(slow, 30))
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=0.2)
    task = executor.future_task(slow, 30)
    other = executor.submit(task)
    assert task.output(timeout=0.1) == futures.RESULT_PENDING
    assert future.cancel() and other.cancel() and future.cancelled()
    with pytest.raises(cf.CancelledError):
        future.result()
    wait_until(lambda: not executor._driver.pending, timeout=30)
    assert executor.submit(square, 5).result(15) == 25  # the slow tasks were killed
    assert future.cancel()  # cancelling again is harmless (and still cancelled)


def test_task_mode_is_checked():
    with pytest.raises(ValueError, match="task_mode"):
        vine.FuturesExecutor(port=0, factory=False, task_mode="threads")


def test_an_executor_with_its_own_local_factory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep
                       + os.environ["PATH"])
    with vine.FuturesExecutor(port=0, opts={"min-workers": 1, "max-workers": 1, "cores": 1,
                                            "memory": 500, "disk": 500}) as ex:
        assert ex.submit(square, 12).result(60) == 144
        assert ex.get("max_workers") == 1
        factory = ex.factory
    assert not factory.running


def test_shutdown_can_cancel_what_has_not_run(executor):
    futures_ = [executor.submit(executor.future_task(slow, 20)) for _ in range(3)]
    executor.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in futures_)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(square, 1)


def test_progress_shows_every_future_done(workers, tmp_path, monkeypatch):
    """A bar on a rich console counts futures submitted and done (failed and cancelled ones
    included) and shows them all done once the executor shuts down."""
    console_module = pytest.importorskip("rich.console")
    monkeypatch.chdir(tmp_path)
    drawn = io.StringIO()
    console = console_module.Console(file=drawn, force_terminal=True, width=100)
    ex = vine.FuturesExecutor(port=0, factory=False, progress=console)
    try:
        workers.start(ex.manager, cores=2)
        values = [ex.submit(square, i) for i in range(10)]
        failing, stuck = ex.submit(fail, 0), ex.submit(slow, 60)
        assert [f.result(60) for f in values] == [i * i for i in range(10)]
        assert isinstance(failing.exception(60), ValueError)
        assert stuck.cancel()
    finally:
        ex.shutdown()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.getvalue())
    counts = re.findall(r"(\d+)/(\d+)", text)
    assert "futures" in text and counts and counts[-1] == ("12", "12")


def test_progress_without_rich_warns_and_runs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "rich", None)  # import rich now fails
    with pytest.warns(UserWarning, match="needs rich"):
        ex = vine.FuturesExecutor(port=0, factory=False, progress=True)
    assert ex._driver.progress is None
    ex.shutdown()
