"""``ndcctools.taskvine.futures`` (api.md §17): tasks as ``concurrent.futures`` futures.

::

    user threads ──submit()──► inbox ──► driver thread ──► Manager (submit, wait, fetch)
         ▲                                  │
         └──── VineFuture.set_result / set_exception (callbacks, wait, as_completed)

A ``FuturesExecutor`` owns a ``Manager`` and one *driver* thread, the only thread that
touches it: the user's threads hand work to the driver (a queue and a wake-up of the
manager's loop), and the driver submits tasks, waits for them and resolves their futures, so
futures complete without anyone calling ``wait``. A future's task leaves its value in a temp
file on the worker; tasks given the future as an argument read that file there (it moves
worker to worker), and the driver fetches a copy to resolve the future. ``VineFuture`` is a
real ``concurrent.futures.Future``: the standard ``wait``/``as_completed`` work on it, and so
do this module's ``wait``/``as_completed`` (upstream's names).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from typing import Any

import cloudpickle

from . import _future_runner as runner
from .factory import Factory
from .manager import Manager
from .progress import Progress
from .python_task import PythonTask
from .serverless import FunctionCall, FunctionCallNoResult

cloudpickle.register_pickle_by_value(sys.modules[runner.__name__])

RESULT_PENDING = "result_pending"
TASK_MODES = ("tasks", "function-calls")  # how submit(fn) runs fn: a PythonTask, or a call

__all__ = [
    "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "RESULT_PENDING", "FuturesExecutor",
    "FuturePythonTask", "FutureFunctionCall", "VineFuture", "TaskFailed", "wait",
    "as_completed",
]


class TaskFailed(Exception):
    """The task behind a future did not complete (lost input, resources, ...): its result
    string and output say why."""

    def __init__(self, task: Any) -> None:
        self.result, self.output = task.result, task.std_output or ""
        super().__init__(f"task {task.id} failed: {task.result}"
                         + (f"; its output:\n{self.output}" if self.output else ""))


class VineFuture(concurrent.futures.Future):
    """The future value of a task run by a ``FuturesExecutor``."""

    def __init__(self, task: Any, executor: FuturesExecutor) -> None:
        super().__init__()
        self.task, self._executor = task, executor

    def result(self, timeout: Any = None) -> Any:
        return super().result(_seconds(timeout))

    def exception(self, timeout: Any = None) -> BaseException | None:
        return super().exception(_seconds(timeout))

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._executor._driver.post(lambda: self._executor._driver.cancel(self))
        return True


class _FutureTask:
    """What the future task classes share: future arguments become temp-file inputs, the
    result stays on the worker, ``output(timeout)`` waits for the value."""

    _future: VineFuture | None = None

    def _future_args(self, args: Sequence[Any]) -> list[Any]:
        out = []
        for i, a in enumerate(args):
            if isinstance(a, VineFuture):
                file = a.task.output_file
                if file is None:
                    raise ValueError(f"argument {i} is a future whose task was not submitted")
                name = f"future_{id(self)}_{i}"
                self.add_input(file, name)
                a = runner.FutureArg(name)
            out.append(a)
        return out

    def output(self, timeout: Any = "wait_forever") -> Any:
        """The value (or the exception raised), or ``RESULT_PENDING`` after ``timeout``."""
        if self._future is None:
            raise ValueError("submit the task to a FuturesExecutor first")
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            return RESULT_PENDING
        except Exception as e:  # noqa: BLE001 - upstream returns the exception
            return e


class FuturePythonTask(_FutureTask, PythonTask):
    """``func(*args, **kwargs)`` on a worker; positional futures are resolved there."""

    def __init__(self, manager: Manager, func: Callable, *args: Any, **kwargs: Any) -> None:
        if not callable(func):
            raise TypeError(f"FuturePythonTask needs a callable, not {type(func).__name__}")
        PythonTask.__init__(self, runner.run, func, args, kwargs)
        self._user_func, self._user_args = func, args
        self.enable_temp_output()

    def submit_finalize(self) -> None:
        self._fn_args = (self._user_func, tuple(self._future_args(self._user_args)),
                         self._fn_args[2])
        super().submit_finalize()

    def _decode(self, data: bytes) -> tuple[bool, Any]:
        return _unwrap(cloudpickle.loads(data))


class FutureFunctionCall(_FutureTask, FunctionCall):
    """A call into a library; positional futures are resolved by the library."""

    def __init__(self, manager: Manager, library_name: str, fn: str, *args: Any,
                 **kwargs: Any) -> None:
        FunctionCall.__init__(self, library_name, fn, *args, **kwargs)
        self.enable_temp_output()

    def submit_finalize(self) -> None:
        self._fn_args = self._future_args(self._fn_args)
        super().submit_finalize()

    def _decode(self, data: bytes) -> tuple[bool, Any]:
        reply = cloudpickle.loads(data)
        if not reply.get("Success"):
            return False, FunctionCallNoResult(reply.get("Reason"))
        return _unwrap(reply["Result"])


class _Driver(threading.Thread):
    """The one thread that uses the executor's manager."""

    def __init__(self, manager: Manager, progress: Progress | None = None) -> None:
        super().__init__(name="vine-futures", daemon=True)
        self.m, self.engine = manager, manager._engine
        self.inbox: collections.deque[Callable[[], None]] = collections.deque()
        self.work = threading.Event()
        self.wake_engine = self.engine.make_waker()
        self.pending: dict[int, VineFuture] = {}  # task id -> future
        self.fetching = 0
        self.stopping = False
        self.progress = progress  # futures submitted vs done, drawn by rich

    def post(self, job: Callable[[], None]) -> None:
        self.inbox.append(job)
        self.work.set()
        self.wake_engine()

    def call(self, job: Callable[[], Any]) -> Any:
        """Run ``job`` in the driver thread and return what it returns (or raise)."""
        if threading.current_thread() is self or not self.is_alive():
            return job()
        box: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                box.set_result(job())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box.set_exception(e)
        self.post(run)
        return box.result()

    def run(self) -> None:
        try:
            self.serve()
        finally:
            if self.progress is not None:
                self.progress.stop()

    def serve(self) -> None:
        while True:
            while self.inbox:
                self.inbox.popleft()()
            if self.stopping and not self.pending and not self.fetching and not self.inbox:
                return
            if not self.m.empty():
                task = self.m.wait(1.0)
                if task is not None:
                    self.completed(task)
            elif self.fetching:
                self.engine.run_once(0.2)
            else:
                self.work.wait(0.5)
                self.work.clear()

    def submit(self, future: VineFuture) -> None:
        if future.cancelled():
            return
        self.count(grow=1)
        try:
            task_id = self.m.submit(future.task)
        except Exception as e:  # noqa: BLE001 - the future says what went wrong
            future.set_exception(e)
            self.count(done=1)
            return
        self.pending[task_id] = future

    def completed(self, task: Any) -> None:
        future = self.pending.pop(task.id, None)
        if future is None:
            return
        if not future.cancelled() and not task.successful():
            future.set_exception(TaskFailed(task))
        if future.done():  # failed, or cancelled meanwhile
            self.count(done=1)
            return
        self.fetching += 1
        if not self.engine.fetch_async(task.output_file, lambda d: self.resolve(future, d)):
            self.resolve(future, None)

    def resolve(self, future: VineFuture, data: bytes | None) -> None:
        self.fetching -= 1
        self.count(done=1)
        if future.done():
            return
        if data is None:
            future.set_exception(RuntimeError(
                f"the result of task {future.task.id} was lost with its worker"))
            return
        try:
            ok, value = future.task._decode(data)
        except Exception as e:  # noqa: BLE001 - an undecodable result fails the future
            future.set_exception(e)
            return
        (future.set_result if ok else future.set_exception)(value)

    def cancel(self, future: VineFuture) -> None:
        task_id = future.task.id if future.task._record is not None else None
        if task_id is not None and self.pending.pop(task_id, None) is not None:
            self.m.cancel_by_task_id(task_id)
            self.count(done=1)

    def count(self, grow: int = 0, done: int = 0) -> None:
        """Futures submitted (``grow``) and done, for the progress bar. Every future
        submitted is counted done once: when its submission fails, when it leaves
        ``pending`` failed or cancelled, or when its value is fetched."""
        if self.progress is not None:
            if grow:
                self.progress.grow(grow)
            if done:
                self.progress.advance(done)


