"""The task result cache behind ``Manager.enable_tasks_cache`` (api.md §15).

Theory of operation. ``TaskCache`` owns everything the cache knows: the records replayed from
its log, the fingerprints of the tasks submitted while it is enabled, and the hits waiting to
be returned. The manager calls it at four points::

    submit(task) ──lookup(task)──► hit?  yes: queue a CachedTask, return its uuid
                                         no:  submitted(task, id) remembers the fingerprint
    wait*()      ──wait(...)─────► a queued hit first; else the engine's task, and when it
                                   succeeded, record(): outputs → cache_dir, a line → log
    empty()      ──hits──────────► false while hits are queued
    declare_temp ──temp_path()───► a real file in cache_dir (its content can be copied)

A fingerprint is a sha256 over what decides a task's result: its kind and command (or, for a
PythonTask, the function's code, defaults, closure and the functions it calls, plus the
arguments; for a FunctionCall the library, function name and arguments), its environment
variables, its output names and the content of every input keyed by sandbox name. An input
without content on this machine (a URL, a temp on a worker) makes the task uncacheable: it
runs and is not recorded. An input that is the output of a task still running cannot be
hashed yet: that task is not looked up, and is fingerprinted when it finishes.

The log is text, one JSON object per line after a ``#`` header; a record is only trusted once
its line is complete and its outputs are in ``cache_dir``, so a torn or hand-edited line is
skipped (with a line in the debug log) when the log is replayed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import time
import types
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle

from . import cvine
from .core import cachenames
from .python_task import PythonTask, PythonTaskNoResult
from .result_task import ResultTask
from .serverless import FunctionCall
from .task import RESOURCE_FIELDS, FunctionCallNoResult, ResourceSummary, Task

if TYPE_CHECKING:
    from .core.debuglog import DebugLog
    from .core.engine import Engine
    from .file import File
    from .manager import Manager

LOG_HEADER = (
    '# ndcctools.taskvine tasks cache log: one JSON object per line, {"type": "COMPLETED", '
    '"fingerprint", "kind", "result", "exit_code", "std_output", "outputs" (sandbox name or '
    '"result" -> file in the cache directory), "category", "resources", "hostname", '
    '"timestamp"}\n')

_INTERNAL_PYTHON = re.compile(r"[wfao]_\d+\Z")  # PythonTask wrapper, function, args, result
_INTERNAL_CALL = ("infile", "outfile")
_ENV_PREFIX = "__vine_env_"
_DEFERRED = "deferred"  # fingerprint taken when the task finishes (an input was pending)


class Uncacheable(Exception):
    """The task's result cannot be tied to content on this machine."""


