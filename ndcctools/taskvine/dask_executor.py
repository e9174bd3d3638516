"""DaskVine: a TaskVine manager that is also a dask scheduler (api.md §18.1).

Theory of operation. ``m.get(dsk, keys)`` (what ``dask.compute(..., scheduler=m.get)``
calls) builds a ``DaskVineDag`` of the graph and runs it as a ``_GraphRun``::

    DaskVineDag ──ready keys──► _GraphRun ──one task per Task node──► Manager (workers)
         ▲                          │  (Alias and DataNode nodes resolve here, no task)
         └───set_result(handle)─────┘◄──── wait_for_tag("dag-<id>") ───┘

Each ``Task`` node becomes one task (a ``PythonTask`` in ``"tasks"`` mode, a
``FunctionCall`` into the manager's vertex libraries, ``_Libraries``, in
``"function-calls"`` mode) running
``execute_graph_vertex``: it reads the results of the node's dependencies from its input
files (or from small values sent inline), calls the node, and writes the cloudpickled value
to its output file ``v``. That file is a temp that stays on the worker, and moves worker to
worker to the tasks that need it, unless the key is a target, is checkpointed, or
``worker_transfers=False``: then it is a buffer brought back here. The task's own return
value is a small status: ``None``, or the exception the node raised with its traceback, so
a failure is seen here even when the value is a temp. Lost temps are re-created by the
manager itself (``immediate-recovery``). A failed key is retried ``retries`` times in all;
then ``get`` raises ``DaskVineError``, carrying the node's own exception as its cause.
"""

from __future__ import annotations

import builtins
import itertools
import pickletools
import random
import sys
import types
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import cloudpickle

from . import cvine
from .core.categories import parse_mode
from .dask_dag import DaskVineDag, DaskVineNoResult, daskvine_merge
from .file import File
from .manager import Manager
from .progress import Progress
from .python_task import PythonTask
from .serverless import FunctionCall, LibraryTask

__all__ = ["DaskVine", "DaskVineDag", "DaskVineError", "DaskVineNoResult", "daskvine_merge"]

LIBRARY_EXEC_MODE = "direct"  # how the library runs calls (see docs/decisions.md)
MAX_LIBRARIES = 64  # direct-mode libraries when lib_resources gives no number of slots
INLINE_MAX = 16 << 10  # local values (DataNode) larger than this travel as cached files
PRIORITY_MODES = ("largest-input-first", "random", "depth-first", "breadth-first",
                  "longest-category-first", "shortest-category-first", "FIFO", "LIFO")
TASK_MODES = ("tasks", "function-calls")
_LIBRARY_SERIAL = itertools.count(1)
_DAG_SERIAL = itertools.count(1)


class DaskVineError(Exception):
    """A key of a graph failed on every attempt. ``key`` names it; ``exception`` and
    ``traceback`` are those of the node when the node itself raised (else None and the
    task's result text); the node's exception is also the ``__cause__``."""

    def __init__(self, key: Hashable, why: str, exception: BaseException | None = None,
                 tb: str | None = None):
        super().__init__(f"tasks for key {key!r} failed permanently: {why}")
        self.key, self.exception, self.traceback = key, exception, tb


# ---------------------------------------------------------------------- on the worker
def _vertex(payload: bytes, inline: dict, files: dict, out_name: str,
            wrapper: Any = None) -> Any:
    """Run one graph node on a worker: ``None`` (or ``("wrapped", result)``) when the
    value is in ``out_name``, ``("error", exception, traceback)`` when the node raised.
    Shipped by value (see ``_by_value``): it imports what it needs itself."""
    import traceback

    import cloudpickle
    try:
        node = cloudpickle.loads(payload)
        values = {k: cloudpickle.loads(v) for k, v in inline.items()}
        for key, name in files.items():
            with open(name, "rb") as f:
                values[key] = cloudpickle.load(f)
        if wrapper is None:
            wrapped, value = None, node(values)
        else:
            wrapped, value = wrapper(node, values)
        data = cloudpickle.dumps(value)
    except Exception as e:
        open(out_name, "wb").close()
        try:
            cloudpickle.dumps(e)
        except Exception:
            e = RuntimeError(f"{type(e).__name__}: {e}")
        return ("error", e, traceback.format_exc())
    with open(out_name, "wb") as f:
        f.write(data)
    return None if wrapper is None else ("wrapped", wrapped)


