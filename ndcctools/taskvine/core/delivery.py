"""Getting every task's inputs onto its worker: the manager's data plane.

Theory of operation. ``Delivery`` decides, for one input on one worker, where the bytes come
from, in order of preference: already there; copied from the least busy peer with a ready
replica (shareable files only: level > task, no ``PEER_NOSHARE``, peer transfers on); or from
the original source (``put`` from the manager, ``puturl`` of a URL, a ``mini_task`` recipe).
It owns what is needed to re-create temp files: which task last produced each output
(``producers``) and the hidden recovery tasks running for lost temps (``recovering``).
Replica locations belong to ``ReplicaIndex`` and transfers in flight to ``Transfers``; the
engine owns connections, and lends ``send``/``send_raw`` to write on them.

    schedule ──inputs_pending / strict_inputs_placed──► wait, fail, or recover a temp
             ──can_deliver(task, worker)──► choose a worker
    dispatch ──put_input(worker, file)──► put | puturl (peer, URL) | mini_task
    cache-update ──replicate──► puturl_now to keep temp-replica-count copies
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import cvine
from .. import protocol as p
from ..items import outgoing, tree_size
from .replicas import ReplicaIndex
from .tasks import DONE, READY, RUNNING, WAITING_RETRIEVAL, TaskRecord, TaskTable
from .transfers import Transfers, original_source
from .workers import WorkerRecord

if TYPE_CHECKING:
    from ..file import File
    from ..task import Task
    from .debuglog import DebugLog
    from .tuning import Tuning
    from .txnlog import TransactionLog

Send = Callable[[WorkerRecord, Any], None]
MINITASK_MAX_FAILURES = 3  # a recipe that failed this often in a row fails its tasks


class Delivery:
    def __init__(self, workers: dict[Any, WorkerRecord], tasks: TaskTable, tuning: Tuning,
                 debug: DebugLog, txn: TransactionLog, counters: dict[str, int], send: Send,
                 send_raw: Send, drop_replica: Callable[[WorkerRecord, str], None],
                 wake: Callable[[], None]):
        self.workers = workers  # the engine's table, read here
        self.tasks = tasks
        self.tuning = tuning
        self.debug = debug
        self.txn = txn
        self.counters = counters
        self.send, self.send_raw = send, send_raw
        self.drop_replica = drop_replica
        self.wake = wake
        self.replicas = ReplicaIndex()
        self.transfers = Transfers()
        self.peer_transfers = True
        self.producers: dict[str, Task] = {}  # output cachename -> last task that makes it
        self.recovering: dict[str, TaskRecord] = {}  # temp cachename -> its recovery task
        self.build_failures: dict[str, tuple[int, str]] = {}  # mini-task product -> (times
        # its recipe failed in a row, the last error text)

    def forget(self, cachename: str) -> None:
        """An undeclared file can no longer be re-created."""
        self.producers.pop(cachename, None)
        self.recovering.pop(cachename, None)

    def inputs_pending(self, task: Task, to_recover: list[str]) -> str | bool | None:
        """None if every input can be had; False if one must be waited for (a local file or a
        temp that a task in flight will produce, a temp being recovered or queued for
        recovery into ``to_recover``); a text saying why if one is lost for good (a temp
        whose recovery task failed, a mini-task product whose recipe keeps failing)."""
        verdict = None
        for mount in task._inputs:
            f = mount.file
            if f._type == cvine.VINE_FILE:
                if not os.path.exists(f._source) and \
                        in_flight(getattr(self.producers.get(f._cachename), "_record", None)):
                    verdict = False
                continue
            if f._type == cvine.VINE_MINI_TASK:
                failed, why = self.build_failures.get(f._cachename, (0, ""))
                if failed >= MINITASK_MAX_FAILURES:
                    return (f"its input {f._source!r} ({f._cachename}) could not be built: "
                            f"its mini task failed {failed} times in a row; the last time: "
                            f"{why.strip()}\n")
                continue
            if f._type != cvine.VINE_TEMP:
                continue
            name = f._cachename
            if self.replicas.count(name):
                continue
            verdict = False
            producer = self.producers.get(name)
            if producer is None or in_flight(producer._record):
                continue  # not submitted yet, or still running: its output will come
            rec = self.recovering.get(name)
            if rec is not None and rec.state != DONE:
                continue
            if rec is not None and not (rec.result == cvine.VINE_RESULT_SUCCESS
                                        and rec.exit_code == 0):
                return f"its input temp file {name} is lost: its recovery task " \
                       f"{rec.task_id} failed\n"
            if name not in to_recover:
                to_recover.append(name)
        return verdict

    def strict_inputs_placed(self, task: Task) -> bool | None:
        """For a task with ``strict_input`` inputs: True if a worker holds all of them, False
        if one of them is still being produced, None if they will never be in one place."""
        strict = [m.file._cachename for m in task._inputs if m.flags & cvine.VINE_FIXED_LOCATION]
        if any(all(name in w.cache for name in strict) for w in self.workers.values()):
            return True
        if any(in_flight(getattr(self.producers.get(name), "_record", None)) for name in strict):
            return False
        self.debug.write("vine", f"task {task._record.task_id}: no worker holds all of its "
                         f"strict inputs {strict}")
        return None

    def recover(self, name: str) -> None:
        """Re-run (hidden) the task that produced temp file ``name``."""
        producer = self.producers.get(name)
        if producer is None or in_flight(producer._record) or not _temp_output(producer, name):
            return
        running = self.recovering.get(name)
        if running is not None and running.state != DONE:
            return
        clone = producer._unsubmitted_copy()
        rec = self.tasks.submit(clone)
        rec.recovery = True
        clone._record = rec
        for mount in clone._outputs:
            if mount.file._type == cvine.VINE_TEMP:
                self.recovering[mount.file._cachename] = rec
        self.counters["tasks_recovery"] += 1
        self.counters["tasks_submitted"] += 1
        self.debug.write("vine", f"temp file {name} has no replica left: recovery task "
                         f"{rec.task_id} re-runs the task that produced it")
        self.wake()

    def _shareable(self, f: File) -> bool:
        """Whether workers may copy ``f`` from each other."""
        return self.peer_transfers and f._level > 0 and not f._flags & cvine.VINE_PEER_NOSHARE

    def _peer_source(self, f: File, dest: WorkerRecord,
                     limited: bool = True) -> WorkerRecord | None:
        """The least busy worker with a ready replica that may serve ``dest`` now (within
        ``worker-source-max-transfers`` unless ``limited`` is False)."""
        if not self._shareable(f):
            return None
        limit = self.tuning.worker_source_max_transfers if limited else float("inf")
        best, best_load = None, limit
        for w in self.replicas.holders(f._cachename):
            if w is dest or not w.transfer_port or w.conn.closed:
                continue
            load = self.transfers.count_from(w)
            if load < best_load and self.transfers.usable_source(w):
                best, best_load = w, load
        return best

    def can_deliver(self, task: Task, w: WorkerRecord) -> bool:
        """Every input of ``task`` is on ``w`` or can be sent there now."""
        for mount in task._inputs:
            f = mount.file
            name = f._cachename
            if name in w.cache:
                continue
            if mount.flags & cvine.VINE_FIXED_LOCATION:
                return False
            if self._peer_source(f, w) is not None:
                continue
            if f._type == cvine.VINE_TEMP:
                return False
            if f._type == cvine.VINE_MINI_TASK:
                if not self.can_deliver(f._minitask, w):
                    return False
                continue
            if self._shareable(f) and self.transfers.count_from(original_source(name)) >= \
                    self.tuning.file_source_max_transfers:
                return False  # wait: one copy from the source, then copies between peers
        return True

    def put_input(self, w: WorkerRecord, file: File, for_task: bool = True) -> None:
        """Send ``file`` to ``w`` unless it is there. ``for_task``: a task will use it (else
        a mini task's recipe does, until its product is built)."""
        name = file._cachename
        if for_task:
            w.file_users[name] = w.file_users.get(name, 0) + 1
        if name in w.cache:
            return
        source = self._peer_source(file, w)
        if source is None and file._type == cvine.VINE_TEMP:
            # can_deliver checked each input alone: the task's own earlier inputs may have
            # filled the sources' transfer slots since; a temp has no other way to get there
            source = self._peer_source(file, w, limited=False)
        if source is not None:
            size = source.cache.get(name, 0) or len(file)  # a temp's size: the replica's
            tid = self.transfers.start(source, w, name, size)
            url = peer_url(source, w, name)
            self.send(w, p.PutUrl(url, name, file._level, size, file._mode or 0o755, tid))
            w.cache[name] = 0
            return
        if file._type == cvine.VINE_TEMP:
            return  # unreachable: can_deliver said a peer has it
        if file._type == cvine.VINE_MINI_TASK:
            recipe = file._minitask
            for mount in recipe._inputs:
                self.put_input(w, mount.file, for_task=False)
            w.building[name] = file
            body = p.TaskBody(
                command=recipe._full_command(), category=recipe._category,
                env=tuple(f"{k}={v}" for k, v in recipe._env.items() if v is not None),
                infiles=tuple(p.Mount(m.file._cachename, m.remote_name, m.flags)
                              for m in recipe._inputs))
            self.send(w, p.MiniTaskMsg(file._source, name, file._level, 0, file._mode or 0o755,
                                        body))
            w.cache[name] = 0
            return
        if file._type == cvine.VINE_URL:
            tid = self.transfers.start(original_source(name), w, name)
            self.send(w, p.PutUrl(file._source, name, file._level, 0, file._mode or 0o755, tid))
            w.cache[name] = 0
            return
        start = time.monotonic()
        data = (file._data or b"") if file._type == cvine.VINE_BUFFER else None
        size = len(data) if data is not None else _size_of(file._source)
        self.transfers.start(original_source(name), w, name, size, put=True)
        self.send(w, p.Put(name, file._level, size))
        if data is not None:
            self.send(w, p.FileItem(name, size, file._mode or 0o755, 0))
            self.send_raw(w, data)
        else:
            for piece in outgoing(file._source, name, mode=file._mode):
                self.send_raw(w, piece)
        w.cache[name] = size
        w.cache_bytes += size
        self.counters["bytes_sent"] += size
        self.txn.transfer(w.worker_id, "INPUT", name, size,
                          int((time.monotonic() - start) * 1e6), int(time.time() * 1e6))

    def replicate(self, name: str) -> None:
        """Keep ``temp-replica-count`` ready replicas of a temp file."""
        wanted = int(self.tuning.temp_replica_count) - self.replicas.count(name)
        file = _temp_output(self.producers[name], name)
        if wanted <= 0 or file is None:
            return
        for w in self.workers.values():
            if wanted <= 0:
                break
            if w.ready and name not in w.cache and w.transfer_port:
                source = self._peer_source(file, w)
                if source is None:
                    return
                size = source.cache.get(name, 0)
                tid = self.transfers.start(source, w, name, size)
                url = peer_url(source, w, name)
                self.send(w, p.PutUrl(url, name, file._level, size, 0o755, tid, now=True))
                w.cache[name] = 0
                wanted -= 1

    def unsendable_input(self, task: Task, w: WorkerRecord) -> str | None:
        """Why an input of ``task`` that must be sent to ``w`` (a local file, or one in the
        recipe of a mini task to be built there) cannot be read here, or None."""
        for mount in task._inputs:
            f = mount.file
            if f._cachename in w.cache:
                continue
            if f._type == cvine.VINE_FILE:
                why = unreadable(f._source)
                if why is not None:
                    return why
            elif f._type == cvine.VINE_MINI_TASK:
                why = self.unsendable_input(f._minitask, w)
                if why is not None:
                    return why
        return None

    def build_ended(self, w: WorkerRecord, name: str, error: str | None) -> None:
        """The mini task building ``name`` on ``w`` ended (``error`` says why it failed):
        count its failures in a row, and clean up after it."""
        if error is None:
            self.build_failures.pop(name, None)
        else:
            failed, _ = self.build_failures.get(name, (0, ""))
            self.build_failures[name] = (failed + 1, error)
        self.built(w, name)

    def built(self, w: WorkerRecord, name: str) -> None:
        """A mini task on ``w`` built (or failed to build) ``name``: drop the task-level
        inputs of its recipe that nothing else there uses."""
        for mount in w.building.pop(name)._minitask._inputs:
            f = mount.file
            if f._level == cvine.VINE_CACHE_LEVEL_TASK and not w.file_users.get(f._cachename) \
                    and f._cachename in w.cache:
                self.drop_replica(w, f._cachename)
                self.send(w, p.Unlink(f._cachename))



def _temp_output(task: Task, name: str) -> File | None:
    """The temp file ``name`` among the outputs of ``task``."""
    for mount in task._outputs:
        if mount.file._cachename == name and mount.file._type == cvine.VINE_TEMP:
            return mount.file
    return None


def unreadable(path: str) -> str | None:
    """Why the local file or directory ``path`` cannot be sent, or None if it can."""
    if not os.path.exists(path):
        return f"its input {path} does not exist"
    if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
        return f"its input {path} cannot be read (permission denied)"
    return None


def _size_of(path: str) -> int:
    try:
        return tree_size(path)
    except OSError:
        return 0

def in_flight(rec: TaskRecord | None) -> bool:
    return rec is not None and rec.state in (READY, RUNNING, WAITING_RETRIEVAL)


def peer_url(source: WorkerRecord, dest: WorkerRecord, name: str) -> str:
    """Where ``dest`` fetches ``name`` from ``source``. A worker of ours that holds the run's
    transfer secret authenticates to its peers, except to those that cannot (upstream
    workers): their address is marked ``+noauth`` (only our workers are ever told that)."""
    scheme = "workerip+noauth" if dest.peer_auth and not source.peer_auth else "workerip"
    return f"{scheme}://{source.addrport.rpartition(':')[0]}:{source.transfer_port}/{name}"