# ---------------------------------------------------------------------------- fingerprints
class _Hasher:
    """A sha256 fed with tagged, length-prefixed fields, so no two values feed equal bytes."""

    def __init__(self, file_digest: Callable[[str], str]):
        self._h = hashlib.sha256()
        self._file_digest = file_digest
        self._seen: set[int] = set()

    def field(self, tag: str, data: bytes | str = b"") -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        self._h.update(f"{tag}:{len(data)}:".encode())
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    # -------------------------------------------------------------- Python values
    def value(self, v: Any) -> None:
        if isinstance(v, (str, bytes)):
            self.field(type(v).__name__, v)
        elif v is None or isinstance(v, (bool, int, float, complex)):
            self.field(type(v).__name__, repr(v))
        elif isinstance(v, (list, tuple)):
            self.field(type(v).__name__, str(len(v)))
            for item in v:
                self.value(item)
        elif type(v) is dict:
            self.field("dict", str(len(v)))
            for k, item in v.items():
                self.value(k)
                self.value(item)
        elif isinstance(v, (set, frozenset)):  # string hashing is randomized per process
            self.field(type(v).__name__, "".join(sorted(self._digest_of(i) for i in v)))
        elif isinstance(v, types.FunctionType):
            self.function(v)
        elif isinstance(v, types.MethodType):
            self.field("method")
            self.value(v.__self__)
            self.value(v.__func__)
        elif isinstance(v, functools.partial):
            self.field("partial")
            self.value(v.func)
            self.value(v.args)
            self.value(v.keywords)
        elif isinstance(v, (type, types.BuiltinFunctionType, types.ModuleType)):
            self.field("named", f"{getattr(v, '__module__', '')}.{v.__qualname__}"
                       if not isinstance(v, types.ModuleType) else v.__name__)
        else:
            try:
                self.field("pickle", cloudpickle.dumps(v, protocol=5))
            except Exception as e:
                raise Uncacheable(f"an argument cannot be pickled: {e}") from None

    def _digest_of(self, v: Any) -> str:
        sub = _Hasher(self._file_digest)
        sub._seen = self._seen
        sub.value(v)
        return sub.hexdigest()

    def function(self, fn: types.FunctionType) -> None:
        """The function's own identity: name, code, defaults, closure values and the
        functions it reaches through its globals (not other global values)."""
        self.field("function", f"{fn.__module__}.{fn.__qualname__}")
        if id(fn) in self._seen:
            return
        self._seen.add(id(fn))
        self._code(fn.__code__)
        self.value(fn.__defaults__)
        self.value(fn.__kwdefaults__)
        for cell in fn.__closure__ or ():
            try:
                self.value(cell.cell_contents)
            except ValueError:  # an empty cell
                self.field("empty-cell")
        for name in sorted(_global_names(fn.__code__)):
            g = fn.__globals__.get(name)
            if isinstance(g, types.FunctionType):
                self.field("global", name)
                self.function(g)

    def _code(self, code: types.CodeType) -> None:
        self.field("code", code.co_code)
        self.field("names", "\0".join(code.co_names))
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._code(const)
            else:
                self.value(const)

    # -------------------------------------------------------------- files
    def inputs(self, task: Task, internal: Callable[[str], bool]) -> None:
        contexts = {name: i for i, name in enumerate(task._contexts)}
        named = []
        for m in task._inputs:
            if internal(m.remote_name):
                continue
            key = (f"{_ENV_PREFIX}{contexts[m.remote_name]}" if m.remote_name in contexts
                   else m.remote_name)
            named.append((key, m.file))
        for key, file in sorted(named, key=lambda kf: kf[0]):
            self.field("input", key)
            self.file(file)

    def file(self, file: File) -> None:
        if file._type == cvine.VINE_FILE:
            self.field("content", self._file_digest(file._source))
        elif file._type == cvine.VINE_BUFFER:
            self.field("buffer", file._data or b"")
        elif file._type == cvine.VINE_MINI_TASK:  # the recipe and its inputs' content
            mini = file._minitask
            self.field("minitask", f"{mini._command}\0{file._source}")
            self.inputs(mini, _never)
        else:
            raise Uncacheable(f"input {file._source!r} has no content on this machine")


def _never(name: str) -> bool:
    return False


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _internal_names(task: Task) -> Callable[[str], bool]:
    """Which sandbox names the library added itself (not part of the user's task)."""
    if isinstance(task, PythonTask):
        return lambda name: _INTERNAL_PYTHON.match(name) is not None
    if isinstance(task, FunctionCall):
        return lambda name: name in _INTERNAL_CALL
    return _never


def _kind(task: Task) -> str:
    if isinstance(task, PythonTask):
        return "python" if task._serialize_output else "python-raw"
    if isinstance(task, FunctionCall):
        return "function-call"
    return "task"


def fingerprint(task: Task, file_digest: Callable[[str], str]) -> str:
    """The sha256 that names ``task``'s result; raises ``Uncacheable``."""
    if task._library_provided is not None:
        raise Uncacheable("a library task")
    h = _Hasher(file_digest)
    kind = _kind(task)
    h.field("kind", kind)
    if isinstance(task, PythonTask):
        h.value(task._func)
        h.value(task._fn_args)
        h.value(task._fn_kwargs)
    elif isinstance(task, FunctionCall):
        h.field("library", task._library_required or "")
        h.field("call", task._command)
        h.value(task._fn_args)
        h.value(task._fn_kwargs)
    else:
        h.field("command", task._command)
    h.field("env", json.dumps(sorted(task._env.items())))
    internal = _internal_names(task)
    h.inputs(task, internal)
    for m in sorted(task._outputs, key=lambda m: m.remote_name):
        if not internal(m.remote_name):
            h.field("output", m.remote_name)
    return h.hexdigest()