def _by_value(fn: Callable, name: str) -> Callable:
    """A copy of ``fn`` that cloudpickle sends by value (its module is not importable), so
    a worker runs it without importing this package; ``fn`` may use only builtins."""
    copy = types.FunctionType(fn.__code__, {"__builtins__": builtins}, name, fn.__defaults__)
    copy.__module__ = "__daskvine__"
    copy.__qualname__ = name
    return copy


def _preload(modules: list) -> dict:
    """Import ``modules`` once in the library process (before calls fork from it), skipping
    those the worker cannot import. Shipped by value, like ``_vertex``."""
    import importlib
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    return {}


execute_graph_vertex = _by_value(_vertex, "execute_graph_vertex")
preload_modules = _by_value(_preload, "preload_modules")


# ---------------------------------------------------------------------- results here
class _Handle:
    """Where the result of a key is: a file on workers (temp) or here (buffer), or a small
    pickled value sent inline; ``value`` once it is loaded here."""

    __slots__ = ("file", "inline", "value", "loaded")

    def __init__(self, file: File | None = None, inline: bytes | None = None,
                 value: Any = None, loaded: bool = False):
        self.file, self.inline, self.value, self.loaded = file, inline, value, loaded

    def load(self, m: Manager) -> Any:
        if not self.loaded:
            data, f = self.inline, self.file
            if data is None and f._type == cvine.VINE_TEMP:
                data = m._engine.fetch(f)
                if data is None:
                    raise DaskVineNoResult(f"the result file {f.cachename} could not be read")
            elif data is None:
                data = f.contents()
            self.value, self.loaded = cloudpickle.loads(data), True
        return self.value


