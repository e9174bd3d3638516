"""One connection to a manager: the worker's event loop and a handler per message.

Theory of operation. The loop waits (``selectors``) on the manager socket and on one pidfd
per running task, with a timeout set by the nearest deadline (wall time, end time, idle
report). Bytes from the manager go through the codec; each message goes to the handler of
its type in ``HANDLERS``; item events belong to the ``put`` being received. Replies and
asynchronous messages are queued in one outbox and sent once per turn of the loop.

Task lifecycle here: queued (received, waiting for room) → running (process alive) →
done (``complete`` sent, sandbox kept for ``send_stdout``/``get``) → gone (``kill``).
Outputs are moved into the cache, with a ``cache-update`` each, before ``complete``.

Over TLS (the socket is an ``ssl.SSLSocket``) everything still goes through this loop:
``transport.receive`` also drains the records OpenSSL has already decrypted (``select``
cannot see those), and file contents of a ``put`` arrive as ``Data`` events instead of being
spliced. A manager that turns us away before the hello is answered ends the session as
"refused" (``end_reason`` says why; the caller logs it): it asks for a password we lack
(``auth password sha1``), it answers our plain hello with TLS, or it hangs up within
``SILENT_DROP`` seconds without a whole message (as a TLS manager does with a plain hello).

Transfer secret: a worker without ``--password`` asks for one in its hello (``info
transfer-auth 1``); the manager's ``transfer-secret`` then becomes what peers must prove on
the transfer port (``config.peer_key``). A secret from an earlier session stays in force
until the new manager's first message, which either replaces it or, if it is anything else,
shows that this manager gives none, and the transfer port is open again.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import selectors
import shutil
import socket
import ssl
import stat
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from .. import protocol as p
from ..items import (
    FileSegment,
    ItemReceiver,
    UnsafeName,
    check_component,
    check_relative,
    outgoing,
    outgoing_bytes,
    remove_tree,
    tree_size,
)
from ..resources import Resources
from ..security import AUTH_LINE, TRANSFER_AUTH_INFO
from ..transport import Outbox, SinkError, Splicer, receive
from . import reaper
from .cache import TYPE_MINI_TASK, TYPE_PUT, TYPE_TRANSFERRED, Cache
from .fetcher import Fetcher
from .libraries import LibraryError, LibraryProcess
from .log import WorkerLog
from .monitor import Meters, TaskMeter, Usage
from .process import collect, exit_status, kill_group, spawn, task_environment
from .pyfork import ForkServer, python_task_argv, server_key
from .resources import MB, Ledger
from .sandbox import Sandbox, SandboxPool, WorkspaceGuard
from .transfer_server import PeerKey

RESULT_INPUT_MISSING = 1
RESULT_RESOURCE_EXHAUSTION = 16
RESULT_MAX_END_TIME = 24
RESULT_FORSAKEN = 40
RESULT_MAX_WALL_TIME = 56
RESULT_LIBRARY_EXIT = 96
RESULT_SANDBOX_EXHAUSTION = 104
MOUNT_WATCH = 2
MOUNT_SYMLINK = 32
MOUNT_MKDIR = 64
FETCHES = "fetches"  # selector tag of the fetcher's wake-up pipe
FORKS = "forks"  # selector tag of a fork server's socket
WATCH_INTERVAL = 0.5  # seconds between looks at watched outputs
DISK_CHECK_INTERVAL = 5.0  # seconds between measurements of sandboxes with a disk limit
UPDATE_CHUNK = 1 << 20  # at most this many bytes of one watched file per ``update``
CALL_INFILE = "infile"  # a function call's arguments, in its sandbox
CALL_OUTFILE = "outfile"  # a function call's result, in its sandbox
TLS_RECORD_STARTS = (b"\x15\x03", b"\x16\x03")  # a TLS alert or handshake record
SILENT_DROP = 2.0  # seconds: a manager that hangs up this soon, without a word, refused us
SECRET_FORM = re.compile(r"[0-9a-fA-F]{32,256}")  # a transfer secret we accept


@dataclass
class SessionConfig:
    workspace: str
    worker_id: str
    features: tuple[str, ...] = ()
    idle_timeout: float = 0
    parent_pid: int = 0
    end_time: int = 0
    transfer_port: int = 0  # 0: no transfer server
    guard: WorkspaceGuard | None = None  # whether the workspace is still ours (None: unchecked)
    factory_name: str = ""  # --from-factory: the factory that started this worker
    peer_key: PeerKey = field(default_factory=PeerKey)  # shared with transfer server, fetcher


class TaskRun:
    """One task on this worker."""

    __slots__ = ("msg", "alloc", "sandbox", "pid", "pidfd", "start_us", "deadline",
                 "kill_result", "running", "watched", "sandbox_mb", "fork_id", "library",
                 "call_args", "queued", "meter", "fork_server")

    def __init__(self, msg: p.TaskMsg, alloc: Resources):
        self.msg = msg
        self.alloc = alloc
        self.sandbox: Sandbox | None = None
        self.pid = 0
        self.pidfd = -1
        self.start_us = 0
        self.deadline: tuple[float, int] | None = None  # (epoch seconds, result if reached)
        self.kill_result = 0
        self.running = False
        self.watched: list[Watched] = []
        self.sandbox_mb = 0
        self.fork_id = 0  # request to a fork server (0: started with posix_spawn)
        self.fork_server: ForkServer | None = None  # the server it was asked of
        self.library: LibraryProcess | None = None  # the library it is, or that serves it
        self.call_args: bytes | None = None  # a call's infile, passed inline to its library
        self.queued = False  # waiting in the session's queue to start
        self.meter: TaskMeter | None = None  # measures it (a ``monitor`` line): monitor.py

    def inputs(self) -> set[str]:
        return {m.cachename for m in self.msg.body.infiles}

    @property
    def is_call(self) -> bool:
        """A function call: it runs inside a library process, not in a process of its own."""
        return self.msg.body.needs_library is not None


@dataclass(slots=True)
class Watched:
    """An output with the WATCH flag: ``offset`` bytes of it were sent to the manager."""

    rel: str
    path: str
    offset: int = 0


class Session:
    def __init__(self, sock: socket.socket, config: SessionConfig, cache: Cache,
                 fetcher: Fetcher, ledger: Ledger, log: WorkerLog):
        self.sock = sock
        self.config = config
        self.cache = cache
        self.ledger = ledger
        self.log = log
        self.tls = isinstance(sock, ssl.SSLSocket)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        trace = (lambda line: log(f"rx: {_hide_secret(line)}")) if log.enabled else None
        self.decoder = p.Decoder("manager", trace=trace)
        self.outbox = Outbox()
        self.splicer = Splicer()
        self.fetcher = fetcher
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ, None)
        self.sel.register(self.fetcher.fileno(), selectors.EVENT_READ, FETCHES)
        self.want_write = False
        self.tasks: dict[int, TaskRun] = {}
        self.queue: deque[TaskRun] = deque()
        self.receiving: tuple[p.Put, ItemReceiver, int] | None = None
        self.pool = SandboxPool(config.workspace)
        self.building: dict[int, p.MiniTaskMsg] = {}  # mini task id (< 0) -> its recipe
        self.failed_objects: set[str] = set()  # could not be stored, fetched or built here
        self.spent: list[Sandbox] = []  # no longer needed: recycled once replies are out
        self.ended: str | None = None
        self.end_reason = ""
        self.began = time.monotonic()
        self.heard = False  # a whole message came from the manager
        self.received_any = False
        self.keyed = False  # the transfer secret of this session is settled
        self.last_task_id = 0
        self.idle_since = time.monotonic()  # also when we last asked to leave for idleness
        self.results_announced = False  # ``available_results`` sent, ``send_results`` not yet
        self.next_watch = 0.0
        self.next_disk_check = time.monotonic() + DISK_CHECK_INTERVAL
        self.trimmed = (0, 0)  # (cache bytes, committed disk) at the last trim_cache()
        self.libraries: dict[int, LibraryProcess] = {}  # library task id -> process
        self.forks: dict[tuple, ForkServer] = {}  # (python3, environment): pyfork.server_key
        self.pythons: dict[str | None, str | None] = {}  # task PATH -> its python3
        self.forked: dict[int, TaskRun] = {}  # fork request id -> task
        self.fork_serial = 0
        self.meters = Meters()  # the running tasks being measured, by pid

    # ------------------------------------------------------------------ the loop
    def run(self) -> str:
        """Serve the manager until it releases us ("released"), tells us to exit ("exit"),
        or the connection is lost ("lost")."""
        self.send_hello()
        self.flush()
        try:
            while self.ended is None:
                if self.tls and self.sock.pending():  # decrypted bytes select() cannot see
                    self.on_readable()
                    if self.ended is not None:
                        break
                registered = self.sel.get_map()
                pending = self.tls and self.sock.pending()
                for key, _ in self.sel.select(0 if pending else self.next_timeout()):
                    if registered.get(key.fileobj) is not key:
                        continue  # closed by an event handled before it in this batch
                    if key.data is None:
                        self.on_readable()
                    elif key.data is FETCHES:
                        self.on_fetched()
                    elif key.data is FORKS:
                        self.on_forked(key.fileobj)
                    elif isinstance(key.data, LibraryProcess):
                        self.on_library(key.data)
                    else:
                        self.on_exit(key.data)
                self.start_ready()
                self.trim_cache()
                self.flush()
                self.recycle_spent()
                self.check_deadlines()
                if self.outbox:
                    self.flush()
            self.flush()
        finally:
            self.close()
        return self.ended

    def on_readable(self) -> None:
        if self.receiving is not None and self.decoder.raw_left and not self.decoder.buffered \
                and self.receiving[1].content_fd >= 0:
            self.splice_content()
            return
        try:
            data = receive(self.sock)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # ssl.SSLError included
            self.hung_up(f"connection error: {e}")
            return
        if not data:
            self.hung_up("manager closed the connection")
            return
        if not self.received_any:
            self.received_any = True
            if self.turned_away(data):
                return
        self.decoder.feed(data)
        try:
            while self.ended is None and (event := self.decoder.next_event()) is not None:
                self.heard = True
                if not self.keyed:
                    self.settle_key(event)
                handler = HANDLERS.get(type(event))
                if handler is not None:
                    handler(self, event)
                elif self.receiving is not None:
                    self.receive_item(event)
                else:
                    raise p.RemoteProtocolError(f"unexpected {type(event).__name__}")
        except (p.RemoteProtocolError, UnsafeName) as e:
            self.end("lost", f"bad message from manager: {e}")
        except Exception:  # a message we could not handle ends this session, not the worker
            self.end("lost", f"a message from the manager could not be handled:\n"
                     f"{traceback.format_exc()}")

    def hung_up(self, reason: str) -> None:
        """The manager closed the connection: at once and without a word, it refused us."""
        if not self.heard and time.monotonic() - self.began < SILENT_DROP:
            self.end("refused", "hung up before saying anything (does it use TLS, or a "
                                "password?)")
        else:
            self.end("lost", reason)

    def turned_away(self, data: bytes) -> bool:
        """Whether the manager's first bytes say it will not have us (it wants a password,
        or TLS); the session then ends "refused"."""
        if data[:len(AUTH_LINE)] == AUTH_LINE[:len(data)]:
            why = ("this manager requires a password (see --password)"
                   if self.config.peer_key.password is None else
                   "this manager started a second password exchange")
        elif data.startswith(TLS_RECORD_STARTS) and not self.tls:
            why = "this manager answered with TLS (see --ssl)"
        else:
            return False
        self.end("refused", why)
        return True

    def end(self, outcome: str, reason: str) -> None:
        """The session is over; "refused" ones are left to the caller to log."""
        if self.ended is None:
            self.ended = outcome
            self.end_reason = reason
            if outcome != "refused":
                self.log(f"session ends ({outcome}): {reason}")

    def send(self, msg: Any) -> None:
        data = msg.encode()
        if self.log.enabled:
            line = data[:data.find(b"\n")].decode("utf-8", "replace")
            self.log(f"tx: {line}")
        self.outbox.append(data)

    def flush(self) -> None:
        try:
            empty = self.outbox.flush(self.sock)
        except OSError as e:
            self.end("lost", f"send failed: {e}")
            return
        if empty == self.want_write:
            self.want_write = not empty
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.want_write else 0)
            self.sel.modify(self.sock, events, None)

    def next_timeout(self) -> float:
        timeout = 1.0
        now = time.time()
        for run in self.tasks.values():
            if run.running and run.deadline is not None:
                timeout = min(timeout, max(0.0, run.deadline[0] - now))
            if run.watched:
                timeout = min(timeout, WATCH_INTERVAL)
        if self.meters:
            timeout = min(timeout, max(0.0, self.meters.next_at() - now))
        return timeout

    # ------------------------------------------------------------------ hello
    def resources(self) -> p.Resources:
        t = self.ledger.total
        return p.Resources(t.cores, t.memory, t.disk, t.gpus, 1, self.last_task_id)

    def send_hello(self) -> None:
        c = self.config
        self.send(p.Hello(p.PROTOCOL_VERSION, socket.gethostname().split()[0] or "localhost",
                          platform.system() or "Linux", platform.machine() or "x86_64",
                          __version__))
        self.send(p.Info("worker-id", c.worker_id))
        if c.peer_key.password is None:
            self.send(p.Info(TRANSFER_AUTH_INFO, "1"))
        self.send(p.Info(p.MONITOR_INFO, "1"))
        for update in self.cache.announcements():
            self.send(update)
        for feature in c.features:
            self.send(p.Feature(feature))
        if c.transfer_port:
            self.send(p.TransferPort(c.transfer_port))
        else:
            self.send(p.Info("transfer_port_bind_failed", "1"))
        self.send(p.Info("worker-end-time", str(c.end_time)))
        if c.factory_name:
            self.send(p.Info("from-factory", c.factory_name))
        self.send(p.Alive())
        self.send(self.resources())

    # ------------------------------------------------------------------ tasks
    def on_task(self, msg: p.TaskMsg) -> None:
        if msg.task_id <= 0:  # ids below 0 are our mini tasks'
            raise p.RemoteProtocolError(f"invalid task id {msg.task_id}")
        old = self.tasks.get(msg.task_id)
        if old is not None:
            if old.running or old.queued:
                raise p.RemoteProtocolError(f"task {msg.task_id} is already running here")
            self.on_kill(p.Kill(msg.task_id))  # finished, never killed: the new one replaces it
        self.last_task_id = max(self.last_task_id, msg.task_id)
        run = TaskRun(msg, self.allocation(msg.body))
        self.tasks[msg.task_id] = run
        if not self.ledger.total.covers(run.alloc):
            self.log(f"task {msg.task_id} asks for more than this worker has: forsaken")
            self.forsake(run)
            return
        try:
            for mount in (*msg.body.infiles, *msg.body.outfiles):
                check_component(mount.cachename)
                check_relative(mount.path)
        except UnsafeName as e:
            self.log(f"task {msg.task_id} refused: {e}")
            self.finish(run, RESULT_INPUT_MISSING, -1)
            return
        self.enqueue(run)

    def enqueue(self, run: TaskRun) -> None:
        run.queued = True
        self.queue.append(run)

    def unqueue(self, run: TaskRun) -> None:
        """``run`` leaves the queue (it is dropped from the deque by ``start_ready``)."""
        run.queued = False

    def allocation(self, body: p.TaskBody) -> Resources:
        values = (body.cores, body.memory, body.disk, body.gpus)
        if all(v is None or v < 0 for v in values):
            t = self.ledger.total
            return Resources(t.cores, t.memory, t.disk, t.gpus)
        return Resources(*(max(0, int(v)) if v is not None else 0 for v in values))

    def start_ready(self) -> None:
        """Start the queued tasks that can start. Starting or failing one may take others
        out of the queue (a failed mini task forsakes the tasks waiting for its product), so
        runs leave it by ``unqueue`` and the deque is compacted once the walk is over."""
        if not self.queue:
            return
        for run in list(self.queue):
            if run.queued:
                self.try_start(run)
        self.queue = deque(run for run in self.queue if run.queued)

    def try_start(self, run: TaskRun) -> None:
        needs = run.msg.body.needs_library
        if needs is not None:
            run.library = self.library_for(needs)
            if run.library is None:
                if not self.library_coming(needs):
                    self.unqueue(run)
                    self.log(f"task {run.msg.task_id}: no library {needs} here")
                    self.forsake(run)
                return
        elif not self.has_room(run):
            return
        if any(m.cachename in self.fetcher or self.being_built(m.cachename)
               for m in run.msg.body.infiles):
            return  # an input is still being downloaded or built
        self.unqueue(run)
        missing = [m.cachename for m in run.msg.body.infiles if m.cachename not in self.cache]
        failed = [name for name in missing if name in self.failed_objects]
        if failed:  # it could not be stored or made here: another worker may do better
            self.log(f"task {run.msg.task_id}: inputs {failed} failed here: forsaken")
            self.forsake(run)
        elif missing:
            self.log(f"task {run.msg.task_id}: inputs {missing} are not in the cache")
            self.finish(run, RESULT_INPUT_MISSING, -1)
        else:
            self.start(run)

    def has_room(self, run: TaskRun) -> bool:
        """Whether ``run`` can start now. Disk counts the cache too: unused ``workflow`` and
        ``worker`` objects are evicted to make room, and a task that still does not fit once
        nothing else runs starts anyway (it would otherwise wait forever)."""
        cache_mb = -(-self.cache.bytes // MB) if run.alloc.disk > 0 else 0
        if self.ledger.fits(run.alloc, cache_mb):
            return True
        if not self.ledger.fits(Resources(run.alloc.cores, run.alloc.memory, 0, run.alloc.gpus)):
            return False
        free_mb = self.ledger.free().disk - cache_mb
        self.evict((run.alloc.disk - free_mb) * MB, f"task {run.msg.task_id}")
        if self.ledger.fits(run.alloc, -(-self.cache.bytes // MB)):
            return True
        return not any(r.running for r in self.tasks.values())

    def trim_cache(self) -> None:
        """Evict unused objects while the cache and the running tasks need more disk than
        this worker has."""
        state = (self.cache.bytes, self.ledger.used.disk)
        if state == self.trimmed:
            return
        self.trimmed = state
        excess = self.cache.bytes + (self.ledger.used.disk - self.ledger.total.disk) * MB
        if excess > 0:
            self.evict(excess, "the cache")

    def evict(self, nbytes: int, why: str) -> None:
        """Delete least recently used objects that no task here needs, until ``nbytes`` are
        freed or nothing more may go; each one is reported with ``cache-invalid``."""
        pinned: set[str] = set()
        for run in self.tasks.values():
            pinned |= run.inputs()
        for name, size in self.cache.evictable(pinned):
            if nbytes <= 0:
                break
            if name in self.fetcher or self.being_built(name):
                continue
            self.cache.remove(name)
            nbytes -= size
            self.log(f"evicted {name} ({size} bytes) to make room for {why}")
            self.send(p.CacheInvalid(name, f"evicted from the cache of worker "
                                           f"{self.config.worker_id} to make room\n"))

    def start(self, run: TaskRun) -> None:
        msg, body = run.msg, run.msg.body
        try:
            name = _sandbox_name(msg)
            box = run.sandbox = Sandbox(self.config.workspace, name, self.pool)
            for m in body.infiles:
                self.cache.touch(m.cachename)
                if m.path == CALL_INFILE and run.library is not None and run.call_args is None:
                    held = self.cache.memory(m.cachename)
                    if held is not None and run.library.takes_inline(len(held.data)):
                        run.call_args = held.data
                        continue
                box.link_input(self.cache.file(m.cachename), m.path, bool(m.flags & MOUNT_SYMLINK))
            for m in body.outfiles:
                if m.flags & MOUNT_MKDIR:
                    box.make_output_dir(m.path)
                if m.flags & MOUNT_WATCH:
                    run.watched.append(Watched(m.path, box.output_path(m.path)))
        except UnsafeName as e:  # a path the manager should never have sent
            self.log(f"task {msg.task_id}: cannot prepare its sandbox: {e}")
            self.finish(run, RESULT_INPUT_MISSING, -1)
            return
        except OSError as e:  # this worker's trouble, not the task's
            if self.workspace_broken():
                return  # the session ends; the manager runs the task elsewhere
            self.log(f"task {msg.task_id}: cannot prepare its sandbox: {e}: forsaken")
            self.forsake(run)
            return
        if body.needs_library is not None:
            self.invoke(run)
        else:
            self.launch(run, fork=True)

    def launch(self, run: TaskRun, fork: bool) -> None:
        """Start the process of a task whose sandbox is ready: through a fork server when
        ``fork`` and it is a PythonTask command, else with ``posix_spawn``."""
        body, box, a = run.msg.body, run.sandbox, run.alloc
        env = task_environment(body.env, a.cores, a.memory, a.disk, a.gpus, box.tmp)
        run.start_us = int(time.time() * 1e6)
        command, lib_fds = body.command, ()
        if body.provides_library is not None:
            run.library = LibraryProcess(run.msg.task_id, body, int(a.cores))
            lib_fds = run.library.open_pipes()
            command += run.library.arguments(*lib_fds, int(a.cores), os.getpid())
        if not (fork and self.start_forked(run, env)):
            try:
                run.pid = spawn(command, box.path, box.stdout, env, self.config.workspace)
            except (OSError, ValueError) as e:
                self.log(f"task {run.msg.task_id}: cannot start /bin/sh: {e}")
                if run.library is not None:
                    run.library.close()
                if isinstance(e, OSError):  # this worker's trouble: another may do better
                    self.finish(run, RESULT_FORSAKEN, 0)
                else:  # a NUL in the command: the manager's mistake, like an unsafe path
                    self.finish(run, RESULT_INPUT_MISSING, -1)
                return
            finally:
                for fd in lib_fds:
                    os.close(fd)
            run.pidfd = os.pidfd_open(run.pid)
            self.sel.register(run.pidfd, selectors.EVENT_READ, run)
        if lib_fds:
            self.libraries[run.msg.task_id] = run.library
            self.sel.register(run.library.from_library, selectors.EVENT_READ, run.library)
            self.send(p.Info("library-update", f"{run.msg.task_id} 2"))
        run.running = True
        self.ledger.commit(a)
        set_deadline(run)
        if body.monitor is not None and body.provides_library is None:
            run.meter = TaskMeter(run.msg.task_id, body.monitor, a.memory, run.start_us / 1e6)
            if run.pid:
                self.meters.add(run.pid, run.meter)

    def start_forked(self, run: TaskRun, env: dict[str, str]) -> bool:
        """Start a PythonTask command through a fork server (pyfork.py); False if this
        command or interpreter cannot go that way."""
        argv = python_task_argv(run.msg.body.command)
        if argv is None or env.get("PONCHO_PREFIX") or run.msg.task_id < 0:
            return False
        search = env.get("PATH")
        if search not in self.pythons:  # one PATH search per PATH, not one per task
            self.pythons[search] = shutil.which("python3", path=search)
        python = self.pythons[search]
        if python is None:
            return False
        key = server_key(python, env, self.forks)
        server = self.forks.get(key)
        if server is None:
            server = self.forks[key] = ForkServer(python, env=env if key[1] is not None else None)
            self.sel.register(server.sock, selectors.EVENT_READ, FORKS)
        if not server.alive:
            return False
        self.fork_serial += 1
        if not server.start(self.fork_serial, argv, run.sandbox.path, env, run.sandbox.stdout):
            return False
        run.fork_id, run.fork_server = self.fork_serial, server
        self.forked[run.fork_id] = run
        return True

    def on_forked(self, sock: socket.socket) -> None:
        """Pids and exit statuses of forked tasks; tasks of a server that died start again
        the ordinary way."""
        server = next(s for s in self.forks.values() if s.sock is sock)
        for event in server.events():
            run = self.forked.get(event["id"])
            if "pid" in event:
                if run is None or run.kill_result or run.msg.task_id not in self.tasks:
                    kill_group(event["pid"])  # killed before we knew its pid
                if run is not None:
                    run.pid = event["pid"]
                    if run.meter is not None:
                        self.meters.add(run.pid, run.meter)
            elif run is not None:
                del self.forked[event["id"]]
                usage = event.get("usage")
                self.on_exit(run, event["status"], Usage(*usage) if usage else None)
        if not server.alive:
            self.sel.unregister(sock)
            self.log(f"fork server of {server.proc.args[0]} ended: starting Python tasks "
                     "with a new interpreter each")
            self.orphaned_by(server)

    def orphaned_by(self, server: ForkServer) -> None:
        """The tasks asked of ``server``, which died: those not started yet start the
        ordinary way; those running can no longer be waited for (they are not our
        children), so they are killed and forsaken, to run again."""
        for fork_id, run in [(i, r) for i, r in self.forked.items() if r.fork_server is server]:
            del self.forked[fork_id]
            run.fork_id, run.fork_server = 0, None
            self.release(run)
            if run.pid == 0:
                self.launch(run, fork=False)
                continue
            kill_group(run.pid)
            server.children.pop(fork_id, None)
            reaper.forget(run.pid)
            self.log(f"task {run.msg.task_id}: its fork server died while it ran: forsaken")
            self.finish(run, RESULT_FORSAKEN, 0)

    # ------------------------------------------------------------------ libraries
    def library_for(self, name: str) -> LibraryProcess | None:
        """A ready instance of library ``name`` with a free slot (the least busy one)."""
        best = None
        for lib in self.libraries.values():
            if lib.name == name and lib.free_slots > 0 and (
                    best is None or lib.free_slots > best.free_slots):
                best = lib
        return best

    def library_coming(self, name: str) -> bool:
        """Whether an instance of ``name`` runs (or waits to start) here."""
        return any(lib.name == name for lib in self.libraries.values()) or any(
            r.queued and r.msg.body.provides_library == name for r in self.queue)

    def invoke(self, call: TaskRun) -> None:
        """Send a function call, whose sandbox is ready, to its library."""
        box = call.sandbox
        if call.call_args is None:  # else the library empties it
            os.close(os.open(box.stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        call.start_us = int(time.time() * 1e6)
        call.running = True
        set_deadline(call)
        try:
            call.library.invoke(call.msg.task_id, call.msg.body.command,
                                os.path.abspath(box.path), os.path.abspath(box.stdout), call,
                                call.call_args)
        except OSError as e:  # the library is gone; its exit forsakes the call
            self.log(f"call {call.msg.task_id}: cannot reach library {call.library.name}: {e}")
            call.library.calls[call.msg.task_id] = call

    def on_library(self, lib: LibraryProcess) -> None:
        try:
            finished, closed = lib.receive()
        except LibraryError as e:
            self.log(f"{e}: killing it")
            finished, closed = [], True
            kill_group(self.tasks[lib.task_id].pid)
        for call_id, status, outfile in finished:
            call = lib.calls.pop(call_id, None)
            if call is not None and self.tasks.get(call_id) is call:
                call.running = False
                self.keep_outputs(call, outfile)
                self.finish(call, 0, status, int(time.time() * 1e6))
        if closed:
            self.sel.unregister(lib.from_library)
            lib.close()

    def library_ended(self, run: TaskRun) -> None:
        """A library process is gone: forsake its calls, and the calls waiting here for a
        library of that name when no other instance is coming."""
        lib = self.libraries.pop(run.msg.task_id)
        if lib.from_library >= 0:
            self.sel.unregister(lib.from_library)
            lib.close()
        for call in lib.calls.values():
            if self.tasks.get(call.msg.task_id) is call:
                call.running = False
                self.forsake(call)
        lib.calls.clear()
        lib.inline_bytes.clear()
        if not self.library_coming(lib.name):
            self.forsake_queued(lambda body: body.needs_library == lib.name)

    def forsake(self, run: TaskRun) -> None:
        self.send(p.Alive())
        self.send(self.resources())
        self.finish(run, RESULT_FORSAKEN, 0)

    def check_deadlines(self) -> None:
        now = time.time()
        late_calls = []
        for run in self.tasks.values():
            if run.running and run.deadline is not None and not run.kill_result \
                    and now >= run.deadline[0]:
                run.kill_result = run.deadline[1]
                if run.is_call:
                    late_calls.append(run)
                    continue
                self.log(f"task {run.msg.task_id} passed its time limit: killing it")
                kill_group(run.pid)
        for call in late_calls:
            self.end_late_call(call)
        if self.meters:
            self.sample_meters(now)
        mono = time.monotonic()
        if mono >= self.next_watch:
            self.next_watch = mono + WATCH_INTERVAL
            self.check_watched()
        if mono >= self.next_disk_check:
            self.next_disk_check = mono + DISK_CHECK_INTERVAL
            self.check_sandboxes()
        c = self.config
        if c.idle_timeout and not self.tasks \
                and time.monotonic() - self.idle_since > c.idle_timeout:
            # asked again each period: the manager keeps a worker holding a needed file
            self.idle_since = time.monotonic()
            self.send(p.Info("idle-disconnect-request", str(int(c.idle_timeout))))
        if c.parent_pid and os.getppid() != c.parent_pid:
            self.end("exit", "parent process is gone")

    def end_late_call(self, call: TaskRun) -> None:
        """A function call passed its time limit: it ends now, and the library process
        still running it is killed (the other calls it holds are forsaken, to run again)."""
        lib, call_id = call.library, call.msg.task_id
        self.log(f"call {call_id} passed its time limit: killing library {lib.name} "
                 f"(task {lib.task_id}), which runs it")
        lib.calls.pop(call_id, None)
        lib.inline_bytes.pop(call_id, None)
        library = self.tasks.get(lib.task_id)
        if library is not None:
            kill_group(library.pid)
        call.running = False
        self.finish(call, call.kill_result, 9, int(time.time() * 1e6))

    def sample_meters(self, now: float) -> None:
        """Sample the measured tasks that are due; stop those the watchdog says must stop."""
        due = self.meters.due(now)
        if not due:
            return
        trees = self.meters.trees([pid for pid, _ in due])
        for pid, meter in due:
            run = self.tasks.get(meter.task_id)
            if run is None or not run.running:
                self.meters.remove(pid)
                continue
            if meter.take(now, trees[pid], self.sandbox_used(run)) and not run.kill_result:
                run.kill_result = RESULT_RESOURCE_EXHAUSTION
                self.log(f"task {meter.task_id} went over its allocation "
                         f"({', '.join(f'{k} {v}' for k, v in meter.exceeded.items())}, "
                         f"allocated memory {run.alloc.memory} MB): killing it")
                kill_group(run.pid)

    def sandbox_used(self, run: TaskRun) -> int | None:
        """Bytes in the sandbox of ``run`` less its linked inputs (None: cannot tell)."""
        if run.sandbox is None:
            return None
        try:
            used = tree_size(run.sandbox.path)
        except OSError:
            return None
        for m in run.msg.body.infiles:
            entry = self.cache.objects.get(m.cachename)
            if entry is not None and not m.flags & MOUNT_SYMLINK:
                used -= entry.size
        return max(used, 0)

    def check_watched(self) -> None:
        """Tell the manager (once, until it asks) that a watched output has grown."""
        if self.results_announced:
            return
        for run in self.tasks.values():
            for w in run.watched:
                try:
                    grown = os.stat(w.path).st_size > w.offset
                except OSError:
                    continue
                if grown:
                    self.results_announced = True
                    self.send(p.AvailableResults())
                    return

    def check_sandboxes(self) -> None:
        """Kill tasks whose sandbox (less their linked inputs) outgrew their disk; end the
        session if the workspace itself is gone."""
        if self.workspace_broken():
            return
        for run in self.tasks.values():
            if not run.running or run.kill_result or run.alloc.disk < 1:
                continue
            used = self.sandbox_used(run)
            if used is None:
                continue
            run.sandbox_mb = -(-used // MB)
            if used > run.alloc.disk * MB:
                run.kill_result = RESULT_SANDBOX_EXHAUSTION
                self.log(f"task {run.msg.task_id} uses {used} bytes of disk, more than its "
                         f"{run.alloc.disk} MB: killing it")
                kill_group(run.pid)

    def workspace_broken(self) -> bool:
        """Whether the workspace is no longer the directory this worker started with
        (deleted, or deleted and made again): then no task can run here, so the session
        ends ("broken": the worker exits with an error, and the manager, which sees the
        connection close, runs our tasks elsewhere)."""
        guard = self.config.guard
        trouble = guard.trouble() if guard is not None else None
        if trouble is None:
            return False
        if self.ended is None:
            self.log.error(f"{trouble}: this worker cannot run tasks any more; leaving")
            self.end("broken", trouble)
        return True

    def on_exit(self, run: TaskRun, status: int | None = None,
                usage: Usage | None = None) -> None:
        """A task's process ended; ``status`` and ``usage`` are given for forked ones (else
        it is reaped here)."""
        if status is None:
            status, rusage = self.reap(run)
            usage = Usage.of(rusage)
        else:
            self.release(run)
        end = time.time()
        end_us = int(end * 1e6)
        signaled, code = exit_status(status)
        run.watched.clear()  # the manager fetches the whole outputs now
        if run.msg.task_id < 0:
            self.mini_done(run, signaled, code)
            return
        if run.meter is not None:
            self.report_measured(run, usage, end, code)
        if run.kill_result in (RESULT_SANDBOX_EXHAUSTION, RESULT_RESOURCE_EXHAUSTION):
            self.finish(run, run.kill_result, code, end_us)
            return
        if run.msg.task_id in self.libraries:
            self.library_ended(run)
            self.finish(run, RESULT_LIBRARY_EXIT, 1, end_us)
            return
        self.keep_outputs(run)
        self.finish(run, run.kill_result, code, end_us)

    def report_measured(self, run: TaskRun, usage: Usage | None, end: float, code: int) -> None:
        """Send the manager what ``run`` used (before its ``complete``); a task found over
        its memory only now ends with resource exhaustion too."""
        summary = run.meter.summary(usage, end, self.sandbox_used(run), code)
        if "limits_exceeded" in summary and not run.kill_result:
            run.kill_result = RESULT_RESOURCE_EXHAUSTION
            self.log(f"task {run.msg.task_id} went over its allocation: "
                     f"{summary['limits_exceeded']}")
        self.send(p.Measured(run.msg.task_id, json.dumps(summary, separators=(",", ":"))
                             .encode()))

    def keep_outputs(self, run: TaskRun, outfile: bytes | None = None) -> None:
        """Move what the task produced into the cache (a ``cache-update`` each); ``outfile``
        is the content of a call's outfile that its library passed inline."""
        box = run.sandbox
        for m in run.msg.body.outfiles:
            try:
                if outfile is not None and m.path == CALL_OUTFILE:
                    if self.cache.fits_in_memory(len(outfile), 0):
                        self.send(self.cache.add_bytes(m.cachename, outfile, 0o644, 0,
                                                       TYPE_PUT, run.start_us))
                        continue
                    path = box.output_path(m.path)
                    remove_tree(path)  # whatever is there (a link an input put there): gone
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o644)
                    with os.fdopen(fd, "wb") as f:
                        f.write(outfile)
                produced = box.output(m.path)
                if produced is not None:
                    self.send(self.cache.add(m.cachename, produced, 0, TYPE_PUT, run.start_us))
            except (UnsafeName, OSError) as e:
                self.log(f"task {run.msg.task_id}: output {m.path!r} not kept: {e}")

    def reap(self, run: TaskRun) -> tuple[int, os.struct_rusage]:
        """Collect a spawned process that ended (or was killed); its wait status and
        resource usage."""
        self.sel.unregister(run.pidfd)
        os.close(run.pidfd)
        run.pidfd = -1
        self.release(run)
        return collect(run.pid)

    def release(self, run: TaskRun) -> None:
        run.running = False
        if run.meter is not None:
            self.meters.remove(run.pid)
        self.ledger.release(run.alloc)
        self.idle_since = time.monotonic()

    def finish(self, run: TaskRun, result: int, code: int, end_us: int = 0) -> None:
        if run.msg.task_id < 0:  # a mini task that could not start
            self.mini_done(run, False, -1)
            return
        length, inline = 0, b""
        if run.pid or run.start_us and run.library is not None:  # it ran: it may have output
            try:
                length = os.stat(run.sandbox.stdout).st_size
            except OSError:
                length = 0
            if 0 < length <= p.INLINE_STDOUT_MAX:
                with open(run.sandbox.stdout, "rb") as f:
                    inline = f.read(length)
                length = len(inline)
        self.send(p.Complete(result, code, length, run.start_us, end_us or run.start_us,
                             run.sandbox_mb, run.msg.task_id, inline))
        if run.sandbox is not None and length <= p.INLINE_STDOUT_MAX:
            if run.is_call and run.kill_result:  # cut off: its dying library may still write
                run.sandbox.destroy()
            else:
                self.spent.append(run.sandbox)  # its stdout went inline: nothing left to serve
            run.sandbox = None

    def recycle_spent(self) -> None:
        for box in self.spent:
            box.remove()
        self.spent.clear()

    def on_kill(self, msg: p.Kill) -> None:
        if msg.task_id < -1:
            return  # only -1 (all) is meaningful below 0: our mini tasks are not the manager's
        ids = list(self.tasks) if msg.task_id < 0 else [msg.task_id]
        for task_id in ids:
            run = self.tasks.pop(task_id, None)
            if run is None:
                continue
            if run.running and run.is_call:
                self.release(run)  # its library may still write there: never reuse it
                if run.sandbox is not None:
                    run.sandbox.destroy()
                    run.sandbox = None
            elif run.running:
                kill_group(run.pid)
                if run.fork_id:  # its server reports the exit; nobody waits for it now
                    self.forked.pop(run.fork_id, None)
                    self.release(run)
                else:
                    self.reap(run)
                if task_id in self.libraries:
                    self.library_ended(run)
            elif run.queued:
                self.unqueue(run)
            if run.sandbox is not None:
                run.sandbox.remove()

    def on_send_stdout(self, msg: p.SendStdout) -> None:
        run = self.tasks.get(msg.task_id)
        path = run.sandbox.stdout if run is not None and run.sandbox is not None else None
        if path is None:
            self.send(p.ErrorItem("process unknown: no stdout", 3))
            return
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            self.send(p.Stdout(msg.task_id, 0))
            return
        self.send(p.Stdout(msg.task_id, st.st_size))
        if st.st_size:
            self.outbox.append(FileSegment.of(path, st))

    # ------------------------------------------------------------------ cache objects
    def on_put(self, msg: p.Put) -> None:
        if self.receiving is not None:
            raise p.RemoteProtocolError(f"put {msg.cachename} inside the put of "
                                        f"{self.receiving[0].cachename}")
        dest = self.cache.receiving_path(msg.cachename)
        memory_max = msg.size if self.cache.fits_in_memory(msg.size, msg.level) else -1
        receiver = ItemReceiver(dest, memory_max)
        if memory_max < 0:
            free = shutil.disk_usage(self.cache.dir).free
            if msg.size > free:  # refused whole, not after filling the disk
                receiver.fail(OSError(errno.ENOSPC, f"{msg.size} bytes announced, "
                                                    f"{free} bytes of disk free"))
        self.receiving = (msg, receiver, int(time.time() * 1e6))

    def receive_item(self, event: Any) -> None:
        msg, receiver, start_us = self.receiving
        try:
            if not receiver.feed(event):
                return
        except p.RemoteProtocolError as e:
            receiver.abort()
            remove_tree(receiver.dest)
            raise p.RemoteProtocolError(f"put {msg.cachename}: {e}") from e
        self.put_done()

    def splice_content(self) -> None:
        """File content of a ``put``: socket → file in the kernel, until the socket is dry."""
        msg, receiver, _ = self.receiving
        for _ in range(64):
            try:
                n = self.splicer.move(self.sock, receiver.content_fd, self.decoder.raw_left)
            except (BlockingIOError, InterruptedError):
                return
            except SinkError as e:  # the disk refused it: read the rest, write nothing
                self.decoder.consume_raw(e.consumed)
                receiver.fail(e)
                if receiver.advance(e.consumed):
                    self.put_done()
                return
            except OSError as e:
                self.end("lost", f"receiving {msg.cachename}: {e}")
                return
            if n == 0:
                self.end("lost", "manager closed the connection")
                return
            self.decoder.consume_raw(n)
            if receiver.advance(n):
                self.put_done()
                return
            if not self.decoder.raw_left:
                return

    def put_done(self) -> None:
        msg, receiver, start_us = self.receiving
        self.receiving = None
        if receiver.error is not None:
            self.log(f"put {msg.cachename}: manager sent error {receiver.error}")
            return
        error = receiver.write_error
        if error is None:
            try:
                if receiver.content is not None:
                    update = self.cache.add_bytes(msg.cachename, bytes(receiver.content),
                                                  receiver.mode, msg.level, TYPE_PUT, start_us)
                else:
                    update = self.cache.add(msg.cachename, receiver.dest, msg.level, TYPE_PUT,
                                            start_us)
                self.send(update)
                return
            except (OSError, UnsafeName) as e:
                error = e
        remove_tree(receiver.dest)
        self.object_failed(msg.cachename, f"worker {self.config.worker_id} cannot store "
                                          f"{msg.cachename}: {error}")

    def object_failed(self, name: str, why: str, transfer_id: str | None = None) -> None:
        """Cache object ``name`` could not be stored, fetched or built here: tell the manager
        (``cache-invalid``) and forsake the tasks that need it, queued now or later (they may
        run on another worker)."""
        self.log(why)
        self.failed_objects.add(name)
        self.send(p.CacheInvalid(name, why.rstrip("\n") + "\n", transfer_id))
        self.forsake_waiting_for(name)

    def on_get(self, msg: p.Get) -> None:
        self._serve(msg.cachename, whole_tree=True)

    def on_getfile(self, msg: p.GetFile) -> None:
        self._serve(msg.cachename, whole_tree=False)

    def _serve(self, name: str, whole_tree: bool) -> None:
        try:
            path = self.cache.path(name)
        except UnsafeName:
            self.send(p.ErrorItem(name, 22))
            return
        held = self.cache.memory(name)
        if held is not None:
            if self.log.enabled:
                self.log(f"tx: item stream of {name}")
            for piece in outgoing_bytes(name, held.data, held.mode, held.mtime):
                self.outbox.append(piece)
        elif name not in self.cache:
            self.send(p.ErrorItem(name, 2))
        elif not whole_tree and not os.path.isfile(path):
            self.send(p.ErrorItem(name, 21))
        else:
            if self.log.enabled:
                self.log(f"tx: item stream of {name}")
            for piece in outgoing(path, name, follow_top=False):
                self.outbox.append(piece)

    def on_unlink(self, msg: p.Unlink) -> None:
        try:
            self.cache.remove(msg.cachename)
        except UnsafeName as e:
            self.log(f"unlink refused: {e}")
            return
        self.failed_objects.discard(msg.cachename)
        queued = self.fetcher.cancel(msg.cachename)
        if queued is not None:
            self.send(p.CacheInvalid(msg.cachename, "unlinked before it was fetched\n",
                                     queued.transfer_id))

    def on_puturl(self, msg: p.PutUrl) -> None:
        if msg.cachename in self.cache:
            self.send(self.cache.update_for(msg.cachename, msg.transfer_id))
        elif msg.cachename not in self.fetcher:
            self.fetcher.submit(msg)

    def on_fetched(self) -> None:
        for done in self.fetcher.collect():
            msg = done.msg
            if done.error is None:
                try:
                    self.send(self.cache.add(msg.cachename, done.path, msg.level,
                                             TYPE_TRANSFERRED, done.start_us, msg.transfer_id,
                                             source=msg.url))
                    continue
                except (OSError, UnsafeName) as e:
                    done.error = f"error storing {msg.url}: {e}\n"
            self.object_failed(msg.cachename, done.error, msg.transfer_id)

    # ------------------------------------------------------------------ transfer secret
    def settle_key(self, first: Any) -> None:
        """The manager's first message settles this session's transfer secret: it is one,
        or this manager gives none (the secret of an earlier session is dropped)."""
        self.keyed = True
        if not isinstance(first, p.TransferSecret):
            self.config.peer_key.secret = None

    def on_transfer_secret(self, msg: p.TransferSecret) -> None:
        key = self.config.peer_key
        if key.password is not None:
            self.log("transfer secret ignored: peers use the --password")
            return
        if not SECRET_FORM.fullmatch(msg.secret):
            raise p.RemoteProtocolError("a transfer secret must be 32 to 256 hex digits")
        key.secret = msg.secret.encode()
        self.log("transfer port: peers must now prove they hold the manager's secret")

    # ------------------------------------------------------------------ mini tasks
    def on_minitask(self, msg: p.MiniTaskMsg) -> None:
        """Queue the recipe that builds cache object ``msg.cachename`` (protocol spec §8.4)."""
        check_component(msg.cachename)
        check_relative(msg.outname)
        if msg.cachename in self.cache:
            self.send(self.cache.update_for(msg.cachename))
            return
        if self.being_built(msg.cachename):
            return  # the same recipe twice: one build serves both
        task_id = -(len(self.building) + 1)
        while task_id in self.building:
            task_id -= 1
        self.building[task_id] = msg
        run = TaskRun(p.TaskMsg(task_id, msg.body), Resources(0, 0, 0, 0))
        self.tasks[task_id] = run
        self.enqueue(run)

    def being_built(self, cachename: str) -> bool:
        return any(m.cachename == cachename for m in self.building.values())

    def mini_done(self, run: TaskRun, signaled: bool, code: int) -> None:
        """Move a mini task's product into the cache, or report why there is none."""
        msg = self.building.pop(run.msg.task_id)
        self.tasks.pop(run.msg.task_id, None)
        box, error = run.sandbox, None
        if box is None or code != 0 or signaled:
            how = "could not start" if box is None or code < 0 else (
                f"was killed by signal {code}" if signaled else f"exited with {code}")
            error = f"mini task for {msg.cachename} {how}"
        else:
            try:
                produced = box.output(msg.outname)
                if produced is None:
                    error = f"mini task for {msg.cachename} did not create {msg.outname!r}"
                else:
                    if msg.mode and os.path.isfile(produced) and not os.path.islink(produced):
                        os.chmod(produced, msg.mode & 0o777)
                    self.send(self.cache.add(msg.cachename, produced, msg.level, TYPE_MINI_TASK,
                                             run.start_us, source="mini_task"))
            except (UnsafeName, OSError) as e:
                error = f"mini task for {msg.cachename}: {e}"
        if error is not None:
            if box is not None:
                try:
                    with open(box.stdout, "rb") as f:
                        error += ": " + f.read(2000).decode("utf-8", "replace")
                except OSError:
                    pass
            self.object_failed(msg.cachename, error)
        if box is not None:
            box.remove()

    def forsake_waiting_for(self, cachename: str) -> None:
        """Queued tasks that needed a cache object that could not be fetched are forsaken."""
        self.forsake_queued(lambda body: any(m.cachename == cachename for m in body.infiles))

    def forsake_queued(self, doomed: Callable[[p.TaskBody], bool]) -> None:
        for run in self.queue:
            if run.queued and doomed(run.msg.body):
                self.unqueue(run)
                self.forsake(run)

    # ------------------------------------------------------------------ the rest
    def on_check(self, msg: p.Check) -> None:
        self.send(p.Alive())
        self.send(self.resources())

    def on_send_results(self, msg: p.SendResults) -> None:
        """The new tails of watched outputs (``update`` items), then ``end``. A file that
        shrank stops being watched."""
        self.results_announced = False
        for run in self.tasks.values():
            for w in list(run.watched):
                try:
                    with open(w.path, "rb") as f:
                        size = os.fstat(f.fileno()).st_size
                        if size < w.offset:
                            run.watched.remove(w)
                            continue
                        f.seek(w.offset)
                        data = f.read(min(size - w.offset, UPDATE_CHUNK))
                except OSError:
                    continue
                if data:
                    self.send(p.Update(run.msg.task_id, w.rel, w.offset, data))
                    w.offset += len(data)
        self.send(p.End())

    def close(self) -> None:
        """Kill every task, drop sandboxes and task/workflow-level cache objects."""
        self.on_kill(p.Kill(-1))
        self.recycle_spent()
        self.queue.clear()
        if self.receiving is not None:
            self.receiving[1].abort()
            remove_tree(self.receiving[1].dest)
            self.receiving = None
        self.cache.clear(1)
        self.pool.clear()
        for server in self.forks.values():
            server.close()
        self.sel.close()
        self.outbox.close()
        self.splicer.close()
        self.fetcher.abandon()
        try:
            self.sock.close()
        except OSError:
            pass