def digest_path(path: str) -> str:
    """sha256 of a file's content, or of a directory's names and contents."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                h.update(f"{os.path.relpath(full, path)}\0{digest_path(full)}\0".encode())
        return h.hexdigest()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError as e:
        raise Uncacheable(f"input {path!r} cannot be read: {e}") from None
    return h.hexdigest()


# ---------------------------------------------------------------------------- hits
class _ResourceView:
    """Recorded resource values by name; a field not recorded reads as 0."""

    def __init__(self, values: dict):
        self._values = values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._values.get(name, 0)

    def __repr__(self) -> str:
        return f"ResourceView({self._values})"


class CachedTask:
    """A cache hit, returned by ``wait`` in place of the task that did not need to run. It
    reads like a finished ``Task``; ``id`` is a uuid string (what ``submit`` returned)."""

    hostname = addrport = "CACHED"
    limits_exceeded = None
    state = "DONE"

    def __init__(self, record: dict, task: Task, cache_dir: str, manager: Manager):
        self.id = str(uuid.uuid4())
        self._record = record
        self._dir = cache_dir
        self._manager_ref = weakref.ref(manager)
        self.tag = task._tag
        self.category = task._category
        self.command = task._command
        self.key = getattr(task, "key", None)  # set by DaskVine on its tasks
        self.sexpr = getattr(task, "sexpr", None)
        self._output_file: File | None = None
        self._output: Any = _UNSET
        resources = record.get("resources") or {}
        self.resources_measured = _ResourceView(resources.get("measured") or {})
        self.resources_allocated = _ResourceView(resources.get("allocated") or {})
        self.resources_requested = _ResourceView(resources.get("requested") or {})

    @property
    def manager(self) -> Manager | None:
        return self._manager_ref()

    @property
    def result(self) -> str:
        return self._record.get("result", "success")

    @property
    def exit_code(self) -> int:
        return self._record.get("exit_code", 0)

    @property
    def std_output(self) -> str | None:
        return self._record.get("std_output")

    def completed(self) -> bool:
        return True

    def successful(self) -> bool:
        return True

    def get_metric(self, name: str) -> int:
        return 0

    def _result_path(self) -> str | None:
        name = self._record["outputs"].get("result")
        return None if name is None else os.path.join(self._dir, name)

    @property
    def output_file(self) -> File | None:
        """The cached result as a local file (an input for later tasks)."""
        path = self._result_path()
        m = self.manager
        if self._output_file is None and path is not None and m is not None:
            self._output_file = m.declare_file(path, cache=True)
        return self._output_file

    @property
    def output(self) -> Any:
        if self._output is _UNSET:
            self._output = self._load_output()
        return self._output

    def _load_output(self) -> Any:
        kind = self._record.get("kind")
        path = self._result_path()
        if kind == "task" or path is None:
            return self.std_output
        with open(path, "rb") as f:
            data = f.read()
        if kind == "python-raw":
            return data
        try:
            value = cloudpickle.loads(data)
        except Exception as e:
            return PythonTaskNoResult() if kind == "python" else FunctionCallNoResult(str(e))
        if kind == "function-call":
            return value["Result"] if value.get("Success") else value.get("Reason")
        return value

    def __repr__(self) -> str:
        return f"<CachedTask {self.id} {self.command[:40]!r}>"


_UNSET = object()


# ---------------------------------------------------------------------------- the cache
class TaskCache:
    """The one owner of the cache's state for one manager."""

    def __init__(self, manager: Manager, engine: Engine, debug: DebugLog, cache_dir: str,
                 log_file: str):
        self._manager_ref = weakref.ref(manager)
        self._engine = engine
        self._debug = debug
        self.cache_dir = os.path.abspath(cache_dir)
        self.log_file = os.path.abspath(log_file)
        os.makedirs(self.cache_dir, exist_ok=True)
        os.makedirs(os.path.dirname(self.log_file), exist_ok=True)
        self._records: dict[str, dict] = {}
        self._submitted: dict[int, str] = {}  # task id -> fingerprint (or _DEFERRED)
        self._pending_outputs: dict[str, int] = {}  # cache name -> tasks still producing it
        self._next: str | None = None  # fingerprint of the task being submitted
        self._digests: dict[tuple, str] = {}  # (path, size, mtime, inode) -> content digest
        self.hits: deque[CachedTask] = deque()
        self._replay()

    # -------------------------------------------------------------- submit
    def lookup(self, task: Task) -> CachedTask | None:
        """At submit, before the task is finalized: a queued hit, or None (then
        ``submitted`` follows)."""
        self._next = None
        if any(m.file._cachename in self._pending_outputs for m in task._inputs):
            self._next = _DEFERRED
            return None
        try:
            fp = fingerprint(task, self._file_digest)
        except (Uncacheable, RecursionError) as e:
            self._debug.write("vine", f"tasks cache: not cached: {e}")
            return None
        record = self._records.get(fp)
        if record is None:
            self._next = fp
            return None
        try:
            self._restore_outputs(task, record)
        except OSError as e:
            self._debug.write("vine", f"tasks cache: hit {fp[:16]} not usable, runs: {e}")
            self._next = fp
            return None
        hit = CachedTask(record, task, self.cache_dir, self._manager())
        self.hits.append(hit)
        self._debug.write("vine", f"tasks cache: hit {fp[:16]} returned as {hit.id}")
        return hit

    def submitted(self, task: Task, task_id: int) -> None:
        fp, self._next = self._next, None
        if fp is None:
            return
        self._submitted[task_id] = fp
        for m in task._outputs:
            name = m.file._cachename
            self._pending_outputs[name] = self._pending_outputs.get(name, 0) + 1

    def _restore_outputs(self, task: Task, record: dict) -> None:
        """Put the cached outputs where the skipped task would have left them."""
        outputs = record["outputs"]
        for m in task._outputs:
            name = outputs.get(m.remote_name)
            if name is not None:
                _copy_into(os.path.join(self.cache_dir, name), m.file)
        if isinstance(task, ResultTask) and "result" in outputs:
            task._output_file = self._manager().declare_file(
                os.path.join(self.cache_dir, outputs["result"]), cache=True)

    # -------------------------------------------------------------- wait
    def wait(self, timeout: float | None, tag: str | None, task_id: Any) -> Any:
        hit = self._take_hit(tag, task_id)
        if hit is not None:
            return hit
        if isinstance(task_id, str):
            return None  # a hit's uuid that was already returned
        task = self._engine.wait(timeout, tag=tag, task_id=task_id)
        if task is not None:
            self._finished(task)
        return task

    def _take_hit(self, tag: str | None, task_id: Any) -> CachedTask | None:
        for i, hit in enumerate(self.hits):
            if (tag is None or hit.tag == tag) and (task_id == -1 or hit.id == task_id):
                del self.hits[i]
                return hit
        return None

    def _finished(self, task: Task) -> None:
        fp = self._submitted.pop(task._record.task_id, None)
        if fp is None:
            return
        for m in task._outputs:
            name = m.file._cachename
            left = self._pending_outputs.get(name, 0) - 1
            if left > 0:
                self._pending_outputs[name] = left
            else:
                self._pending_outputs.pop(name, None)
        if not task.successful() or not _call_succeeded(task):
            return
        try:
            if fp == _DEFERRED:
                fp = fingerprint(task, self._file_digest)
            self._record(fp, task)
        except (Uncacheable, RecursionError, OSError) as e:
            self._debug.write("vine", f"tasks cache: task {task.id} not recorded: {e}")

    # -------------------------------------------------------------- the record
    def _record(self, fp: str, task: Task) -> None:
        internal = _internal_names(task)
        outputs: dict[str, str] = {}
        result_file = getattr(task, "_output_file", None)
        extra = 0
        for m in sorted(task._outputs, key=lambda m: m.remote_name):
            if m.file is result_file:
                key, name = "result", f"{fp}.output"
            elif internal(m.remote_name):
                continue
            else:
                key, name = m.remote_name, f"{fp}.{extra}.output"
                extra += 1
            _copy_out(m.file, os.path.join(self.cache_dir, name))
            outputs[key] = name
        record = {
            "type": "COMPLETED", "fingerprint": fp, "kind": _kind(task), "result": task.result,
            "exit_code": task.exit_code, "std_output": task.std_output, "outputs": outputs,
            "category": task.category, "resources": _resources(task),
            "hostname": task.hostname, "timestamp": time.time(),
        }
        self._append(json.dumps(record, separators=(",", ":")) + "\n")
        self._records[fp] = record

    def _append(self, line: str) -> None:
        fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size == 0:
                os.write(fd, LOG_HEADER.encode())
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _replay(self) -> None:
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as f:
                lines = list(f)
        except FileNotFoundError:
            return
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.startswith("#"):
                continue
            problem = self._replay_line(line)
            if problem:
                self._debug.write("vine", f"tasks cache: skipping line {number} of "
                                          f"{self.log_file}: {problem}")
        self._debug.write("vine", f"tasks cache: {len(self._records)} results from "
                                  f"{self.log_file}")

    def _replay_line(self, line: str) -> str | None:
        """Take one record; the reason it was skipped, or None."""
        try:
            record = json.loads(line)
        except ValueError:
            return "not a complete JSON record"
        if not isinstance(record, dict) or record.get("type") != "COMPLETED":
            return "not a COMPLETED record"
        fp, outputs = record.get("fingerprint"), record.get("outputs")
        if not isinstance(fp, str) or not isinstance(outputs, dict):
            return "no fingerprint or outputs"
        for name in outputs.values():
            if not isinstance(name, str) or not os.path.isfile(os.path.join(self.cache_dir,
                                                                             name)):
                return f"output {name!r} is not in {self.cache_dir}"
        self._records[fp] = record
        return None

    # -------------------------------------------------------------- helpers
    def temp_path(self) -> str:
        """Where ``declare_temp`` puts a temp while the cache is enabled."""
        path = os.path.join(self.cache_dir, "temp", cachenames.random_name("temp"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def _file_digest(self, path: str) -> str:
        try:
            st = os.stat(path)
        except OSError as e:
            raise Uncacheable(f"input {path!r} cannot be read: {e}") from None
        key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
        digest = self._digests.get(key)
        if digest is None:
            digest = self._digests[key] = digest_path(path)
        return digest

    def _manager(self) -> Manager:
        m = self._manager_ref()
        assert m is not None, "the manager of a tasks cache is gone"
        return m


def _call_succeeded(task: Task) -> bool:
    """A FunctionCall whose function raised still completes: do not remember it."""
    if not isinstance(task, FunctionCall) or task._output_file is None:
        return True
    try:
        return bool(cloudpickle.loads(task._output_file.contents()).get("Success"))
    except Exception:
        return False


def _resources(task: Task) -> dict:
    def values(summary: ResourceSummary) -> dict:
        return {k: getattr(summary, k) for k in RESOURCE_FIELDS if getattr(summary, k) != -1}
    return {"measured": values(task.resources_measured),
            "allocated": values(task.resources_allocated),
            "requested": values(task.resources_requested)}


def _copy_out(file: File, dest: str) -> None:
    """Save an output of a finished task as ``dest`` (atomically)."""
    tmp = f"{dest}.tmp"
    if file._type == cvine.VINE_FILE and os.path.isfile(file._source):
        shutil.copyfile(file._source, tmp)
    elif file._type == cvine.VINE_BUFFER and file._data is not None:
        with open(tmp, "wb") as f:
            f.write(file._data)
    else:
        raise Uncacheable(f"output {file._source!r} is not a file on this machine")
    os.replace(tmp, dest)


def _copy_into(src: str, file: File) -> None:
    """Give a declared output the cached content."""
    if file._type == cvine.VINE_FILE:
        shutil.copyfile(src, file._source)
    elif file._type == cvine.VINE_BUFFER:
        with open(src, "rb") as f:
            file._data = f.read()
        file._size = len(file._data)