class DaskVine(Manager):
    """A Manager that runs dask graphs: ``dask.compute(x, scheduler=m.get)``."""

    _dag_class: Callable[..., Any] = DaskVineDag

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.set_property("framework", "dask")
        self.tune("category-steady-n-tasks", 1)
        self.tune("prefer-dispatch", 1)
        self.tune("immediate-recovery", 1)
        self._dask_libraries: _Libraries | None = None  # for function-calls mode

    def __call__(self, dsk: Mapping, keys: Any, **options: Any) -> Any:
        return self.get(dsk, keys, **options)

    def get(self, dsk: Mapping, keys: Any, *, environment: File | str | None = None,
            extra_files: Mapping[File, str] | None = None, worker_transfers: bool = True,
            lazy_transfers: bool = True, env_vars: Mapping[str, Any] | None = None,
            low_memory_mode: bool = False, checkpoint_fn: Callable | None = None,
            resources: dict | None = None, resources_mode: str | None = None,
            retries: int = 5, submit_per_cycle: int | None = None,
            max_pending: int | None = None, verbose: bool = False,
            progress_disable: bool = False, progress_label: str = "[green]tasks",
            reconstruct: bool = False, merge_size: int = 2, wrapper: Callable | None = None,
            wrapper_proc: Callable = print, prune_files: bool = False, prune_depth: int = 0,
            hoisting_modules: list | None = None, import_modules: list | None = None,
            lib_extra_functions: list | None = None, lib_resources: dict | None = None,
            lib_command: str | None = None, lib_modules: list | None = None,
            task_mode: str = "tasks", task_priority_mode: str = "largest-input-first",
            scheduling_mode: str = "files", env_per_task: bool = False,
            init_command: str | None = None) -> Any:
        """Run graph ``dsk`` and return the values of ``keys`` (a key, or nested lists of
        keys mirrored by the result). Options: api.md §18.1 (``init_command``, a prefix of
        each task's command in ``"tasks"`` mode, as in §18.4)."""
        if retries < 1:
            raise ValueError(f"retries must be at least 1, not {retries}")
        if task_mode not in TASK_MODES:
            raise ValueError(f"task_mode must be one of {TASK_MODES}, not {task_mode!r}")
        if task_priority_mode not in PRIORITY_MODES:
            raise ValueError(f"task_priority_mode must be one of {PRIORITY_MODES}, not "
                             f"{task_priority_mode!r}")
        if low_memory_mode:
            raise ValueError("low_memory_mode applies to tuple graphs of old dask releases: "
                             "use ndcctools.taskvine.compat.DaskVine")
        if env_per_task and not isinstance(environment, str):
            raise ValueError("env_per_task needs environment to be the path of a package")
        self._dask_scheduling(scheduling_mode, resources_mode)
        if prune_files and prune_depth < 1:
            prune_depth = 1
        dag = self._dag_class(dsk, reconstruct=reconstruct, merge_size=merge_size,
                              prune_depth=prune_depth)
        run = _GraphRun(self, dag, _Options(
            environment=self._dask_environment(environment, env_per_task),
            extra_files=dict(extra_files or {}), env_vars=dict(env_vars or {}),
            worker_transfers=bool(worker_transfers and lazy_transfers),
            checkpoint_fn=checkpoint_fn, resources=resources, resources_mode=resources_mode,
            retries=int(retries),
            submit_per_cycle=_limit(submit_per_cycle), max_pending=_limit(max_pending),
            verbose=verbose, progress=not progress_disable, progress_label=progress_label,
            wrapper=wrapper, wrapper_proc=wrapper_proc, priority_mode=task_priority_mode,
            init_command=init_command))
        if task_mode == "function-calls":
            modules = [*(lib_modules or ()), *(hoisting_modules or ()), *(import_modules or ())]
            names = {m for m in modules if isinstance(m, str)}  # imported by name, as found
            run.libraries = self._dask_libraries_for(
                run.opts, [m for m in modules if not isinstance(m, str)],
                list(lib_extra_functions or ()), lib_resources, lib_command,
                run.modules() | names)
        try:
            return run.run(keys)
        finally:
            self.update_catalog()

    # ------------------------------------------------------------------ helpers of get
    def _dask_scheduling(self, scheduling_mode: str, resources_mode: str | None) -> None:
        self.set_scheduler(scheduling_mode)
        if resources_mode is not None:
            parse_mode(resources_mode)  # a wrong name fails now, not at the first node
            self.enable_monitoring()

    def _dask_environment(self, environment: File | str | None,
                          per_task: bool) -> File | None:
        if environment is None:
            return None
        if per_task:
            return self.declare_poncho(environment, cache=False)
        return self._environment(environment)

    def _dask_libraries_for(self, opts: _Options, modules: list, extra: list,
                            lib_resources: dict | None, lib_command: str | None,
                            preload: set[str]) -> _Libraries:
        """The libraries serving graph vertices with these options, which import the
        ``preload`` modules (those the graph's nodes need) when they start: kept from one
        ``get`` to the next, replaced when the options change or new modules appear."""
        wanted = (tuple(modules), tuple(extra), tuple(sorted((lib_resources or {}).items())),
                  lib_command, opts.environment, tuple(opts.extra_files.items()),
                  tuple(sorted(opts.env_vars.items(), key=lambda kv: kv[0])))
        known = self._dask_libraries
        if known is not None and known.wanted == wanted and preload <= known.preload:
            return known
        if known is not None:
            known.remove()
            preload = preload | known.preload

        def build(name: str, share: int) -> LibraryTask:
            lib = self.create_library_from_functions(
                name, execute_graph_vertex, *extra, add_env=False, init_command=lib_command,
                exec_mode=LIBRARY_EXEC_MODE, hoisting_modules=modules or None,
                library_context_info=[preload_modules, [sorted(preload)], {}])
            _library_resources(lib, lib_resources, share)
            opts.decorate(self, lib)
            return lib

        self._dask_libraries = _Libraries(self, wanted, frozenset(preload), build,
                                          (lib_resources or {}).get("slots"))
        return self._dask_libraries


