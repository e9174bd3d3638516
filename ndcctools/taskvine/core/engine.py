"""The manager's engine: one single-threaded loop that runs inside ``wait()``.

Theory of operation. Like upstream, nothing happens between calls: ``submit()`` only queues,
and ``wait()`` turns the crank until a task can be returned or the time is up. One turn of
the crank (``_cycle``) has four named phases::

    schedule   ready tasks → workers with room (allocation + choice of worker: pure policies)
    flush      queued bytes → sockets (non-blocking; file contents with sendfile)
    poll       select(); accept new connections; read, decode, dispatch each message
    timers     each second: keepalives, slow tasks, overdue transfers, catalog (``timers.py``)

Every message from a worker goes to exactly one handler, found in ``_HANDLERS`` by type:
``complete`` here, the bookkeeping ones in ``worker_messages.py``. Reply events (items,
stdout) go to the reply at the head of that connection's FIFO. A connection that sends
something malformed or unknown is closed, the reason goes to the debug log, and its tasks go
back to the queue; the other workers are not affected. Beside the engine: ``instances.py``
starts and stops library instances, ``task_changes.py`` logs every task state change. The
methods those modules call back (``send``, ``request``, ``release``, ``remove_worker``...)
are the engine's, since the engine owns the connections and the worker table.
"""

from __future__ import annotations

import dataclasses
import math
import os
import selectors
import socket
import ssl
import time
import traceback
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from .. import cvine
from .. import protocol as p
from ..file import File
from ..resources import Resources
from ..results import result_string
from ..security import new_secret
from . import instances, scheduling, timers
from . import worker_messages as wm
from .admission import Admission, Pending
from .allocation import Policy, allocate, can_ever_fit, fits
from .categories import Categories
from .connection import Connection
from .debuglog import wire_lines
from .delivery import Delivery
from .instances import write_whole
from .libraries import LibraryTable
from .listener import Listener
from .monitoring import Monitoring
from .perflog import PerfLog
from .retrieval import BufferReply, OutputReply, StdoutReply
from .status import snapshot
from .task_changes import TaskChangeLog, result_name
from .tasks import (
    READY,
    RETRIEVED,
    RUNNING,
    WAITING_RETRIEVAL,
    TaskRecord,
    TaskTable,
)
from .workers import WorkerRecord

if TYPE_CHECKING:
    from ..task import Task
    from .debuglog import DebugLog
    from .taskgraph import TaskGraphLog
    from .tuning import Tuning
    from .txnlog import TransactionLog

RETRYABLE = {cvine.VINE_RESULT_RESOURCE_EXHAUSTION, cvine.VINE_RESULT_SANDBOX_EXHAUSTION}
_WAKER = object()  # selector data of the waker socket (make_waker)
MAX_UNIDENTIFIED = 1024  # connections that have not said hello; more are refused
HELLO_TIMEOUT = 30.0  # seconds a connection has to say hello (upstream: keepalive-timeout)
# (both read at each use, so tests may lower them)
FORSAKEN_STREAK_MAX = 10  # a worker that forsakes this many tasks in a row is dropped
NOTHING = Resources(0, 0, 0, 0)  # what a function call occupies
_WITH_BODY = (p.TaskMsg, p.MiniTaskMsg)  # messages of several lines, each one logged
NO_OUTPUTS = {cvine.VINE_RESULT_INPUT_MISSING, cvine.VINE_RESULT_FORSAKEN,
              cvine.VINE_RESULT_RESOURCE_EXHAUSTION}