class FuturesExecutor(concurrent.futures.Executor):
    """Runs Python functions (and library calls) as tasks, returning ``VineFuture``s.

    With ``factory=True`` it also starts a ``Factory`` of ``batch_type`` for its workers
    (for its own manager unless another target is given); ``opts`` are factory options
    (``{"min-workers": 1, ...}``). ``task_mode="function-calls"`` (ours; upstream has only
    tasks) runs ``submit(fn, ...)`` as calls into a library of the executor's own, kept warm
    on each worker like a ``ProcessPoolExecutor``'s processes: many times faster for small
    functions, but calls share that process (its imports, globals and memory).

    ``progress`` (ours) shows a bar of the futures submitted and done, on the terminal or in
    Jupyter, until ``shutdown``: ``True`` for rich's own console, or a
    ``rich.console.Console`` to draw it there. It needs ``rich`` (``pip install rich``):
    without it the executor warns and runs without a bar."""

    def __init__(self, port: Any = 9123, batch_type: str = "local", manager: Any = None,
                 manager_host_port: str | None = None, manager_name: str | None = None,
                 factory_binary: str | None = None, worker_binary: str | None = None,
                 log_file: str = os.devnull, factory: bool = True,
                 opts: dict | None = None, task_mode: str = "tasks",
                 progress: Any = False) -> None:
        if task_mode not in TASK_MODES:
            raise ValueError(f"task_mode must be one of {', '.join(TASK_MODES)}, not "
                             f"{task_mode!r}")
        self.task_mode = task_mode
        self._library: str | None = None
        self._futures: weakref.WeakSet[VineFuture] = weakref.WeakSet()
        self.manager = Manager(port=port, name=manager_name)
        self.port = self.manager.port
        self.factory: Factory | None = None
        self._driver = _Driver(self.manager, _progress(progress))
        self._driver.start()
        self._shut = False
        if factory:
            target = manager if (manager or manager_host_port or manager_name) else self.manager
            self.factory = Factory(batch_type, manager=target,
                                   manager_host_port=manager_host_port,
                                   manager_name=manager_name, factory_binary=factory_binary,
                                   worker_binary=worker_binary, log_file=log_file)
            self.factory.min_workers = 5
            for key, value in (opts or {}).items():
                setattr(self.factory, key.replace("-", "_"), value)
            self.factory.start()

    # ------------------------------------------------------------------ submitting
    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> VineFuture:
        """A future of ``fn(*args, **kwargs)`` run on a worker; ``fn`` may also be a
        ``FuturePythonTask``/``FutureFunctionCall`` made by ``future_task``/``future_funcall``."""
        if self._shut:
            raise RuntimeError("cannot submit after shutdown")
        if any(isinstance(v, VineFuture) for v in kwargs.values()):
            raise TypeError("a future given as a keyword argument is not resolved on the "
                            "worker (as upstream): pass it as a positional argument")
        if isinstance(fn, _FutureTask):
            task = fn
        elif self.task_mode == "function-calls":
            task = self.future_funcall(self._own_library(), "call_with", fn, kwargs, *args)
        else:
            task = self.future_task(fn, *args, **kwargs)
        if task._future is not None:
            raise ValueError("this task was already submitted")
        future = VineFuture(task, self)
        task._future = future
        self._futures.add(future)
        self._driver.post(lambda: self._driver.submit(future))
        return future

    def _own_library(self) -> str:
        """The library that runs plain functions in ``function-calls`` mode (made once)."""
        if self._library is None:
            name = f"vine-futures-{id(self):x}"
            lib = self.create_library_from_functions(name, runner.call_with,
                                                     exec_mode="direct")
            self.install_library(lib)
            self._library = name
        return self._library

    def future_task(self, fn: Callable, *args: Any, **kwargs: Any) -> FuturePythonTask:
        return FuturePythonTask(self.manager, fn, *args, **kwargs)

    def future_funcall(self, library_name: str, fn: str, *args: Any,
                       **kwargs: Any) -> FutureFunctionCall:
        return FutureFunctionCall(self.manager, library_name, fn, *args, **kwargs)

    def create_library_from_functions(self, name: str, *functions: Callable,
                                      **options: Any) -> Any:
        return self._driver.call(
            lambda: self.manager.create_library_from_functions(name, *functions, **options))

    def install_library(self, library: Any) -> None:
        self._driver.call(lambda: self.manager.install_library(library))

    # ------------------------------------------------------------------ higher order
    def map(self, fn: Callable, iterable: Sequence, library_name: str | None = None,
            chunk_size: int = 1, timeout: Any = None) -> VineFuture:  # type: ignore[override]
        """One future of ``[fn(x) for x in iterable]``, computed in chunks."""
        _no_library(library_name)
        items = list(iterable)
        parts = [self.submit(runner.map_chunk, fn, items[i:i + chunk_size])
                 for i in range(0, len(items), max(1, chunk_size))]
        return self.submit(runner.concatenate, *parts)

    def reduce(self, fn: Callable, iterable: Sequence, library_name: str | None = None,
               chunk_size: int = 2, fn_arity: int = 2) -> VineFuture:
        """One future of ``iterable`` reduced with ``fn``, which takes a list of up to
        ``fn_arity`` items (``max``, ``sum``, ...); a tree of tasks of ``chunk_size``."""
        _no_library(library_name)
        if chunk_size <= 1 or fn_arity <= 1:
            raise ValueError("reduce needs chunk_size > 1 and fn_arity > 1")
        chunk_size = max(chunk_size, fn_arity)
        level: list[Any] = list(iterable)
        if not level:
            raise ValueError("reduce of an empty sequence")
        while True:
            level = [self.submit(runner.reduce_chunk, fn, fn_arity, *level[i:i + chunk_size])
                     for i in range(0, len(level), chunk_size)]
            if len(level) == 1:
                return level[0]

    def allpairs(self, fn: Callable, rows: Sequence, cols: Sequence,
                 library_name: str | None = None, chunk_size: int = 1) -> VineFuture:
        """One future of the 2-D list ``r[i][j] = fn(rows[i], cols[j])``."""
        _no_library(library_name)
        cols = list(cols)
        return self.submit(runner.collect,
                           *[self.submit(runner.pair_row, fn, r, cols) for r in rows])

    # ------------------------------------------------------------------ factory options
    def set(self, name: str, value: Any) -> None:
        if self.factory is not None:
            setattr(self.factory, name.replace("-", "_"), value)

    def get(self, name: str) -> Any:
        return None if self.factory is None else getattr(self.factory, name.replace("-", "_"))

    # ------------------------------------------------------------------ ending
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._shut:
            return
        self._shut = True
        if cancel_futures:
            for future in list(self._futures):
                future.cancel()

        def stop() -> None:
            self._driver.stopping = True
        self._driver.post(stop)
        if wait:
            self._driver.join()
        if self.factory is not None:
            self.factory.stop()
        if wait or not self._driver.is_alive():
            self.manager.close()