class _Libraries:
    """The libraries that run graph vertices in ``function-calls`` mode.

    In direct mode (``LIBRARY_EXEC_MODE``) a library process runs its calls itself, one at
    a time: no fork per call, which is most of the cost of the small calls of a dask graph,
    but one slot per library on a worker. So there are ``slots`` libraries (by default as
    many as the connected workers have cores in all, up to ``MAX_LIBRARIES``, more being
    installed as workers join), each of 1 core, so that their instances spread over the
    workers; each call goes to the library with the fewest calls in flight. In fork mode
    there is one library, whose slots run calls in forked children."""

    def __init__(self, m: Manager, wanted: tuple, preload: frozenset,
                 build: Callable[[str, int], LibraryTask], slots: int | None):
        self.m, self.wanted, self.preload, self.build = m, wanted, preload, build
        self.serial = next(_LIBRARY_SERIAL)
        self.fixed = slots
        self.in_flight: dict[str, int] = {}
        self.grow()

    def grow(self) -> None:
        """Install libraries up to the number of slots wanted."""
        if LIBRARY_EXEC_MODE != "direct":
            want = 1
        else:
            cores = sum(int(w["cores"]) * w["workers"] for w in self.m.summarize_workers())
            want = self.fixed or min(MAX_LIBRARIES, max(1, cores))
        while len(self.in_flight) < want:
            name = f"Dask-Library-{self.serial}-{len(self.in_flight)}"
            self.m.install_library(self.build(name, self.fixed or 1))
            self.in_flight[name] = 0

    def pick(self) -> str:
        name = min(self.in_flight, key=self.in_flight.__getitem__)
        self.in_flight[name] += 1
        return name

    def done(self, name: str) -> None:
        if name in self.in_flight:
            self.in_flight[name] -= 1

    def remove(self) -> None:
        for name in self.in_flight:
            self.m.remove_library(name)
        self.in_flight.clear()


def _pickled_modules(payload: bytes) -> set[str]:
    """The modules a pickle names that are imported here: those its loading imports."""
    found = set()
    for _op, arg, _pos in pickletools.genops(payload):
        if isinstance(arg, str) and arg in sys.modules and not arg.startswith("__"):
            found.add(arg)
    return found - {"builtins"}