def set_deadline(run: TaskRun) -> None:
    """When a task that starts now must end: its wall time or end time, if any."""
    body, deadlines = run.msg.body, []
    if body.wall_time:
        deadlines.append((run.start_us / 1e6 + int(body.wall_time), RESULT_MAX_WALL_TIME))
    if body.end_time:
        deadlines.append((float(int(body.end_time)), RESULT_MAX_END_TIME))
    if deadlines:
        run.deadline = min(deadlines)


def _hide_secret(line: str) -> str:
    """A received line for the debug log, with a transfer secret blanked out."""
    return "transfer-secret (hidden)" if line.startswith("transfer-secret") else line


def _sandbox_name(msg: p.TaskMsg) -> str:
    body = msg.body
    if msg.task_id < 0:
        return f"mini.{-msg.task_id}"
    if body.needs_library is not None:
        return f"func.{msg.task_id}"
    if body.provides_library is not None:
        return f"libr.{msg.task_id}"
    return f"task.{msg.task_id}"


HANDLERS: dict[type, Callable[[Session, Any], None]] = {
    p.TaskMsg: Session.on_task,
    p.Put: Session.on_put,
    p.Get: Session.on_get,
    p.GetFile: Session.on_getfile,
    p.Unlink: Session.on_unlink,
    p.Kill: Session.on_kill,
    p.SendStdout: Session.on_send_stdout,
    p.SendResults: Session.on_send_results,
    p.Check: Session.on_check,
    p.Release: lambda s, m: s.end("released", "released by the manager"),
    p.Exit: lambda s, m: s.end("exit", "told to exit by the manager"),
    p.PutUrl: Session.on_puturl,
    p.MiniTaskMsg: Session.on_minitask,
    p.TransferSecret: Session.on_transfer_secret,
}