class Engine:
    """Owns the listening socket, the connections, the task table and the worker table."""

    def __init__(self, listener: socket.socket, tuning: Tuning, debug: DebugLog,
                 txn: TransactionLog, graph: TaskGraphLog,
                 clock: Callable[[], float] = time.time):
        self.tuning = tuning
        self.debug = debug
        self.txn = txn
        self.graph = graph
        self.clock = clock
        self.sel = selectors.DefaultSelector()
        self.listener = Listener(listener, self.sel, debug)
        self.port = self.listener.port
        self.categories = Categories(tuning, txn=txn)  # per-category state, allocation modes
        self.changes = TaskChangeLog(debug, self.categories, txn)  # .history: observe/
        self.tasks = TaskTable(self.changes.changed)
        self.workers: dict[Connection, WorkerRecord] = {}
        self.status_conns: set[Connection] = set()
        self.blocked: dict[str, float] = {}  # host -> until (0 = forever)
        self.monitoring = Monitoring(debug)  # enable_monitoring: what workers measure
        self.scheduler = cvine.VINE_SCHEDULE_FILES  # set_scheduler(); tasks may override it
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.status_builder: Callable[[str], bytes] | None = None
        self.periodic: Callable[[], None] | None = None  # the facade's timer (catalog updates)
        self._waker: tuple[socket.socket, socket.socket] | None = None  # see make_waker
        self._woken = False
        self._to_flush: set[Connection] = set()
        self.delivery = Delivery(self.workers, self.tasks, tuning, debug, txn, self.counters,
                                 self.send, self.send_raw, self.drop_replica, self._wake)
        self.replicas = self.delivery.replicas
        self.transfers = self.delivery.transfers
        self.libraries = LibraryTable()
        self.library_logs = ""  # where instances' output goes with watch-library-logfiles
        self._dirty = True
        self._next_timers = 0.0
        self._closed = False
        self.admission: Admission | None = None  # TLS and passwords (secure())
        self.transfer_secret: bytes | None = None  # handed to our workers (security.py)
        self.unidentified = 0  # connections that have not said hello (or asked for status)
        self._refusing = False  # new connections refused: too many unidentified ones
        self.perf = PerfLog(os.path.join(os.path.dirname(debug.path), "performance"),
                            lambda: snapshot(self, 0), self._perf_fingerprint,
                            lambda: self.tuning.perf_log_interval, clock)

    def _perf_fingerprint(self) -> tuple:
        """Changes whenever a task changes state or a worker comes or goes."""
        return (*self.counters.values(), *self.tasks.counts, len(self.workers))

    def flush_logs(self) -> None:
        """Write out what the logs hold (the timer and an idle wait call this)."""
        self.debug.flush()
        self.txn.flush()
        self.graph.flush()
        self.perf.flush()

    def secure(self, tls: ssl.SSLContext | None, password: bytes | None) -> None:
        """Demand TLS and/or the password from connections accepted from now on; without a
        password our workers get a per-run transfer secret instead."""
        if tls is None and password is None:
            self.admission = None
        elif self.admission is None:
            self.admission = Admission(self.sel, self.debug, tls, password, self._admit)
        else:
            self.admission.tls, self.admission.password = tls, password
        if password is not None:
            self.transfer_secret = None  # workers prove the password to each other instead
        elif self.transfer_secret is None:
            self.transfer_secret = new_secret()

    # ------------------------------------------------------------------ user operations
    def submit(self, task: Task) -> TaskRecord:
        rec = self.tasks.submit(task)
        for mount in task._outputs:
            self.delivery.producers[mount.file._cachename] = task
            if mount.flags & cvine.VINE_WATCH:
                write_whole(mount.file._source, b"")  # the worker streams into it
        rec.metrics["time_when_submitted"] = int(self.clock() * 1e6)
        self.counters["tasks_submitted"] += 1
        self._dirty = True
        return rec

    def wait(self, timeout: float | None, tag: str | None = None, task_id: int = -1) -> Task | None:
        """Run until a finished task matching ``tag``/``task_id`` can be returned."""
        task = self._wait(timeout, tag, task_id)
        self.perf.wait_ended(task is not None)
        return task

    def _wait(self, timeout: float | None, tag: str | None, task_id: int) -> Task | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        cycled = False
        while True:
            rec = self.tasks.take_returnable(tag, task_id)
            if rec is not None:
                return self._hand_back(rec)
            left = 1.0 if deadline is None else deadline - time.monotonic()
            in_flight = bool(self.tasks.records)
            if cycled and (not in_flight or left <= 0):
                return None
            self._cycle(max(0.0, min(left, 1.0)) if in_flight else 0.0)
            cycled = True
            if self._woken:
                self._woken = False
                return None

    def _hand_back(self, rec: TaskRecord) -> Task:
        self.tasks.hand_back(rec)
        rec.metrics["time_when_done"] = int(self.clock() * 1e6)
        c = self.counters
        c["tasks_done"] += 1
        if rec.result == cvine.VINE_RESULT_SUCCESS and rec.exit_code == 0:
            c["tasks_successful"] += 1
        else:
            c["tasks_failed"] += 1
        if rec.result == cvine.VINE_RESULT_CANCELLED:
            c["tasks_cancelled"] += 1
        self.txn.task_done(rec.task_id, result_name(rec.result), rec.exit_code)
        self.graph.task(rec.task_id, rec.task)
        return rec.task

    def cancel(self, rec: TaskRecord) -> bool:
        """Cancel a task that has not been retrieved yet."""
        if rec.state == RETRIEVED or rec.cancelled:
            return False
        rec.cancelled = True
        if rec.state == READY:
            self.tasks.finish(rec)
        elif rec.state == RUNNING:
            self.kill_on_worker(rec)
            self.tasks.finish(rec)
        return True  # WAITING_RETRIEVAL: finishes as cancelled once its outputs are in

    def block(self, host: str, seconds: float = 0) -> None:
        """Send no tasks to workers on ``host`` for ``seconds`` (< 1: until unblocked)."""
        self.blocked[host] = self.clock() + seconds if seconds >= 1 else 0

    def kill_on_worker(self, rec: TaskRecord) -> None:
        """Stop running task ``rec`` on its worker and give its resources back there."""
        w = rec.worker
        self._free_slot(rec)
        self.release(rec)
        self.send(w, p.Kill(rec.task_id))

    def forget_file(self, cachename: str, undeclared: bool = True) -> None:
        """Remove a file from the caches of workers where no task uses it (and, when it is
        undeclared, forget how to re-create it)."""
        for w in list(self.replicas.holders(cachename)) + list(self.workers.values()):
            if cachename in w.cache and not w.file_users.get(cachename):
                self.drop_replica(w, cachename)
                self.send(w, p.Unlink(cachename))
        if undeclared:
            self.delivery.forget(cachename)
        self._flush()

    def _wake(self) -> None:
        """Something changed that may let a task be dispatched."""
        self._dirty = True

    def drop_replica(self, w: WorkerRecord, cachename: str) -> None:
        w.cache_bytes -= w.cache.pop(cachename, 0) or 0
        self.replicas.drop(cachename, w)

    def fetch(self, file: File, timeout: float = 60.0) -> bytes | None:
        """Bring the contents of a file that lives only on workers back into ``file._data``."""
        deadline = time.monotonic() + timeout
        outcome: list[bytes | None] = []
        if not self.fetch_async(file, outcome.append):
            return None
        while not outcome and time.monotonic() < deadline:
            self._cycle(min(0.1, max(0.0, deadline - time.monotonic())))
        return outcome[0] if outcome else None

    def fetch_async(self, file: File, done: Callable[[bytes | None], None]) -> bool:
        """Ask a worker holding ``file`` for its contents; ``done(data)`` is called from a
        later cycle, with None if it could not be had (a holder that is lost meanwhile is
        replaced by another). False (and no call) if no worker holds it now."""
        holders = [w for w in self.replicas.holders(file._cachename) if not w.conn.closed]
        if not holders:
            return False
        w = holders[0]
        probe = SimpleNamespace(output_missing=False)

        def arrived(_rec: Any, ok: bool) -> None:
            if ok and not probe.output_missing:
                done(file._data)
            elif ok or not self.fetch_async(file, done):
                done(None)
        w.conn.replies.append(BufferReply(probe, file, arrived, self._count_received))
        self.send(w, p.GetFile(file._cachename))
        return True

    def run_once(self, timeout: float) -> None:
        """One cycle of the loop (I/O for fetches and transfers, with no task waited for)."""
        self._cycle(timeout)

    def make_waker(self) -> Callable[[], None]:
        """A function any thread may call to make the engine's current (or next) ``wait``
        return None at once: for a thread that drives the engine while others hand it work."""
        if self._waker is None:
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self.sel.register(reader, selectors.EVENT_READ, _WAKER)
            self._waker = (reader, writer)
        writer = self._waker[1]

        def wake() -> None:
            try:
                writer.send(b"w")
            except OSError:  # full (a wake is pending anyway) or closed
                pass
        return wake

    def shutdown_workers(self, n: int) -> int:
        """Tell ``n`` workers (0 = all), idle ones first, to exit."""
        joined = sorted((w for w in self.workers.values() if w.hostname != "unknown"),
                        key=lambda w: len(w.tasks))
        told = joined if n <= 0 else joined[:n]
        for w in told:
            self.send(w, p.Exit())
        self._flush()
        return len(told)

    # ------------------------------------------------------------------ the cycle
    def _cycle(self, timeout: float) -> None:
        self._schedule()
        self._flush()
        busy = self._dirty or self._to_flush
        if not busy and timeout > 0:  # about to idle: make the logs current first
            self.flush_logs()
        for key, mask in self.sel.select(0 if busy else timeout):
            if key.data is None:
                self._accept()
                continue
            if key.data is _WAKER:
                self._drain_waker()
                continue
            if type(key.data) is Pending:
                self.admission.step(key.data)
                continue
            conn = key.data
            if mask & selectors.EVENT_WRITE:
                self._to_flush.add(conn)
            if mask & selectors.EVENT_READ:
                self._read(conn)
        if self._schedule():
            self._flush()  # new work goes out now; clean-up messages may wait a cycle
        self.listener.resume_if_due()
        now = time.monotonic()
        if now >= self._next_timers:
            self._next_timers = now + 1.0
            timers.every_second(self, HELLO_TIMEOUT)

    def _drain_waker(self) -> None:
        try:
            while self._waker[0].recv(4096):
                pass
        except OSError:
            pass
        self._woken = True

    def _accept(self) -> None:
        for sock, addr in self.listener.accept(int(self.tuning.max_new_workers) or 10):
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError as e:  # gone already
                self.debug.write("tcp", f"connection from {addr} lost at once: {e}")
                sock.close()
                continue
            if self.unidentified >= MAX_UNIDENTIFIED:
                if not self._refusing:
                    self.debug.write("tcp", f"{MAX_UNIDENTIFIED} connections have not said "
                                     "hello yet: refusing new ones until some do (logged once)")
                self._refusing = True
                sock.close()
                continue
            self._refusing = False
            if self.admission is not None:
                self.admission.add(sock, addr)
            else:
                self._admit(sock, addr, b"")

    def _admit(self, sock: socket.socket, addr: tuple, leftover: bytes) -> None:
        """A connection that may speak (authenticated, if the manager asks for that)."""
        addrport = f"{addr[0]}:{addr[1]}"
        conn = Connection(sock, addrport)
        w = WorkerRecord(conn, addrport, self.clock())
        conn.worker = w
        conn.decoder.trace = lambda line, w=w: self.debug.rx(w.hostname, w.addrport, line)
        self.workers[conn] = w
        self.unidentified += 1
        self.sel.register(sock, selectors.EVENT_READ, conn)
        self.debug.write("tcp", f"worker {addrport} connected")
        if leftover:
            conn.decoder.feed(leftover)
        if leftover or isinstance(sock, ssl.SSLSocket):  # TLS may hold decrypted bytes
            self._read(conn)

    def _read(self, conn: Connection) -> None:
        if conn in self.status_conns:  # answered already: ignore the rest (HTTP headers)
            if not conn.recv():
                self._drop_status(conn)
            return
        w = conn.worker
        alive = conn.recv()
        try:
            while not conn.closed and (event := conn.decoder.next_event()) is not None:
                w.last_heard = self.clock()
                w.check_sent = 0.0
                handler = _HANDLERS.get(type(event))
                if handler is not None:
                    handler(self, w, event)
                    if conn in self.status_conns:
                        return
                elif conn.replies:
                    if conn.replies[0].on_event(event):
                        conn.replies.popleft()
                else:
                    raise p.RemoteProtocolError(f"unexpected {type(event).__name__} "
                                                "with no request outstanding")
        except p.RemoteProtocolError as e:
            self.debug.write("vine", f"{w.label()}: protocol error: {e}; disconnecting")
            self.remove_worker(w, "FAILURE")
            return
        except Exception:  # a message we could not handle: that peer goes, never the program
            self.debug.write("vine", f"{w.label()}: a message could not be handled; "
                             f"disconnecting:\n{traceback.format_exc()}")
            self.remove_worker(w, "FAILURE")
            return
        if not alive and not conn.closed:
            self.remove_worker(w, "FAILURE" if self.tasks.records else "UNKNOWN")

    def _flush(self) -> None:
        while self._to_flush:
            conn = self._to_flush.pop()
            if conn.closed:
                continue
            try:
                empty = conn.flush()
            except OSError as e:
                self.debug.write("vine", f"{conn.worker.label()}: send failed: {e}")
                self.remove_worker(conn.worker, "FAILURE")
                continue
            want = not empty
            if want != conn.want_write:
                conn.want_write = want
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
                self.sel.modify(conn.sock, events, conn)
            if empty and conn in self.status_conns:
                self._drop_status(conn)

    def send(self, w: WorkerRecord, msg: Any) -> None:
        data = msg.encode()
        if type(msg) in _WITH_BODY:
            self.debug.tx_lines(w.hostname, w.addrport, wire_lines(data))
        else:
            self.debug.tx(w.hostname, w.addrport,
                          data[:data.find(b"\n")].decode("utf-8", "replace"))
        w.conn.send(data)
        self._to_flush.add(w.conn)

    def send_raw(self, w: WorkerRecord, piece: Any) -> None:
        w.conn.send(piece)
        self._to_flush.add(w.conn)

    # ------------------------------------------------------------------ scheduling
    def _schedule(self) -> bool:
        """Dispatch what fits; True if any task was sent."""
        if not self._dirty:
            return False
        self._dirty = False
        if not self.tasks.counts[READY]:
            return False  # (calls and library instances are READY tasks too)
        mult = self.tuning.resource_submit_multiplier
        now, blocked = self.clock(), self.blocked  # (this walk is per pass: keep it lean)
        candidates = [w for w in self.workers.values() if w.ready and w.has_room(mult)
                      and w.paused_until <= now and not (blocked and w.hostname in blocked)]
        if self.tuning.wait_for_workers > len(self.workers):
            return False
        if not candidates and not self.libraries.instances:
            return False
        dispatched = False
        depth = int(self.tuning.attempt_schedule_depth)
        now_us = self.clock() * 1e6
        policy = self.tuning.policy
        expired: list[tuple[TaskRecord, int, str]] = []  # (task, result, why)
        to_recover: list[str] = []
        wanted: set[str] = set()  # libraries whose calls found no free slot
        ready_calls = self.tasks.ready_calls
        others = self.tasks.count(READY) - sum(ready_calls.values())  # ready tasks not calls
        call_libraries = sum(1 for n in ready_calls.values() if n > 0)
        starved: TaskRecord | None = None  # the first task that found no room anywhere
        cats = self.categories
        for rec in self.tasks.ready_in_order():
            task = rec.task
            if cats.limited and rec.library is None and cats.full(task._category):
                continue  # its category runs as many as it may (not counted in the depth)
            depth -= 1
            if depth < 0:
                break
            if task._library_required in wanted:
                if not others and len(wanted) >= call_libraries:
                    break  # only calls are left, and none of them can be placed
                continue  # an earlier call of this library found no free slot
            if task._time_end and now_us >= task._time_end:
                expired.append((rec, cvine.VINE_RESULT_MAX_END_TIME, ""))
                continue
            if task._time_start and now_us < task._time_start:
                continue
            if rec.retry_at and rec.retry_at * 1e6 > now_us:
                continue  # forsaken lately: backing off
            if task._strict:
                placed = self.delivery.strict_inputs_placed(task)
                if placed is None:
                    expired.append((rec, cvine.VINE_RESULT_FIXED_LOCATION_MISSING, ""))
                if not placed:
                    continue
            if task._inputs:
                missing = self.delivery.inputs_pending(task, to_recover)
                if missing is not None:
                    if missing:
                        expired.append((rec, cvine.VINE_RESULT_INPUT_MISSING, missing))
                    continue
            if task._library_required is not None:
                dispatched |= self._place_call(rec, expired, wanted)
                continue
            if rec.library is not None and not self.libraries.exists(rec.library):
                expired.append((rec, cvine.VINE_RESULT_MISSING_LIBRARY, ""))
                continue
            choice = self._choose_worker(rec, candidates, policy, mult) if candidates else None
            if choice is None:
                starved = starved or rec
                continue
            w, alloc = choice
            self._dispatch(rec, w, alloc)
            dispatched = True
            if not w.has_room(mult):
                candidates.remove(w)
                if not candidates and not self.libraries.has_free_slot():
                    break
        for rec, result, why in expired:
            self._end_undispatched(rec, result, why)
        for name in to_recover:
            self.delivery.recover(name)
        for name in wanted:
            instances.start(self, name)
        if starved is not None and self.libraries.instances:
            self._evict_idle_library(starved, wanted, mult)
        return dispatched

    def _place_call(self, rec: TaskRecord, expired: list, wanted: set[str]) -> bool:
        """Send a function call to an instance of its library with a free slot; True if
        sent. Without one, the library is ``wanted``; without the library, the call ends."""
        name = rec.task._library_required
        if not self.libraries.exists(name):
            rec.stdout = self.libraries.why_missing(name)
            expired.append((rec, cvine.VINE_RESULT_MISSING_LIBRARY, ""))
            return False
        inst = self.libraries.slot_for(name)
        if inst is None:
            wanted.add(name)
            return False
        if rec.task._inputs and not self.delivery.can_deliver(rec.task, inst.worker):
            return False
        inst.calls.add(rec.task_id)
        rec.instance = inst
        self._dispatch(rec, inst.worker, NOTHING)
        return True

    def _free_slot(self, rec: TaskRecord) -> None:
        if rec.instance is not None:
            rec.instance.calls.discard(rec.task_id)
            rec.instance = None

    def _choose_worker(self, rec: TaskRecord, candidates: list[WorkerRecord], policy: Policy,
                       mult: float) -> tuple[WorkerRecord, Resources] | None:
        """Among workers with room, the one the task's scheduler (else the manager's) likes
        best (``scheduling.score``): by default the one holding most of its input bytes."""
        task = rec.task
        mode = task._scheduler or self.scheduler
        first_fit = mode == scheduling.FILES and not task._inputs  # every score is 0
        limits = self.categories.limits(rec)
        best, best_alloc, best_score = None, None, None
        for w in candidates:
            if w is rec.slow_on:
                continue
            free = w.free(mult)
            score = scheduling.score(mode, task, w, free)
            if best is not None and not score > best_score:
                continue  # it cannot win: its allocation need not be computed
            alloc = self._allocation(rec, w, policy, limits)
            if alloc is None or not fits(alloc, free):
                continue
            best, best_alloc, best_score = w, alloc, score
            if first_fit:
                break
        return None if best is None else (best, best_alloc)

    def _allocation(self, rec: TaskRecord, w: WorkerRecord, policy: Policy,
                    limits: tuple[dict | None, dict | None] | None = None) -> Resources | None:
        """What ``rec`` would get on ``w``, or None if ``w`` cannot run it at all (features,
        size, inputs it cannot receive now, an instance of that library already there)."""
        task = rec.task
        if task._features and not w.features.issuperset(task._features):
            return None
        if rec.library is not None and self.libraries.on_worker(w, rec.library):
            return None
        disk = max(task._disk, rec.min_disk) if rec.min_disk else task._disk
        request = Resources(task._cores, task._memory, disk, task._gpus)
        if not can_ever_fit(request, w.total):
            return None
        if task._inputs and not self.delivery.can_deliver(task, w):
            return None
        cmax, cmin = limits or self.categories.limits(rec)
        avail_disk = w.total.disk - w.cache_bytes / 1e6
        return allocate(request, w.total, avail_disk, policy, cmax, cmin,
                        task._memory >= 0 or request.disk >= 0)

    def _evict_idle_library(self, rec: TaskRecord, wanted: set[str], mult: float) -> None:
        """Stop one idle library instance whose resources would let ``rec`` run, unless
        calls of that library are waiting."""
        policy = self.tuning.policy
        for inst in self.libraries.idle():
            w = inst.worker
            if inst.rec.library in wanted or not w.ready or inst.rec.allocation is None:
                continue
            alloc = self._allocation(rec, w, policy)
            if alloc is None:
                continue
            free = w.free(mult)
            free.add(inst.rec.allocation)
            if fits(alloc, free):
                self.debug.write("vine", f"stopping idle library {inst.rec.library} "
                                 f"(task {inst.rec.task_id}) on {w.label()} to run task "
                                 f"{rec.task_id}")
                self.libraries.instances.pop(inst.rec.task_id, None)
                instances.stop(self, inst.rec)
                return

    def _dispatch(self, rec: TaskRecord, w: WorkerRecord, alloc: Resources) -> None:
        task = rec.task
        unsendable = self.delivery.unsendable_input(task, w)
        if unsendable is not None:
            self._end_undispatched(rec, cvine.VINE_RESULT_INPUT_MISSING, unsendable)
            return
        rec.metrics["time_when_commit_start"] = int(self.clock() * 1e6)
        for mount in task._inputs:
            self.delivery.put_input(w, mount.file)
        for mount in task._outputs:
            name = mount.file._cachename
            w.file_users[name] = w.file_users.get(name, 0) + 1
        body = p.TaskBody(
            command=task._full_command(), category=task._category, cores=alloc.cores,
            gpus=alloc.gpus,
            memory=alloc.memory, disk=alloc.disk,
            end_time=task._time_end / 1e6 if task._time_end else None,
            wall_time=task._time_max or None,
            env=tuple(f"{k}={v}" for k, v in task._env.items() if v is not None),
            infiles=tuple(p.Mount(m.file._cachename, m.remote_name, m.flags) for m in task._inputs),
            outfiles=tuple(p.Mount(m.file._cachename, m.remote_name, m.flags)
                           for m in task._outputs),
            needs_library=task._library_required,
            monitor=None if rec.library is not None or task._library_required is not None
            else self.monitoring.for_worker(w, self.tuning.monitor_interval))
        rec.measured = rec.limits_exceeded = None
        if rec.library is not None:
            if self.tuning.watch_library_logfiles and self.library_logs:
                log = instances.log_mount(self, rec)
                body = dataclasses.replace(body, outfiles=(*body.outfiles, log))
            slots = self.libraries.dispatched(rec, w, alloc.cores)
            body = dataclasses.replace(body, provides_library=rec.library, function_slots=slots,
                                       func_exec_mode=task._exec_mode or None)
            self.txn.library(rec.task_id, "SENT", w.worker_id)
        self.send(w, p.TaskMsg(rec.task_id, body))
        rec.metrics["time_when_commit_end"] = int(self.clock() * 1e6)
        rec.worker, rec.allocation = w, alloc
        rec.hostname, rec.addrport = w.hostname, w.addrport
        rec.attempts += 1
        w.committed.add(alloc)
        w.tasks[rec.task_id] = rec
        self.counters["tasks_dispatched"] += 1
        self.tasks.move(rec, RUNNING)

    def release(self, rec: TaskRecord) -> None:
        """Give the task's allocation back to its worker."""
        w = rec.worker
        if w is not None:
            w.tasks.pop(rec.task_id, None)
            if rec.allocation is not None:
                w.committed.add(rec.allocation, -1)
            self._dirty = True

    # ------------------------------------------------------------------ completion
    def _on_complete(self, w: WorkerRecord, msg: p.Complete) -> None:
        rec = w.tasks.get(msg.task_id)
        if rec is None:
            return  # a task we killed or never sent: tolerated (spec §12)
        if rec.library is not None:
            instances.ended(self, w, rec, msg)
            return
        self._free_slot(rec)
        self.release(rec)
        rec.time_worker_start, rec.time_worker_end = msg.start_us, msg.end_us
        rec.sandbox_mb = msg.sandbox_mb
        w.finished(msg.end_us - msg.start_us)
        result = msg.result
        forsaken = result == cvine.VINE_RESULT_FORSAKEN
        if not rec.task._library_required:  # calls come back forsaken when their library dies
            w.forsaken_streak = w.forsaken_streak + 1 if forsaken else 0
        if forsaken or result in RETRYABLE:
            self._retry_or_fail(rec, w, result, msg.exit_code)
            if w.forsaken_streak >= FORSAKEN_STREAK_MAX:
                self.debug.write("vine", f"{w.label()} forsook {w.forsaken_streak} tasks in a "
                                 "row without completing any: disconnecting it")
                self.remove_worker(w, "FAILURE")
            return
        rec.result, rec.exit_code = result, msg.exit_code
        rec.stdout_length = msg.output_length
        self.tasks.move(rec, WAITING_RETRIEVAL)
        if msg.output_length == 0 or msg.inline_stdout:
            rec.stdout = msg.inline_stdout
        else:
            self.request(w, rec, p.SendStdout(rec.task_id),
                          StdoutReply(rec, int(self.tuning.max_task_stdout_storage),
                                      self._reply_done))
        if result not in NO_OUTPUTS:
            succeeded = result == cvine.VINE_RESULT_SUCCESS and msg.exit_code == 0
            skip = cvine.VINE_SUCCESS_ONLY if not succeeded else cvine.VINE_FAILURE_ONLY
            for mount in rec.task._outputs:
                if mount.flags & skip:
                    continue
                if mount.file._type == cvine.VINE_TEMP and mount.file._cachename not in w.cache:
                    rec.output_missing = True
                self._fetch_output(w, rec, mount.file)
        if rec.pending_replies == 0:
            self._finalize(rec, w)

    def _end_undispatched(self, rec: TaskRecord, result: int, why: str) -> None:
        """End a task that never reached a worker; ``why`` (if any) explains it in the debug
        log and becomes the task's output. For a library instance that is a failure of its
        library, and ``why`` is what its calls are told if it is the last one."""
        why = why.rstrip("\n") or result_string(result)
        self.debug.write("vine", f"task {rec.task_id} ends before reaching a worker: {why}")
        if rec.library is not None:
            instances.failed(self, rec, f"the library could not start: {why}\n".encode(),
                                  "before it started")
        elif rec.stdout is None and why != result_string(result):
            rec.stdout = f"{why}\n".encode()
        self.tasks.finish(rec, result)

    def remove_library(self, name: str) -> None:
        """Drop template ``name`` and stop its instances."""
        for inst in self.libraries.remove(name):
            instances.stop(self, inst.rec)
        for rec in list(self.tasks.instances.values()):
            if rec.library == name and rec.state == READY:
                self.tasks.finish(rec, cvine.VINE_RESULT_CANCELLED)
        instances.end_calls_of(self, name)
        self._flush()

    def _retry_or_fail(self, rec: TaskRecord, w: WorkerRecord, result: int, code: int) -> None:
        """Forsaken or exhausted: back to the queue unless the task's limit is reached."""
        task = rec.task
        self.send(w, p.Kill(rec.task_id))
        self._unlink_unused(w, rec)
        if result == cvine.VINE_RESULT_FORSAKEN:
            rec.forsaken += 1
            again = task._max_forsaken < 0 or rec.forsaken <= task._max_forsaken
            rec.retry_at = self.clock() + forsaken_delay(rec.forsaken,
                                                         self.tuning.transient_error_interval)
        else:
            again = task._retries < 0 or rec.attempts <= task._retries
            self.counters["tasks_exhausted_attempts"] += 1
            if result == cvine.VINE_RESULT_SANDBOX_EXHAUSTION:
                again = again and self._grow_sandbox(rec)
            else:  # automatic categories retry with their max, once
                again = self.categories.exhausted(rec) and again
        rec.worker = None
        if again and not rec.cancelled:
            self.tasks.make_ready(rec)
        else:
            if result != cvine.VINE_RESULT_FORSAKEN:
                rec.exit_code = code
            self.tasks.finish(rec, result)

    def _grow_sandbox(self, rec: TaskRecord) -> bool:
        """Ask for ``sandbox-grow-factor`` times the disk the sandbox outgrew; False if no
        connected worker has that much (the task then ends with sandbox exhaustion)."""
        used = max(rec.sandbox_mb, rec.allocation.disk if rec.allocation else 0, 1)
        rec.min_disk = max(rec.min_disk, math.ceil(used * self.tuning.sandbox_grow_factor))
        if any(w.total.disk >= rec.min_disk for w in self.workers.values() if w.ready):
            return True
        self.debug.write("vine", f"task {rec.task_id} needs {rec.min_disk} MB of sandbox, more "
                         "than any connected worker has")
        return False

    def _fetch_output(self, w: WorkerRecord, rec: TaskRecord, file: File) -> None:
        if file._type == cvine.VINE_FILE:
            reply = OutputReply(rec, file._source, w.cache.get(file._cachename),
                                self._reply_done, self._count_received)
            self.request(w, rec, p.Get(file._cachename), reply)
        elif file._type == cvine.VINE_BUFFER:
            self.request(w, rec, p.GetFile(file._cachename),
                         BufferReply(rec, file, self._reply_done, self._count_received))

    def request(self, w: WorkerRecord, rec: TaskRecord, msg: Any, reply: Any) -> None:
        rec.pending_replies += 1
        w.conn.replies.append(reply)
        self.send(w, msg)

    def _count_received(self, n: int) -> None:
        self.counters["bytes_received"] += n

    def _reply_done(self, rec: TaskRecord, ok: bool) -> None:
        rec.pending_replies -= 1
        if rec.state != WAITING_RETRIEVAL:
            return
        if not ok:  # the worker went away with our outputs: run the task again
            rec.pending_replies = 0
            rec.worker = None
            self.tasks.make_ready(rec)
            self._dirty = True
            return
        if rec.pending_replies == 0:
            self._finalize(rec, rec.worker)

    def _finalize(self, rec: TaskRecord, w: WorkerRecord) -> None:
        """Outputs are in: clean the worker side and queue the task for ``wait()``."""
        self._unlink_unused(w, rec)
        self.send(w, p.Kill(rec.task_id))
        if rec.output_error is not None:
            self.debug.write("vine", f"task {rec.task_id}: output transfer error: "
                             f"{rec.output_error}")
            if rec.result == cvine.VINE_RESULT_SUCCESS:
                rec.result = cvine.VINE_RESULT_OUTPUT_TRANSFER_ERROR
        if rec.output_missing and rec.result == cvine.VINE_RESULT_SUCCESS:
            rec.result = cvine.VINE_RESULT_OUTPUT_MISSING
        if rec.stdout_truncated and rec.result == cvine.VINE_RESULT_SUCCESS:
            self.debug.write("vine", f"task {rec.task_id}: stdout longer than "
                             f"max-task-stdout-storage: only its first "
                             f"{len(rec.stdout)} bytes kept")
            rec.result = cvine.VINE_RESULT_STDOUT_MISSING
        rec.metrics["time_when_retrieval"] = int(self.clock() * 1e6)
        self.tasks.finish(rec)

    def _unlink_unused(self, w: WorkerRecord, rec: TaskRecord) -> None:
        """Drop task-level cache objects of ``rec`` that no other task on ``w`` uses."""
        task = rec.task
        for mount in (*task._inputs, *task._outputs):
            file = mount.file
            name = file._cachename
            users = w.file_users.get(name, 0) - 1
            if users > 0:
                w.file_users[name] = users
                continue
            w.file_users.pop(name, None)
            if file._level == cvine.VINE_CACHE_LEVEL_TASK:
                self.drop_replica(w, name)
                self.send(w, p.Unlink(name))

    # ------------------------------------------------------------------ losing workers
    def _drop_status(self, conn: Connection) -> None:
        self.status_conns.discard(conn)
        self.sel.unregister(conn.sock)
        conn.close()

    def remove_worker(self, w: WorkerRecord, reason: str) -> None:
        conn = w.conn
        if conn.closed:
            return
        if conn in self.status_conns:
            self._drop_status(conn)
            return
        self.workers.pop(conn, None)
        self.debug.write("vine", f"worker {w.label()} removed")  # before its tasks' changes
        if w.hostname == "unknown":
            self.unidentified -= 1
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.close()
        self.libraries.drop_worker(w)
        for rec in list(w.tasks.values()):
            w.tasks.pop(rec.task_id)
            rec.worker = None
            if rec.library is not None:  # an instance: another starts when calls need it
                self.tasks.finish(rec, cvine.VINE_RESULT_FORSAKEN)
                continue
            self.debug.write("vine", f"task {rec.task_id} goes back to the queue: worker "
                             f"{w.label()} is gone")
            rec.instance = None
            self.tasks.make_ready(rec)
        while conn.replies:
            conn.replies.popleft().on_lost()
        self.transfers.drop_worker(w)
        lost = self.replicas.drop_worker(w, list(w.cache))
        if self.tuning.immediate_recovery:
            for name in lost:
                self.delivery.recover(name)
        self.counters["workers_removed"] += 1
        if reason == "FAILURE":
            self.counters["workers_lost"] += 1
        if w.worker_id is not None:
            self.txn.worker_disconnection(w.worker_id, reason)
        self._dirty = True

    # ------------------------------------------------------------------ shutdown
    def close(self, shutdown_workers: bool, deadline: float = 5.0) -> None:
        """Release (or tell to exit) every worker, push the last bytes out, close sockets."""
        if self._closed:
            return
        self._closed = True
        for w in list(self.workers.values()):
            self.send(w, p.Exit() if shutdown_workers else p.Release())
            if not shutdown_workers:
                self.counters["workers_released"] += 1
            self.debug.write("vine", f"worker {w.label()} removed")
            if w.worker_id is not None:
                self.txn.worker_disconnection(w.worker_id, "EXPLICIT")
        end = time.monotonic() + deadline
        while self._to_flush and time.monotonic() < end:
            self._flush()
            if self._to_flush:
                self.sel.select(0.05)
        for conn in list(self.workers) + list(self.status_conns):
            conn.close()
        self.workers.clear()
        self.perf.close()  # the last row: every worker released
        if self.admission is not None:
            self.admission.close()
        if self._waker is not None:
            for sock in self._waker:
                sock.close()
        self.sel.close()
        self.listener.close()