def _library_resources(lib: LibraryTask, resources: dict | None, share: int = 1) -> None:
    """Resources of a library; in direct mode each of ``share`` libraries gets its share
    of ``cores``, ``memory`` and ``disk`` (1 core if none is given) and one slot."""
    resources = dict(resources or {})
    unknown = set(resources) - {"cores", "memory", "disk", "slots", "gpus"}
    if unknown:
        raise ValueError(f"lib_resources: unknown names {sorted(unknown)}")
    if LIBRARY_EXEC_MODE == "direct":
        resources.pop("slots", None)
        for name in ("cores", "memory", "disk"):
            if name in resources:
                resources[name] = max(1, int(resources[name] // share))
        resources.setdefault("cores", 1)
    if "cores" in resources:
        lib.set_cores(resources["cores"])
        lib.set_function_slots(max(1, int(resources["cores"])))
    for name, setter in (("memory", lib.set_memory), ("disk", lib.set_disk),
                         ("gpus", lib.set_gpus), ("slots", lib.set_function_slots)):
        if name in resources:
            setter(resources[name])


def _limit(value: int | None) -> int | None:
    return None if value is None or value < 1 else int(value)


class _Options:
    """The options of one ``get`` that shape each task."""

    def __init__(self, **values: Any):
        self.__dict__.update(values)

    def decorate(self, m: Manager, task: Any) -> None:
        """Environment, extra files and environment variables, for a task or the library."""
        if self.environment is not None:
            task.add_environment(self.environment)
        for f, name in self.extra_files.items():
            task.add_input(f, name)
        for var, value in self.env_vars.items():
            task.set_env_var(var, value(m, task) if callable(value) else str(value))


class _GraphRun:
    """One ``get``: submits the ready keys of ``dag``, collects their results."""

    def __init__(self, m: DaskVine, dag: DaskVineDag, opts: _Options):
        self.m, self.dag, self.opts = m, dag, opts
        self.libraries: _Libraries | None = None
        self.tag = f"dag-{next(_DAG_SERIAL)}"
        self.payloads: dict[Hashable, bytes] = {}
        self.attempts: dict[Hashable, int] = {}
        self.running: dict[int, tuple] = {}  # task id -> (key, value file, library or None)
        self.queue: list[Hashable] = []
        self.files: list[File] = []  # every file this run declared, undeclared at the end
        self.category_times: dict[str, list[float]] = {}
        self.order = itertools.count()
        self.categories_set: set[str] = set()
        self.progress: Progress | None = None
        self.keep: set = set()  # keys whose results come back here

    def payload(self, key: Hashable) -> bytes:
        """The node of ``key``, pickled once."""
        data = self.payloads.get(key)
        if data is None:
            data = self.payloads[key] = cloudpickle.dumps(self.dag.node(key))
        return data

    def modules(self) -> set[str]:
        """The modules that loading the nodes imports, from one node of each kind (keys
        named alike): what a library should import before its calls fork."""
        found, seen = {"cloudpickle", "dask._task_spec"}, set()
        for key in self.dag:
            name = key[0] if isinstance(key, tuple) and key else key
            if name in seen or not self.dag.taskp(self.dag.node(key)):
                continue
            seen.add(name)
            found |= _pickled_modules(self.payload(key))
        return found

    # ------------------------------------------------------------------ the loop
    def run(self, keys: Any) -> Any:
        flat = list(_flatten(keys))
        targets = dict.fromkeys(flat)
        self.keep = set(self._through_aliases(targets))
        self.progress = Progress.start(self.opts.progress_label) if self.opts.progress else None
        try:
            ready = self.dag.set_targets(targets)
            if self.progress:
                self.progress.set_total(self.dag.left_to_compute())
            self._ready(ready)
            while self.dag.left_to_compute():
                if self.libraries is not None:
                    self.libraries.grow()
                self._submit_some()
                t = self.m.wait_for_tag(self.tag, 5)
                while t is not None:
                    self._done(t)
                    t = self.m.wait_for_tag(self.tag, 0) if self.running else None
            results = {k: self.dag.get_result(k).load(self.m) for k in targets}
            return self.dag.replace_targets(keys, results)
        finally:
            self._finish()

    def _through_aliases(self, keys: Any):
        """``keys`` and the keys their aliases lead to: results to bring back here."""
        for key in keys:
            yield key
            node = self.dag.node(key) if key in self.dag else None
            while type(node).__name__ == "Alias" and node.target in self.dag:
                yield node.target
                node = self.dag.node(node.target)

    def _ready(self, keys: list) -> None:
        """Resolve here what needs no task; queue the rest."""
        resolved = 0
        while keys:
            more = []
            for key in keys:
                node = self.dag.node(key)
                kind = type(node).__name__
                if kind == "Alias":
                    more += self.dag.set_result(key, self.dag.get_result(node.target))
                elif kind == "DataNode":
                    more += self.dag.set_result(key, self._local(node.value))
                else:
                    self.queue.append(key)
                    continue
                resolved += 1
            keys = more
        if self.progress and resolved:
            self.progress.advance(resolved)

    def _local(self, value: Any) -> _Handle:
        data = cloudpickle.dumps(value)
        if len(data) <= INLINE_MAX:
            return _Handle(inline=data, value=value, loaded=True)
        f = self.m.declare_buffer(data, cache="workflow")
        self.files.append(f)
        return _Handle(file=f, value=value, loaded=True)

    def _submit_some(self) -> None:
        budget = self.opts.submit_per_cycle or len(self.queue)
        if self.opts.max_pending is not None:
            budget = min(budget, self.opts.max_pending - len(self.running))
        while self.queue and budget > 0:
            self._submit(self.queue.pop())
            budget -= 1

    def _done(self, t: Any) -> None:
        key, value_file, library = self.running.pop(t.id)
        if library is not None:
            self.libraries.done(library)
        status = t.output if t.successful() else None
        category = t.category
        elapsed = t.get_metric("time_workers_execute_last") / 1e6
        self.category_times.setdefault(category, []).append(elapsed)
        wrapped = isinstance(status, tuple) and status[:1] == ("wrapped",)
        if t.successful() and (status is None or wrapped):
            if status is not None:
                self.opts.wrapper_proc(status[1])
            handle = _Handle(file=value_file)
            if self.opts.verbose:
                print(f"DaskVine: {key!r} done on {t.hostname}")
            if self.progress:
                self.progress.advance(1)
            self._ready(self.dag.set_result(key, handle))
            self._prune(key)
            return
        self._failed(key, t, status)

    def _failed(self, key: Hashable, t: Any, status: Any) -> None:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if isinstance(status, tuple) and status[0] == "error":
            why, exc, tb = f"{type(status[1]).__name__}: {status[1]}", status[1], status[2]
        elif not t.successful():
            why, exc, tb = f"task {t.id}: {t.result}", None, t.std_output
        else:  # the call could not even start the node: the library says why
            why, exc, tb = f"task {t.id} could not run the node", None, str(status)
        self.m.log_debug_app(f"dask key {key!r} failed (attempt {self.attempts[key]}): {why}")
        if self.attempts[key] < self.opts.retries:
            self.queue.append(key)
            return
        detail = f"{why}\n{tb}" if tb else why
        raise DaskVineError(key, detail, exc, tb) from exc

    def _prune(self, key: Hashable) -> None:
        if self.dag.prune_depth < 1:
            return
        for dep in self.dag.get_dependencies(key):
            h = self.dag.get_result(dep)
            if h.file is not None and h.file._type == cvine.VINE_TEMP and self.dag.prunable(dep):
                self.m.prune_file(h.file)

    def _finish(self) -> None:
        if self.progress:
            self.progress.stop()
        if self.running:
            for _key, _file, library in self.running.values():
                if library is not None:
                    self.libraries.done(library)
            self.running.clear()
            self.m.cancel_all_by_tag(self.tag)
            while self.m.wait_for_tag(self.tag, 0) is not None:
                pass
        for f in self.files:
            self.m.undeclare_file(f)
        self.files.clear()

    # ------------------------------------------------------------------ one task
    def _submit(self, key: Hashable) -> None:
        node = self.dag.node(key)
        payload = self.payload(key)
        inline, files, inputs, size = {}, {}, [], 0
        for i, dep in enumerate(self.dag.get_dependencies(key)):
            h = self.dag.get_result(dep)
            if h.file is None:
                inline[dep] = h.inline
                size += len(h.inline)
            else:
                files[dep] = name = f"d{i}"
                inputs.append((h.file, name))
                size += max(1, len(h.file))
        temp = self.opts.worker_transfers and not self._keep_here(key)
        value_file = self.m.declare_temp() if temp else self.m.declare_buffer(None, cache=True)
        self.files.append(value_file)
        args = (payload, inline, files, "v", self.opts.wrapper)
        library = None if self.libraries is None else self.libraries.pick()
        if library is None and self.opts.init_command:
            t = _PrefixedPythonTask(self.opts.init_command, execute_graph_vertex, *args)
        elif library is None:
            t = PythonTask(execute_graph_vertex, *args)
        else:
            t = FunctionCall(library, "execute_graph_vertex", *args)
        for f, name in inputs:
            t.add_input(f, name)
        t.add_output(value_file, "v")
        self._describe(t, key, node, size)
        self.running[self.m.submit(t)] = (key, value_file, library)

    def _keep_here(self, key: Hashable) -> bool:
        if key in self.keep:
            return True
        fn = self.opts.checkpoint_fn
        return bool(fn is not None and fn(self.dag, key))

    def _describe(self, t: Any, key: Hashable, node: Any, input_size: int) -> None:
        category = str(getattr(node, "func", "dask")).replace(" ", "_") or "dask"
        t.set_category(category)
        t.set_tag(self.tag)
        if self.libraries is None:  # the libraries carry these for function calls
            self.opts.decorate(self.m, t)
            if category not in self.categories_set:
                if self.opts.resources:
                    self.m.set_category_resources_max(category, self.opts.resources)
                if self.opts.resources_mode is not None:  # sized from measurements
                    self.m.set_category_mode(category, self.opts.resources_mode)
        else:  # a call runs in its own sandbox: extra files must be there too
            for f, name in self.opts.extra_files.items():
                t.add_input(f, name)
        self.categories_set.add(category)
        t.set_priority(self._priority(key, category, input_size))

    def _priority(self, key: Hashable, category: str, input_size: int) -> float:
        mode = self.opts.priority_mode
        if mode == "largest-input-first":
            return float(input_size)
        if mode == "random":
            return random.random()
        if mode == "depth-first":
            return float(self.dag.depth_of(key))
        if mode == "breadth-first":
            return -float(self.dag.depth_of(key))
        if mode in ("FIFO", "LIFO"):
            n = float(next(self.order))
            return -n if mode == "FIFO" else n
        times = self.category_times.get(category)
        mean = sum(times) / len(times) if times else 0.0
        return mean if mode == "longest-category-first" else -mean


class _PrefixedPythonTask(PythonTask):
    """A PythonTask whose command runs after ``prefix`` (e.g. setting up an environment)."""

    def __init__(self, prefix: str, func: Callable, *args: Any):
        super().__init__(func, *args)
        self._prefix = prefix

    def submit_finalize(self) -> None:
        super().submit_finalize()
        self._command = f"{self._prefix} {self._command}"


def _flatten(keys: Any):
    if isinstance(keys, list):
        for k in keys:
            yield from _flatten(k)
    else:
        yield keys
