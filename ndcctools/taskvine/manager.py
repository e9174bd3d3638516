"""Manager: the public facade of a TaskVine manager (api.md §3–§6, §9–§13).

The facade checks arguments and translates the public API into calls on the core
(``core.engine.Engine``), which owns the sockets, the task table and the workers. Nothing
runs in the background: workers are served while the program is inside ``wait*()`` (and
``submit()`` never blocks); only a named manager's catalog updates, built inside
``wait*()``, are sent from a thread (``core.catalog_reporter``). Leaving a ``with`` block,
``close()``, garbage collection or interpreter exit (``weakref.finalize``) releases the
workers (or tells them to exit, with ``shutdown=True``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import ssl
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import cloudpickle

from . import __version__, cvine, display, functional
from .core import cachenames, runinfo
from .core.catalog_reporter import CatalogReporter, Sender
from .core.categories import CategoryStats
from .core.debuglog import DebugLog
from .core.engine import Engine
from .core.hungry import hungry as compute_hungry
from .core.runinfo import RunInfo, create_run_info, write_workflow
from .core.scheduling import parse_scheduler
from .core.status import ALIASES as STATUS_KINDS
from .core.status import Stats, report, snapshot, to_json
from .core.taskgraph import TaskGraphLog
from .core.tasks import DONE, READY, RUNNING
from .core.tuning import Tuning
from .core.txnlog import TransactionLog
from .file import File, cache_level
from .items import remove_tree
from .python_task import wrapper_source
from .resources import Resources
from .security import make_self_signed, read_password_file, server_context
from .serverless import EXEC_MODES, LibraryTask, library_files
from .task import Task
from .task_cache import TaskCache
from .transport import bind_listener, raise_open_files_limit
from .utils import port_range_from_environment

_RESOURCE_KEYS = ("cores", "memory", "disk", "gpus", "wall_time")
_CONNECTION_MODES = ("by_ip", "by_hostname", "by_apparent_ip")



def _timeout(timeout: Any) -> float | None:
    """Seconds as upstream reads them: "wait_forever"/-1 block, other negatives mean 5 s."""
    if timeout == "wait_forever" or timeout is None or timeout == -1:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or 'wait_forever', not {timeout!r}")
    return 5.0 if timeout < 0 else float(timeout)


def _port_range(port: Any) -> int | tuple[int, int]:
    """What to bind: ``VINE_PORT`` if set (it overrides the argument, as upstream), else the
    port, the ``[low, high]`` pair, or for 0 the ``TCP_LOW_PORT..TCP_HIGH_PORT`` range when
    ``set_port_range`` (or the environment) gave one."""
    if isinstance(port, bool):
        raise ValueError(f"invalid port {port!r}")
    if isinstance(port, int):
        wanted: int | tuple[int, int] = port
    elif isinstance(port, Sequence) and not isinstance(port, str) and len(port) == 2:
        low, high = int(port[0]), int(port[1])
        if low > high:
            raise TypeError(f"port range {low}..{high}: low is above high")
        wanted = (low, high)
    else:
        raise ValueError(f"port must be an int or a [low, high] pair, not {port!r}")
    env = os.environ.get("VINE_PORT")
    if env:
        try:
            return int(env)
        except ValueError:
            raise ValueError(f"VINE_PORT must be a port number, not {env!r}") from None
    if wanted == 0:
        return port_range_from_environment() or 0
    return wanted


_XROOTD_SCHEMES = ("root://", "roots://", "xroot://", "xroots://")


def _text_arg(value: Any, method: str, name: str) -> str:
    """``value`` if it is a non-empty str, else a TypeError/ValueError naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{method}() takes {name} as a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{method}(): {name} is empty")
    return value


def _file_arg(value: Any, method: str, name: str, paths: bool = False) -> Any:
    """``value`` if it is None or a File (or, with ``paths``, a path str)."""
    if value is None or isinstance(value, File) or paths and isinstance(value, str):
        return value
    kinds = "a File, a path or None" if paths else "a File or None"
    raise TypeError(f"{method}() takes {name} as {kinds}, not {type(value).__name__}")


def _default_x509_proxy() -> str | None:
    """The user's X.509 proxy where grid tools look for it: ``$X509_USER_PROXY``, then
    ``$TMPDIR/x509up_u<uid>`` (``/tmp`` by default); None if neither exists."""
    tmp = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"x509up_u{os.getuid()}")
    for path in (os.environ.get("X509_USER_PROXY"), tmp):
        if path and os.path.isfile(path):
            return path
    return None


