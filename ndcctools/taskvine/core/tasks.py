"""The task table: the one owner of every submitted task's lifecycle.

States (upstream's numbering, as written in the debug log)::

    READY ──dispatch──► RUNNING ──complete──► WAITING_RETRIEVAL ──outputs in──► RETRIEVED
      ▲                    │                        │                              │
      └──── worker lost / forsaken / retry ─────────┘                   wait() ──► DONE

Cancelling or failing before dispatch goes straight from READY to RETRIEVED. ``TRANSITIONS``
lists every legal move; anything else is a bug and raises.

The ready queue keeps one FIFO per priority, so ``ready_in_order()`` walks tasks by priority
then submission order without re-sorting (100,000 queued tasks cost nothing per cycle).
Records that left READY are dropped lazily when they reach the head of their FIFO; a record
that became READY again since it was queued has a newer entry, so each FIFO entry carries the
record's ``readied`` count at queueing and only the current entry counts.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import cvine

if TYPE_CHECKING:
    from ..resources import Resources
    from ..task import Task
    from .workers import WorkerRecord

INITIAL, READY, RUNNING, WAITING_RETRIEVAL, RETRIEVED, DONE = range(6)
STATE_NAMES = ("INITIAL", "READY", "RUNNING", "WAITING_RETRIEVAL", "RETRIEVED", "DONE")

TRANSITIONS = {
    INITIAL: {READY},
    READY: {RUNNING, RETRIEVED},
    RUNNING: {READY, WAITING_RETRIEVAL, RETRIEVED},
    WAITING_RETRIEVAL: {READY, RETRIEVED},
    RETRIEVED: {DONE},
    DONE: set(),
}


class TaskRecord:
    """What happened to one submission of a ``Task``."""

    __slots__ = ("task", "task_id", "state", "result", "exit_code", "stdout", "hostname",
                 "addrport", "allocation", "worker", "time_worker_start", "time_worker_end",
                 "sandbox_mb", "metrics", "forsaken", "attempts", "pending_replies",
                 "cancelled", "output_missing", "stdout_length", "recovery", "min_disk",
                 "output_error", "library", "instance", "stdout_truncated", "retry_at",
                 "readied", "slow_on", "measured", "limits_exceeded")

    def __init__(self, task: Task, task_id: int):
        self.task = task
        self.task_id = task_id
        self.state = INITIAL
        self.result = cvine.VINE_RESULT_UNKNOWN
        self.exit_code = -1
        self.stdout: bytes | bytearray | None = None
        self.hostname: str | None = None
        self.addrport: str | None = None
        self.allocation: Resources | None = None
        self.worker: WorkerRecord | None = None
        self.time_worker_start = 0
        self.time_worker_end = 0
        self.sandbox_mb = 0
        self.metrics: dict[str, int] = {}
        self.forsaken = 0
        self.attempts = 0
        self.pending_replies = 0
        self.cancelled = False
        self.output_missing = False
        self.stdout_length = 0
        self.recovery = False  # a hidden re-run that re-creates lost temp files
        self.min_disk = 0  # MB: grown after a sandbox exhaustion
        self.output_error: str | None = None  # why an output could not be retrieved
        self.library: str | None = None  # name of the library this record is an instance of
        self.instance: Any = None  # for a function call: the library instance serving it
        self.stdout_truncated = False  # longer than max-task-stdout-storage: the rest dropped
        self.retry_at = 0.0  # a forsaken task is not dispatched again before (clock time)
        self.readied = 0  # times it was made READY: tells its current ready-queue entry
        self.slow_on: WorkerRecord | None = None  # taken back from it as slow: not again
        self.measured: dict[str, float] | None = None  # the worker's measurement (monitoring)
        self.limits_exceeded: dict[str, float] | None = None  # what went over the allocation

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]


class TaskTable:
    """Every task the manager knows, from submission until ``wait()`` returns it."""

    def __init__(self, on_change: Callable[[TaskRecord, int, int], None]):
        self._on_change = on_change
        self.records: dict[int, TaskRecord] = {}  # the user's tasks (and recovery tasks)
        self.instances: dict[int, TaskRecord] = {}  # library instances: not the user's
        self._ready: dict[float, deque[tuple[int, TaskRecord]]] = {}  # (readied, record)
        self._priorities: list[float] = []  # ascending; walked from the end
        self.returnable: deque[TaskRecord] = deque()
        self.next_id = 1
        self.counts = [0] * 6
        self.ready_calls: Counter[str] = Counter()  # library -> READY function calls

    # -- lifecycle
    def submit(self, task: Task, library: str | None = None) -> TaskRecord:
        """Register a task; with ``library``, a hidden instance of that library."""
        rec = TaskRecord(task, self.next_id)
        self.next_id += 1
        rec.library = library
        (self.instances if library else self.records)[rec.task_id] = rec
        self.counts[INITIAL] += 1
        self.make_ready(rec)
        return rec

    def move(self, rec: TaskRecord, new: int) -> None:
        old = rec.state
        if new not in TRANSITIONS[old]:
            raise RuntimeError(f"task {rec.task_id}: illegal change {STATE_NAMES[old]} -> "
                               f"{STATE_NAMES[new]}")
        rec.state = new
        self.counts[old] -= 1
        self.counts[new] += 1
        library = rec.task._library_required
        if library is not None and READY in (old, new):
            self.ready_calls[library] += 1 if new == READY else -1
        self._on_change(rec, old, new)

    def make_ready(self, rec: TaskRecord) -> None:
        self.move(rec, READY)
        prio = rec.task._priority
        fifo = self._ready.get(prio)
        if fifo is None:
            fifo = self._ready[prio] = deque()
            bisect.insort(self._priorities, prio)
        rec.readied += 1
        fifo.append((rec.readied, rec))

    def finish(self, rec: TaskRecord, result: int | None = None) -> None:
        """The task's outcome is known: queue it for ``wait()``."""
        if result is not None:
            rec.result = result
        if rec.cancelled:
            rec.result = cvine.VINE_RESULT_CANCELLED
        self.move(rec, RETRIEVED)
        if rec.recovery or rec.library:  # never returned by wait(): gone at once
            self.hand_back(rec)
        else:
            self.returnable.append(rec)

    def hand_back(self, rec: TaskRecord) -> None:
        """``wait()`` returns the task to the user: it leaves the table."""
        self.move(rec, DONE)
        if self.records.pop(rec.task_id, None) is None:
            del self.instances[rec.task_id]
        self.counts[DONE] -= 1

    # -- queries
    def ready_in_order(self) -> Iterator[TaskRecord]:
        """READY tasks, highest priority first, then in submission order."""
        for prio in reversed(self._priorities.copy()):
            fifo = self._ready[prio]
            while fifo and not _current(*fifo[0]):
                fifo.popleft()
            if not fifo:
                del self._ready[prio]
                self._priorities.remove(prio)
                continue
            for readied, rec in fifo:  # callers must not make tasks ready while walking
                if _current(readied, rec):
                    yield rec

    def take_returnable(self, tag: str | None = None, task_id: int = -1) -> TaskRecord | None:
        """Pop the first finished task matching ``tag`` / ``task_id`` (None / -1 = any)."""
        if tag is None and task_id < 0:
            return self.returnable.popleft() if self.returnable else None
        for i, rec in enumerate(self.returnable):
            if (tag is None or rec.task._tag == tag) and (task_id < 0 or rec.task_id == task_id):
                del self.returnable[i]
                return rec
        return None

    def count(self, state: int) -> int:
        return self.counts[state]

    def __len__(self) -> int:
        return len(self.records)


def _current(readied: int, rec: TaskRecord) -> bool:
    """Whether a ready-queue entry stands for ``rec`` now (READY since it was queued)."""
    return rec.state == READY and rec.readied == readied