def wait(fs: Iterable[Any], timeout: float | None = None,
         return_when: str = ALL_COMPLETED) -> Any:
    """``concurrent.futures.wait``: an object with the ``done`` and ``not_done`` sets."""
    return concurrent.futures.wait(list(fs), timeout, return_when)


def as_completed(fs: Iterable[Any], timeout: float | None = None) -> Any:
    """``concurrent.futures.as_completed``: the futures as they finish."""
    return concurrent.futures.as_completed(list(fs), timeout)


def _unwrap(value: Any) -> tuple[bool, Any]:
    """(True, the value), or (False, the exception the function raised on the worker)."""
    if isinstance(value, runner.Raised):
        value.exception.add_note(f"raised on the worker:\n{value.text}")
        return False, value.exception
    return True, value


def _progress(progress: Any) -> Progress | None:
    """The bar asked for: none, on rich's console (True), or on the console given."""
    if progress is False or progress is None:
        return None
    bar = Progress.start("futures", None if progress is True else progress)
    if bar is None:
        warnings.warn("FuturesExecutor(progress=...) needs rich (pip install rich): "
                      "running without a progress bar", stacklevel=3)
    return bar


def _seconds(timeout: Any) -> float | None:
    return None if timeout in (None, "wait_forever") else float(timeout)


def _no_library(library_name: str | None) -> None:
    if library_name is not None:
        raise NotImplementedError("library_name is not supported here (as upstream): use "
                                  "future_funcall for library calls")