def _weak(method: Callable, default: Any = None) -> Callable:
    """``method`` called through a weak reference (``default`` once its object is gone): the
    engine must not keep its Manager alive, since the Manager's finalizer holds the engine."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        bound = ref()
        return default if bound is None else bound(*args)
    return call


def _close_engine(engine: Engine, txn: TransactionLog, debug: DebugLog, info: RunInfo,
                  shutdown: bool, sender: Sender, observers: dict[str, Any],
                  facts: dict[str, Any]) -> None:
    """Teardown, shared by close(), the context manager, GC and interpreter exit."""
    try:
        for server in observers.values():
            server.close()
        observers.clear()
        sender.stop()
        engine.close(shutdown)
    finally:  # whatever failed above, the logs end and are written out
        engine.perf.close()
        write_workflow(info.logs, facts, engine.counters, __version__)
        txn.manager_end()
        debug.write("vine", "manager end")
        txn.close()
        engine.graph.close()
        debug.close()
        shutil.rmtree(info.staging, ignore_errors=True)


class Manager:
    """A TaskVine manager: declare files, submit tasks, wait for them."""

    _tasks_cache: TaskCache | None = None  # set by enable_tasks_cache

    def __init__(self, port: int | Sequence[int] = cvine.VINE_DEFAULT_PORT, name: str | None = None,
                 shutdown: bool = False, run_info_path: str | None = None,
                 run_info_template: str | None = None, staging_path: str | None = None,
                 ssl: Any = None, init_fn: Any = None, status_display_interval: Any = None,
                 prometheus_port: int | None = None, dashboard_port: int | None = None):
        for arg, value in (("prometheus_port", prometheus_port), ("dashboard_port",
                                                                   dashboard_port)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value <= 65535):
                raise ValueError(f"{arg} must be a port number (0: any free port), not "
                                 f"{value!r}")
        wanted = _port_range(port)
        raise_open_files_limit()  # a connection per worker: thousands of them
        self._info = create_run_info(run_info_path, run_info_template, staging_path)
        try:
            listener = bind_listener(wanted)
            listener.setblocking(False)
        except OSError as e:
            raise Exception(f"Could not create manager on: port {wanted}, run-info path "
                            f"{self._info.runtime}, staging path {self._info.staging}: {e}") from e
        pid = os.getpid()
        self._debug = DebugLog(os.path.join(self._info.logs, "debug"), pid=pid)
        self._txn = TransactionLog(os.path.join(self._info.logs, "transactions"), pid=pid)
        self._tuning = Tuning()
        graph = TaskGraphLog(os.path.join(self._info.logs, "taskgraph"))
        self._engine = Engine(listener, self._tuning, self._debug, self._txn, graph)
        self._tls, self._ssl_files = _tls_context(ssl, self._info.runtime)
        self._password: bytes | None = None
        self._engine.secure(self._tls, None)
        if self._tls is not None:
            self._debug.write("vine", f"TLS on: key {self._ssl_files[0]}, certificate "
                              f"{self._ssl_files[1]}")
        self._engine.status_builder = _weak(self._status_bytes, b"[]")
        self._engine.library_logs = self._info.library_logs
        self._name = name
        self._shutdown = shutdown
        self._priority = 0
        self._started_us = int(time.time() * 1e6)
        self._uuid = str(uuid.uuid4())
        self._files: dict[str, File] = {}
        self._functions: dict[int, tuple[Any, File]] = {}  # id(function) -> (function, file)
        self._wrapper: File | None = None
        self._properties: dict[str, str] = {}
        self._preferred_connection = "by_ip"
        self._catalog = CatalogReporter(_weak(self._catalog_record), self._debug, self._tuning)
        self._engine.periodic = self._catalog.tick
        self._txn.manager_start()
        self._debug.write("tcp", f"listening on port {self.port}")
        self._debug.write("vine", f"Manager is listening on port {self.port}.")
        self._observers: dict[str, Any] = {}  # "prometheus", "dashboard": their servers
        self._facts = {"name": name, "port": self.port, "uuid": self._uuid,  # workflow.json
                       "started_us": self._started_us}
        self._finalizer = weakref.finalize(
            self, _close_engine, self._engine, self._txn, self._debug, self._info,
            shutdown, self._catalog.sender, self._observers, self._facts)
        self._start_observers(prometheus_port, dashboard_port)
        self._displays: list[Any] = []  # refreshed by wait(): a notebook widget, a progress line
        widget = display.Widget.start(self, status_display_interval)
        if widget is not None:
            self._displays.append(widget)
        if init_fn is not None:
            init_fn(self)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the workers (tell them to exit with ``shutdown=True``) and close logs; a
        named manager sends the catalogs a last update first."""
        if self._finalizer.alive:
            self._catalog.close()
        self._finalizer()

    @property
    def port(self) -> int:
        return self._engine.port

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def using_ssl(self) -> bool:
        return self._tls is not None

    @property
    def ssl_files(self) -> tuple[str, str] | None:
        """``(key, certificate)`` of the manager's TLS, or None (ours)."""
        return self._ssl_files

    def set_password(self, password: str | bytes) -> None:
        """Connections from now on must prove they know ``password`` (mutual
        challenge/response; it never crosses the wire). Workers use ``--password FILE``,
        whose bytes (a trailing newline included) must be the same."""
        if isinstance(password, str):
            password = password.encode()
        if not isinstance(password, bytes) or not password:
            raise ValueError("set_password() needs a non-empty str or bytes")
        self._password = password
        self._engine.secure(self._tls, password)
        self._debug.write("vine", "connections must now present the password")

    def set_password_file(self, path: str) -> bool:
        """As ``set_password`` with the raw bytes of a file; False if it cannot be read."""
        try:
            password = read_password_file(path)
        except (OSError, ValueError) as e:
            self._debug.write("vine", f"could not read password file {path}: {e}")
            return False
        self.set_password(password)
        return True

    @property
    def runtime_directory(self) -> str:
        return self._info.runtime

    @property
    def logging_directory(self) -> str:
        return self._info.logs

    @property
    def staging_directory(self) -> str:
        return self._info.staging

    @property
    def library_logging_directory(self) -> str:
        return self._info.library_logs

    @property
    def cache_directory(self) -> str:
        return self._info.cache

    def _start_observers(self, prometheus_port: int | None, dashboard_port: int | None) -> None:
        """The HTTP servers that let people watch the run; they hold the manager only
        weakly, so that it can still be collected and closed."""
        me = weakref.proxy(self)
        if prometheus_port is not None:
            from . import prometheus  # prometheus_client is imported only when asked for
            self._observers["prometheus"] = prometheus.start(me, prometheus_port)
        if dashboard_port is not None:
            from . import dashboard
            self._observers["dashboard"] = dashboard.start(me, dashboard_port)
        for kind, server in self._observers.items():
            self._debug.write("vine", f"{kind} serving on port {server.port}")

    @property
    def prometheus_port(self) -> int | None:
        """The port serving Prometheus metrics (None: none, or no longer)."""
        server = self._observers.get("prometheus")
        return server.port if server is not None else None

    @property
    def dashboard_url(self) -> str | None:
        """Where the live dashboard is served (None: none, or no longer)."""
        server = self._observers.get("dashboard")
        return server.url if server is not None else None

    def set_name(self, name: str) -> None:
        """Advertise the manager to the catalogs under project ``name`` (from the next
        ``wait``, then every ``update-interval`` seconds)."""
        self._name = self._facts["name"] = name
        self._catalog.soon()

    def set_priority(self, priority: int) -> None:
        self._priority = int(priority)

    def set_property(self, name: str, value: str) -> None:
        self._properties[str(name)] = str(value)

    # ------------------------------------------------------------------ tasks
    def submit(self, task: Task) -> int:
        """Queue ``task``; returns its id."""
        if not isinstance(task, Task):
            raise TypeError(f"submit() takes a Task, not {type(task).__name__}")
        rec = task._record
        if rec is not None and rec.state != DONE:
            raise ValueError("invalid task description: this task is already submitted")
        cache = self._tasks_cache
        if cache is not None and (hit := cache.lookup(task)) is not None:
            return hit.id  # a uuid: the cached result is queued for wait()
        task._manager = self
        task.submit_finalize()
        for mount in (*task._inputs, *task._outputs):
            if mount.file._manager is not None and mount.file._manager is not self:
                raise ValueError(f"invalid task description: {mount.file!r} was declared on "
                                 "another manager")
        rec = self._engine.submit(task)
        task._record = rec
        if cache is not None:
            cache.submitted(task, rec.task_id)
        return rec.task_id

    def wait(self, timeout: Any = "wait_forever") -> Task | None:
        """Serve workers until a task finishes (returned) or ``timeout`` s pass (None)."""
        if self._displays:
            self._refresh_displays()
        if self._tasks_cache is not None:
            return self._tasks_cache.wait(_timeout(timeout), None, -1)
        return self._engine.wait(_timeout(timeout))

    def _refresh_displays(self) -> None:
        for shown in list(self._displays):
            try:
                shown.tick()
            except Exception as e:  # noqa: BLE001 - a display never breaks the program
                self._displays.remove(shown)
                self._debug.write("vine", f"display {type(shown).__name__} switched off: {e}")

    def show_progress(self, on: bool = True, stream: Any = None) -> None:
        """Draw one progress line (tasks by state, workers, tasks/s) on ``stream`` (stderr)
        from ``wait``, at most twice a second; off by default."""
        for shown in [d for d in self._displays if isinstance(d, display.ProgressLine)]:
            self._displays.remove(shown)
            shown.close()
        if on:
            self._displays.append(display.ProgressLine(self, stream))

    def _repr_html_(self) -> str:
        """The manager in a notebook: the run, tasks by state, workers, categories."""
        return display.summary_html(self)

    def wait_for_tag(self, tag: str | None, timeout: Any = "wait_forever") -> Task | None:
        if self._tasks_cache is not None:
            return self._tasks_cache.wait(_timeout(timeout), tag, -1)
        return self._engine.wait(_timeout(timeout), tag=tag)

    def wait_for_task_id(self, task_id: int | str, timeout: Any = "wait_forever") -> Task | None:
        """Wait for task ``task_id`` (or for the cache hit whose uuid ``submit`` returned)."""
        if self._tasks_cache is not None:
            wanted = task_id if isinstance(task_id, str) and "-" in task_id else int(task_id)
            return self._tasks_cache.wait(_timeout(timeout), None, wanted)
        return self._engine.wait(_timeout(timeout), task_id=int(task_id))

    def empty(self) -> bool:
        if self._engine.tasks.records:
            return False
        return self._tasks_cache is None or not self._tasks_cache.hits

    def enable_tasks_cache(self, cache_dir: str = "vine-cache-outputs",
                           log_file: str = "vine-cache.txlog") -> None:
        """Remember the results of tasks that succeed, in ``cache_dir`` and ``log_file``, and
        from now on answer a task identical to a remembered one (same command or function and
        arguments, same input contents, same environment) from them, without running it:
        ``submit`` then returns a uuid and ``wait`` a stand-in for the finished task. The log
        of earlier runs is read now. Temps declared from now on are files in ``cache_dir``."""
        self._tasks_cache = TaskCache(self, self._engine, self._debug, cache_dir, log_file)

    def hungry(self) -> int:
        e = self._engine
        workers = [w for w in e.workers.values() if w.has_resources]
        total, committed = Resources(), Resources()
        for w in workers:
            total.add(w.total)
            committed.add(w.committed)
        depth = int(self._tuning.attempt_schedule_depth)
        sample = []
        for rec in e.tasks.ready_in_order():
            if len(sample) >= depth:
                break
            t = rec.task
            sample.append(Resources(t._cores, t._memory, t._disk, t._gpus))
        return compute_hungry(len(workers), total, committed, e.tasks.count(RUNNING), sample,
                              e.tasks.count(READY), self._tuning.hungry_minimum,
                              self._tuning.hungry_minimum_factor)

    def tasks_left_count(self, ntasks: int) -> None:
        self._tasks_left_hint = max(0, int(ntasks))

    def set_min_task_id(self, minid: int) -> int:
        table = self._engine.tasks
        table.next_id = max(table.next_id, int(minid))
        return table.next_id

    def task_state(self, task_id: int) -> int | None:
        rec = self._engine.tasks.records.get(task_id)
        return None if rec is None else rec.state

    def cancel_by_task_id(self, task_id: int) -> int:
        rec = self._engine.tasks.records.get(task_id)
        return int(rec is not None and self._engine.cancel(rec))

    def cancel_by_task_tag(self, tag: str) -> int:
        for rec in list(self._engine.tasks.records.values()):
            if rec.task._tag == tag and self._engine.cancel(rec):
                return 1
        return 0

    def cancel_all_by_tag(self, tag: str) -> int:
        return sum(self._engine.cancel(rec) for rec in list(self._engine.tasks.records.values())
                   if rec.task._tag == tag)

    def cancel_by_category(self, category: str) -> int:
        return sum(self._engine.cancel(rec) for rec in list(self._engine.tasks.records.values())
                   if rec.task._category == category)

    def cancel_all(self) -> int:
        records = list(self._engine.tasks.records.values())
        for rec in records:
            self._engine.cancel(rec)
        return len(records)

    # ------------------------------------------------------------------ files
    def _register(self, file: File) -> File:
        known = self._files.get(file._cachename)
        if known is None:
            file._manager = self
            self._files[file._cachename] = known = file
        self._engine.graph.file(known)
        return known

    def declare_file(self, path: str, cache: Any = False, peer_transfer: bool = True,
                     unlink_when_done: bool = False) -> File:
        """A file or directory on this machine, as a task input or output."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"declare_file() takes a path, not {type(path).__name__}")
        path = os.fspath(path)
        level = cache_level(cache)
        flags = (0 if peer_transfer else cvine.VINE_PEER_NOSHARE) | (
            cvine.VINE_UNLINK_WHEN_DONE if unlink_when_done else 0)
        name = cachenames.local_file_name(path, level)
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        return self._register(File(cvine.VINE_FILE, path, name, level, flags, size))

    def declare_buffer(self, buffer: bytes | str | None = None, cache: Any = False,
                       peer_transfer: bool = True) -> File:
        """Bytes in memory as an input, or (empty) as an output read with ``contents()``."""
        if isinstance(buffer, str):
            buffer = buffer.encode()
        if buffer is not None and not isinstance(buffer, (bytes, bytearray, memoryview)):
            raise TypeError(f"declare_buffer() takes bytes or str, not {type(buffer).__name__}")
        data = bytes(buffer) if buffer is not None else None
        level = cache_level(cache)
        flags = 0 if peer_transfer else cvine.VINE_PEER_NOSHARE
        name = cachenames.buffer_name(data, level)
        return self._register(File(cvine.VINE_BUFFER, "buffer", name, level, flags,
                                   size=len(data or b""), data=data))

    def _internal_buffer(self, data: bytes | None, level: int = 0) -> File:
        """A buffer the library makes for its own tasks (PythonTask arguments and results):
        not registered, so it is forgotten with the task that holds it."""
        f = File(cvine.VINE_BUFFER, "buffer", cachenames.random_name("buffer"), level, 0,
                 size=len(data or b""), data=data)
        f._manager = self
        return f

    def _pytask_wrapper(self) -> File:
        """The PythonTask wrapper program, sent once to each worker and kept there."""
        if self._wrapper is None:
            self._wrapper = self._internal_buffer(wrapper_source(), cvine.VINE_CACHE_LEVEL_WORKFLOW)
        return self._wrapper

    def _function_file(self, func: Any) -> File:
        """The cloudpickled ``func``, one cached buffer per function object."""
        known = self._functions.get(id(func))
        if known is None or known[0] is not func:
            data = cloudpickle.dumps(func)
            known = self._functions[id(func)] = (
                func, self._internal_buffer(data, cvine.VINE_CACHE_LEVEL_WORKFLOW))
        return known[1]

    def undeclare_function(self, func: Any) -> None:
        """Forget the serialized copy of a PythonTask function (and drop it from workers)."""
        known = self._functions.pop(id(func), None)
        if known is not None:
            self._engine.forget_file(known[1]._cachename)

    def fetch_file(self, file: File) -> str | None:
        """The contents of ``file`` as text: read locally, or pulled back from a worker that
        holds a replica (temps, URLs); ``None`` if no copy is available."""
        if not isinstance(file, File):
            raise TypeError("fetch_file() takes a File")
        if file._type in (cvine.VINE_FILE, cvine.VINE_BUFFER) or file._data is not None:
            try:
                return file.contents().decode("utf-8", "replace")
            except (OSError, ValueError):
                return None
        data = self._engine.fetch(file)
        return None if data is None else data.decode("utf-8", "replace")

    def undeclare_file(self, file: File) -> None:
        """Forget ``file``: remove it from workers' caches; with ``unlink_when_done``, delete
        the local path."""
        if not isinstance(file, File):
            raise TypeError("undeclare_file() takes a File")
        self._files.pop(file._cachename, None)
        self._engine.forget_file(file._cachename)
        if file._flags & cvine.VINE_UNLINK_WHEN_DONE and file._type == cvine.VINE_FILE:
            remove_tree(file._source)

    remove_file = undeclare_file

    def declare_temp(self) -> File:
        """A file that lives only on workers: output of one task, input of later ones."""
        if self._tasks_cache is not None:  # brought back, so that it can be cached
            return self.declare_file(self._tasks_cache.temp_path(), cache=True,
                                     unlink_when_done=True)
        if not self._engine.delivery.peer_transfers:  # nothing could move it: go through here
            path = os.path.join(self._info.staging, "temp", cachenames.random_name("temp"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return self.declare_file(path, cache=True, unlink_when_done=True)
        return self._register(File(cvine.VINE_TEMP, "temp", cachenames.random_name("temp"),
                                   cvine.VINE_CACHE_LEVEL_WORKFLOW, 0))

    def declare_url(self, url: str, cache: Any = False, peer_transfer: bool = True) -> File:
        """A file the worker downloads itself (http, https, ftp, file)."""
        if not isinstance(url, str):
            raise TypeError("declare_url() takes the URL as a str")
        level = cache_level(cache)
        flags = 0 if peer_transfer else cvine.VINE_PEER_NOSHARE
        return self._register(File(cvine.VINE_URL, url, cachenames.url_name(url, level), level,
                                   flags))

    def enable_peer_transfers(self) -> None:
        self._engine.delivery.peer_transfers = True

    def disable_peer_transfers(self) -> None:
        """Workers stop copying files from each other; temps declared from now on are kept on
        the manager instead."""
        self._engine.delivery.peer_transfers = False

    def prune_file(self, file: File) -> None:
        """Delete the replicas of ``file`` from workers (where no task uses it) but keep the
        declaration."""
        if not isinstance(file, File):
            raise TypeError("prune_file() takes a File")
        self._engine.forget_file(file._cachename, undeclared=False)

    def get_file_replica_count(self, file: File) -> int:
        return self._engine.replicas.count(file._cachename)

    def declare_minitask(self, task: Task, source: str, cache: Any = False,
                         peer_transfer: bool = True) -> File:
        """A file built on the worker that needs it, by running ``task`` (never submitted
        itself) and taking ``source`` from its sandbox."""
        if not isinstance(task, Task):
            raise TypeError("declare_minitask() takes a Task")
        if not isinstance(source, str) or not source:
            raise TypeError("declare_minitask() takes the output name as a str")
        level = cache_level(cache)
        task._manager = self
        name = cachenames.minitask_name(
            task._command, [(m.remote_name, m.file._cachename) for m in task._inputs],
            [m.remote_name for m in task._outputs],
            [f"{k}={v}" for k, v in task._env.items() if v is not None], source, level)
        file = File(cvine.VINE_MINI_TASK, source, name, level, cvine.VINE_PEER_NOSHARE,
                    mode=0o755)
        file._minitask = task
        return self._register(file)

    def declare_untar(self, tarball: File, cache: Any = False,
                      peer_transfer: bool = True) -> File:
        """A directory unpacked on the worker from ``tarball`` (any compression tar knows)."""
        if not isinstance(tarball, File):
            raise TypeError("declare_untar() takes the tarball as a File")
        t = Task("mkdir output && tar xf input.tar -C output")
        t.add_input(tarball, "input.tar")
        return self.declare_minitask(t, "output", cache, peer_transfer)

    def declare_poncho(self, package: File | str, cache: Any = False,
                       peer_transfer: bool = True) -> File:
        """An environment directory unpacked on the worker from a poncho (conda-pack)
        tarball, prepared once by running its ``bin/run_in_env`` (or ``conda-unpack``); use
        it with ``Task.add_environment``. A path is declared as a file with ``cache=True``."""
        package = self._package_file(package, "declare_poncho")
        t = Task("mkdir output && tar xf package.tar.gz -C output && "
                 "if [ -x output/bin/run_in_env ]; then output/bin/run_in_env true; "
                 "elif [ -x output/bin/conda-unpack ]; then output/bin/conda-unpack; fi")
        t.add_input(package, "package.tar.gz")
        return self.declare_minitask(t, "output", cache, peer_transfer)

    def declare_starch(self, starch: File | str, cache: Any = False,
                       peer_transfer: bool = True) -> File:
        """A directory extracted on the worker from a starch self-extracting package."""
        from_path = isinstance(starch, str)
        starch = self._package_file(starch, "declare_starch")
        if from_path:
            starch.set_mode(0o755)
        t = Task("SFX_DIR=output SFX_EXTRACT_ONLY=1 ./package.sfx")
        t.add_input(starch, "package.sfx")
        return self.declare_minitask(t, "output", cache, peer_transfer)

    def _package_file(self, package: File | str, what: str) -> File:
        if isinstance(package, str):
            return self.declare_file(package, cache=True)
        if not isinstance(package, File):
            raise TypeError(f"{what}() takes a File or a path")
        return package

    def _environment(self, env: File | str) -> File:
        """An execution context: a File as it is, a path as a poncho package."""
        return env if isinstance(env, File) else self.declare_poncho(env, cache=True)

    def declare_xrootd(self, source: str, proxy: File | None = None,
                       env: File | str | None = None, cache: Any = False,
                       peer_transfer: bool = True) -> File:
        """A file the worker copies from an XRootD server (``xrdcp <source> output.root`` in
        a mini task). ``proxy`` is the X.509 proxy to present, by default the user's own if
        there is one; ``env`` an execution context providing ``xrdcp``."""
        source = _text_arg(source, "declare_xrootd", "source")
        if not source.startswith(_XROOTD_SCHEMES):
            raise ValueError(f"declare_xrootd(): source must be a root:// URL, not {source!r}")
        proxy = _file_arg(proxy, "declare_xrootd", "proxy")
        env = _file_arg(env, "declare_xrootd", "env", paths=True)
        cache_level(cache)  # checked before the proxy is declared
        if proxy is None and (found := _default_x509_proxy()) is not None:
            proxy = self.declare_file(found, peer_transfer=False)  # a credential: not shared
        t = Task(f"xrdcp {shlex.quote(source)} output.root")
        if proxy is not None:
            t.add_input(proxy, "proxy509.pem")
            t.set_env_var("X509_USER_PROXY", "proxy509.pem")
        return self._remote_copy(t, env, "output.root", cache, peer_transfer)

    def declare_chirp(self, server: str, source: str, ticket: File | None = None,
                      env: File | str | None = None, cache: Any = False,
                      peer_transfer: bool = True) -> File:
        """A file the worker copies from a Chirp server (``chirp_get <server> <source>
        output.chirp`` in a mini task), authenticated by ``ticket`` if given; ``env`` is an
        execution context providing ``chirp_get``."""
        server = _text_arg(server, "declare_chirp", "server")
        source = _text_arg(source, "declare_chirp", "source")
        ticket = _file_arg(ticket, "declare_chirp", "ticket")
        env = _file_arg(env, "declare_chirp", "env", paths=True)
        auth = "--auth=ticket --tickets=ticket.chirp " if ticket is not None else ""
        t = Task(f"chirp_get {auth}{shlex.quote(server)} {shlex.quote(source)} output.chirp")
        if ticket is not None:
            t.add_input(ticket, "ticket.chirp")
        return self._remote_copy(t, env, "output.chirp", cache, peer_transfer)

    def _remote_copy(self, t: Task, env: File | str | None, output: str, cache: Any,
                     peer_transfer: bool) -> File:
        """The mini-task file ``output`` of ``t``, run inside ``env`` if given."""
        if env is not None:
            t.add_environment(self._environment(env))
        return self.declare_minitask(t, output, cache, peer_transfer)

    # ------------------------------------------------------------------ serverless
    def create_library_from_functions(
            self, library_name: str, *functions: Callable, poncho_env: str | None = None,
            init_command: str | None = None, add_env: bool = True,
            hoisting_modules: Sequence[Any] | None = None, exec_mode: str = "fork",
            library_context_info: Sequence[Any] | None = None) -> LibraryTask:
        """A library serving ``functions`` (by ``__name__``) from a Python process kept warm
        on each worker that runs calls into it. ``add_env`` does not pack an environment
        here: the worker's ``python3`` runs the library unless ``poncho_env`` is given."""
        code, info = library_files(library_name, functions, exec_mode, hoisting_modules,
                                   library_context_info)
        command = "python3 library_code.py"
        t = LibraryTask(f"{init_command} {command}" if init_command else command, library_name)
        level = cvine.VINE_CACHE_LEVEL_WORKFLOW
        t.add_input(self._internal_buffer(code, level), "library_code.py")
        t.add_input(self._internal_buffer(info, level), "library_info.clpk")
        t._exec_mode = EXEC_MODES[exec_mode]
        if poncho_env and add_env:  # as upstream: add_env=False leaves the environment to
            t.add_environment(self._environment(poncho_env))  # the caller (Parsl adds it)
        return t

    def create_library_from_serverized_files(self, library_name: str, library_path: str,
                                             env: File | str | None = None) -> LibraryTask:
        """A library from a directory holding ``library_code.py`` and ``library_info.clpk``
        (or from the path of that ``library_code.py``)."""
        folder = library_path if os.path.isdir(library_path) else os.path.dirname(library_path)
        t = LibraryTask("python3 library_code.py", library_name)
        for name in ("library_code.py", "library_info.clpk"):
            t.add_input(self.declare_file(os.path.join(folder, name), cache=True), name)
        if env is not None:
            t.add_environment(self._environment(env))
        return t

    def create_library_from_command(self, executable_path: str, library_name: str,
                                    env: File | str | None = None) -> LibraryTask:
        """A library whose process is any program speaking the library protocol."""
        t = LibraryTask("./library_exe", library_name)
        exe = self.declare_file(executable_path, cache=True)
        t.add_input(exe, "library_exe")
        if env is not None:
            t.add_environment(self._environment(env))
        return t

    def install_library(self, task: LibraryTask) -> None:
        """Register a library; instances start on workers when calls need them."""
        if not isinstance(task, LibraryTask):
            raise TypeError("install_library() takes a LibraryTask (e.g. from "
                            "create_library_from_functions)")
        task._manager = self
        self._engine.libraries.install(task)
        self._engine._dirty = True

    def remove_library(self, name: str) -> None:
        """Forget library ``name`` and stop its instances; its waiting calls end with
        ``missing library``."""
        self._engine.remove_library(name)

    def check_library_exists(self, name: str) -> bool:
        if not isinstance(name, str):
            raise TypeError("check_library_exists() takes the library name as a str")
        return self._engine.libraries.exists(name)

    # ------------------------------------------------------------------ functional helpers
    def map(self, fn: Callable, seq: Iterable[Any], chunksize: int = 1) -> list[Any]:
        """``[fn(x) for x in seq]`` computed on workers, ``chunksize`` items per task."""
        return functional.map(self, fn, seq, chunksize)

    def pair(self, fn: Callable, seq1: Iterable[Any], seq2: Iterable[Any], chunksize: int = 1,
             env: File | None = None) -> list[Any]:
        """``fn((x, y))`` for every pair of ``itertools.product(seq1, seq2)``."""
        return functional.pair(self, fn, seq1, seq2, chunksize, env)

    def tree_reduce(self, fn: Callable, seq: Iterable[Any], chunksize: int = 2) -> Any:
        """Reduce ``seq`` to one value with ``fn(list_of_values)``, chunk by chunk."""
        return functional.tree_reduce(self, fn, seq, chunksize)

    def remote_map(self, fn: str, seq: Iterable[Any], library: str, name: str,
                   chunksize: int = 1) -> list[Any]:
        return functional.remote_map(self, fn, seq, library, name, chunksize)

    def remote_pair(self, fn: str, seq1: Iterable[Any], seq2: Iterable[Any], library: str,
                    name: str, chunksize: int = 1) -> list[Any]:
        return functional.remote_pair(self, fn, seq1, seq2, library, name, chunksize)

    def remote_tree_reduce(self, fn: str, seq: Iterable[Any], library: str, name: str,
                           chunksize: int = 2) -> Any:
        return functional.remote_tree_reduce(self, fn, seq, library, name, chunksize)

    # ------------------------------------------------------------------ resources, workers
    def tune(self, name: str, value: float) -> int:
        """Set a tuning parameter (api.md §13): 0, or -1 for an unknown name or a refused
        value (as upstream), with a warning naming it and a line in the debug log."""
        refused = self._tuning.set(name, value)
        if refused is not None:
            self._debug.write("vine", f"tune: {refused}")
            warnings.warn(f"tune(): {refused}", stacklevel=2)
            return -1
        self._engine._dirty = True
        return 0

    def _category_limits(self, setter: Callable[[str, dict], None], category: str,
                         resources: dict) -> None:
        if not resources:
            return  # upstream ignores an empty dict
        unknown = set(resources) - set(_RESOURCE_KEYS)
        if unknown:
            raise ValueError(f"unknown resource names {sorted(unknown)}; use {_RESOURCE_KEYS}")
        setter(category, {k: v for k, v in resources.items() if k != "wall_time"})
        self._engine._dirty = True

    def set_resources_max(self, resources: dict) -> None:
        self._category_limits(self._engine.categories.set_max, "default", resources)

    def set_resources_min(self, resources: dict) -> None:
        self._category_limits(self._engine.categories.set_min, "default", resources)

    def set_category_resources_max(self, category: str, resources: dict) -> None:
        self._category_limits(self._engine.categories.set_max, category, resources)

    def set_category_resources_min(self, category: str, resources: dict) -> None:
        self._category_limits(self._engine.categories.set_min, category, resources)

    def set_category_first_allocation_guess(self, category: str, resources: dict) -> None:
        """What the first tasks of an automatic category run with, until
        ``category-steady-n-tasks`` of them were measured."""
        self._category_limits(self._engine.categories.set_guess, category, resources)

    def enable_monitoring(self, watchdog: bool = True, time_series: bool = False) -> int:
        """Measure every task on its worker (``Task.resources_measured``, per-category
        statistics, automatic allocations); with ``watchdog``, a task that goes over its
        allocation is stopped and ends with resource exhaustion; with ``time_series``, each
        task's samples go to ``vine-logs/time-series/``. Returns 1 (our workers measure
        with psutil, which is always installed)."""
        self._engine.monitoring.enable(watchdog, time_series, self._info.logs)
        self._debug.write("vine", f"monitoring on (watchdog {int(bool(watchdog))}, time "
                          f"series {int(bool(time_series))})")
        return 1

    def set_category_mode(self, category: str | None, mode: str | int) -> int:
        """How tasks of ``category`` are sized (api.md §9.2): a mode name (``"fixed"``,
        ``"max"``, ``"min waste"``, ``"max throughput"``, ``"[det] greedy|exhaustive
        bucketing"``, ``"quantized bucketing"``) or ``VINE_ALLOCATION_MODE_*``;
        ``category=None`` sets the mode of categories created later. Returns 1."""
        self._engine.categories.set_mode(category, mode)
        self._engine._dirty = True
        return 1

    def set_category_autolabel_resource(self, category: str, resource: str,
                                        autolabel: bool = True) -> None:
        """Whether an automatic category computes ``resource`` (cores, memory, disk, gpus)
        from measurements; off, that resource comes from the category max."""
        self._engine.categories.set_autolabel(category, resource, autolabel)
        self._engine._dirty = True

    def set_category_max_concurrent(self, category: str, max_concurrent: int) -> None:
        """Run at most ``max_concurrent`` tasks of ``category`` at once (<0: no limit)."""
        self._engine.categories.set_max_concurrent(category, max_concurrent)
        self._engine._dirty = True

    def initialize_categories(self, filename: str, rm: dict | None = None) -> int:
        """Seed categories with the resource summaries of ``filename``: one JSON object per
        line with ``category`` and peak ``cores``, ``memory``, ``disk``, ``gpus`` (numbers or
        ``[value, "unit"]``) and optionally ``wall_time`` (s). ``rm`` gives the largest
        allocation for categories without a max. Returns the number of summaries read."""
        n = self._engine.categories.seed(filename, rm)
        self._engine._dirty = True
        return n

    def stats_category(self, category: str) -> CategoryStats:
        """``stats`` counted for the tasks of one category, with its allocation state
        (``mode``, ``first_allocation``, ``max_allocation``, ``max_seen``, ...)."""
        cats = self._engine.categories
        return cats.stats(category, cats.workers_able(category, self._engine.workers.values()))

    def set_runtime_info_path(self, path: str) -> None:
        """Where the run-info directories of managers created from now on go (default
        ``vine-run-info`` in the working directory). As upstream's, it cannot move the logs
        of a manager that exists already: this one keeps writing where it started."""
        if not isinstance(path, str) or not path:
            raise ValueError("set_runtime_info_path() needs a non-empty directory name")
        runinfo.default_path = path

    def application_info(self) -> dict | None:
        """What the program wants shown beside the manager's state (Jupyter display):
        override to return ``{"application_info": {"values": {...}, "units": {...}}}``."""
        return None

    def enable_disconnect_slow_workers(self, multiplier: float) -> None:
        """Take back tasks running longer than ``multiplier`` × their category's average
        execution time and run them elsewhere; a worker with two such tasks is disconnected
        and its host blocked for ``option-blocklist-slow-workers-timeout`` seconds. Applies
        to the ``"default"`` category and to categories without their own setting;
        ``multiplier < 1`` turns it off."""
        self._engine.categories.set_slow_multiplier("default", _number(multiplier,
                                                                       "multiplier"))

    def enable_disconnect_slow_workers_category(self, category: str,
                                                multiplier: float) -> None:
        """As ``enable_disconnect_slow_workers`` for one category: 0 turns it off there, a
        negative multiplier uses the default's."""
        if not isinstance(category, str):
            raise TypeError("category must be a str")
        self._engine.categories.set_slow_multiplier(category, _number(multiplier,
                                                                      "multiplier"))

    def set_scheduler(self, scheduler: str | int) -> None:
        """How a worker is chosen for a task (api.md §10.1): ``"files"`` (default),
        ``"time"``, ``"rand"``, ``"worst"``, ``"disk"``, ``"fcfs"`` or ``VINE_SCHEDULE_*``;
        ``Task.set_scheduler`` overrides it for one task."""
        value = parse_scheduler(scheduler)
        self._engine.scheduler = value or cvine.VINE_SCHEDULE_FILES
        self._engine._dirty = True

    def block_host(self, host: str) -> None:
        self._engine.block(host)

    def block_host_with_timeout(self, host: str, timeout: float) -> None:
        self._engine.block(host, timeout)

    def unblock_host(self, host: str | None = None) -> None:
        if host is None:
            self._engine.blocked.clear()
        else:
            self._engine.blocked.pop(host, None)
        self._engine._dirty = True

    blacklist = block_host
    blacklist_with_timeout = block_host_with_timeout
    blacklist_clear = unblock_host

    def set_keepalive_interval(self, interval: float) -> None:
        self._tuning.keepalive_interval = float(interval)

    def set_keepalive_timeout(self, timeout: float) -> None:
        self._tuning.keepalive_timeout = float(timeout)

    def workers_shutdown(self, n: int = 0) -> int:
        """Tell ``n`` workers (0 = all) to exit; returns how many were told."""
        return self._engine.shutdown_workers(int(n))

    def set_draining_by_hostname(self, hostname: str, drain_mode: bool = True) -> int:
        affected = [w for w in self._engine.workers.values() if w.hostname == hostname]
        for w in affected:
            w.draining = bool(drain_mode)
        self._engine._dirty = True
        return len(affected)

    # ------------------------------------------------------------------ observability
    @property
    def stats(self) -> Stats:
        return snapshot(self._engine, self._started_us)

    def status(self, request: str) -> list[dict]:
        kind = STATUS_KINDS.get(request)
        if kind is None:
            raise ValueError(f"unknown status request {request!r}; use one of "
                             f"{', '.join(sorted(STATUS_KINDS))}")
        return report(self._engine, kind, self._status_info())

    def _status_info(self) -> dict:
        return {"started_us": self._started_us, "name": self._name, "uuid": self._uuid,
                "ssl": self.using_ssl,
                "priority": self._priority, "properties": self._properties,
                "preferred_connection": self._preferred_connection}

    def _status_bytes(self, kind: str) -> bytes:
        canonical = STATUS_KINDS.get(kind)
        if canonical is None:
            return b"[]"
        return to_json(report(self._engine, canonical, self._status_info()))

    def summarize_workers(self) -> list[dict]:
        groups: dict[tuple, int] = {}
        for w in self._engine.workers.values():
            if w.has_resources:
                key = (w.total.cores, w.total.gpus, w.total.memory, w.total.disk)
                groups[key] = groups.get(key, 0) + 1
        return [{"workers": n, "cores": c, "gpus": g, "memory": m, "disk": d}
                for (c, g, m, d), n in groups.items()]

    def set_catalog_servers(self, hosts: str) -> None:
        """The catalogs a named manager reports to, as ``"host1:port1,host2"`` (default: the
        ``CATALOG_HOST``/``CATALOG_PORT`` environment variables, else upstream's catalogs)."""
        if not isinstance(hosts, str):
            raise TypeError("set_catalog_servers() takes 'host:port,host2:port2' as a str")
        self._catalog.set_servers(hosts)

    def update_catalog(self) -> None:
        """Send the catalogs an update now (a manager without a name sends none). The update
        goes out from a background thread: this never waits for the network."""
        self._catalog.update()

    def set_manager_preferred_connection(self, mode: str) -> None:
        """How workers that find this manager through the catalog (``vine_worker -M``)
        should reach it: ``by_ip`` (default), ``by_hostname`` or ``by_apparent_ip``."""
        if mode not in _CONNECTION_MODES:
            raise ValueError(f"unknown connection mode {mode!r}; one of "
                             f"{', '.join(_CONNECTION_MODES)}")
        self._preferred_connection = mode

    def _catalog_record(self) -> dict | None:
        """What the catalogs are told: the ``manager`` status record (None without a name)."""
        if not self._name:
            return None
        return report(self._engine, "manager", self._status_info())[0]

    def log_debug_app(self, text: str) -> None:
        self._debug.write("vine", f"APPLICATION {text}")

    def log_txn_app(self, text: str) -> None:
        self._txn.application(text)



def _tls_context(option: Any, directory: str) -> tuple[Any, tuple[str, str] | None]:
    """The manager's ``ssl`` argument: None/False/(None, None) for plain TCP, True for a new
    self-signed key and certificate in the run-info directory, or ``(key, cert)`` files."""
    if option is None or option is False or option == (None, None):
        return None, None
    if option is True:
        files = make_self_signed(directory)
    elif (isinstance(option, (tuple, list)) and len(option) == 2
          and all(isinstance(x, (str, os.PathLike)) for x in option)):
        files = (os.fspath(option[0]), os.fspath(option[1]))
        for path in files:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"ssl: no such key or certificate file: {path}")
    else:
        raise TypeError("ssl must be None, False, True or (key_file, cert_file), not "
                        f"{option!r}")
    try:
        return server_context(*files), files
    except ssl.SSLError as e:
        raise ValueError(f"ssl: cannot use key {files[0]} with certificate {files[1]}: "
                         f"{e}") from e


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {value!r}")
    return float(value)