COUNTERS = (
    "tasks_recovery", "tasks_submitted", "tasks_dispatched", "tasks_done", "tasks_failed",
    "tasks_successful",
    "tasks_cancelled", "tasks_exhausted_attempts", "workers_joined", "workers_removed",
    "workers_released", "workers_idled_out", "workers_lost", "workers_slow", "bytes_sent",
    "bytes_received",
)


def forsaken_delay(times: int, cap: float) -> float:
    """Seconds before a task forsaken ``times`` times is sent again: at once after the first
    time, then 0.5 s doubling up to ``cap`` (a worker that cannot run it must not spin)."""
    return 0.0 if times <= 1 else min(cap, 0.5 * 2.0 ** min(times - 2, 32))


_HANDLERS: dict[type, Callable[[Engine, WorkerRecord, Any], None]] = {
    p.Hello: wm.on_hello,
    p.Info: wm.on_info,
    p.Resources: wm.on_resources,
    p.Alive: lambda e, w, m: None,
    p.Complete: Engine._on_complete,
    p.Measured: wm.on_measured,
    p.CacheUpdate: wm.on_cache_update,
    p.CacheInvalid: wm.on_cache_invalid,
    p.Feature: wm.on_feature,
    p.TransferPort: wm.on_transfer_port,
    p.TransferHostPort: wm.on_transfer_port,
    p.AvailableResults: wm.on_available_results,
    p.StatusRequest: wm.on_status,
    p.HttpGet: wm.on_status,
}
