"""Every change of a task's state, told to those who keep account of it.

The task table calls ``TaskChangeLog.changed(rec, old, new)`` on each transition; it writes
the debug log's ``state change`` line, feeds the categories (counts, measurements, allocation
modes) and writes the transactions log's ``TASK`` records::

    TaskTable.move ──changed──► debug log   "Task 7 state change: READY (1) to RUNNING (2)"
                              ► categories  on_change
                              ► txn log     READY | RUNNING | WAITING_RETRIEVAL | RETRIEVED

It keeps no state of its own: the task is read as it is at the moment of the change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..results import result_string
from .tasks import (
    INITIAL,
    READY,
    RETRIEVED,
    RUNNING,
    STATE_NAMES,
    WAITING_RETRIEVAL,
    TaskRecord,
)

if TYPE_CHECKING:
    from ..task import Task
    from .categories import Categories
    from .debuglog import DebugLog
    from .history import History
    from .txnlog import TransactionLog

_CHANGE_TEXT = {(a, b): f"{STATE_NAMES[a]} ({a}) to {STATE_NAMES[b]} ({b})"
                for a in range(len(STATE_NAMES)) for b in range(len(STATE_NAMES))}


class TaskChangeLog:
    def __init__(self, debug: DebugLog, categories: Categories, txn: TransactionLog):
        self.debug = debug
        self.categories = categories
        self.txn = txn
        self.history: History | None = None  # only while someone observes the run

    def changed(self, rec: TaskRecord, old: int, new: int) -> None:
        if rec.library is None:
            self.debug.write("vine", f"Task {rec.task_id} state change: "
                             f"{_CHANGE_TEXT[old, new]}")
        elif new != READY:  # upstream's instances go from INITIAL straight to RUNNING, and
            # the report tool takes that for the mark of a library
            self.debug.write("vine", f"Task {rec.task_id} state change: "
                             f"{_CHANGE_TEXT[INITIAL if new == RUNNING else old, new]}")
        self.categories.on_change(rec, old, new)
        txn = self.txn
        if new == READY:
            task = rec.task
            txn.task_ready(rec.task_id, task._category, rec.attempts + 1, _requested(task))
        elif new == RUNNING:
            a = rec.allocation
            txn.task_running(rec.task_id, rec.worker.worker_id,
                             {"cores": a.cores, "memory": a.memory, "disk": a.disk,
                              "gpus": a.gpus})
        elif new == WAITING_RETRIEVAL:
            txn.task_waiting_retrieval(rec.task_id, rec.worker.worker_id if rec.worker else None)
        elif new == RETRIEVED:
            txn.task_retrieved(rec.task_id, result_name(rec.result), rec.exit_code,
                               rec.limits_exceeded, _measured(rec))
            if self.history is not None:
                self.history.retrieved(rec)


def result_name(result: int) -> str:
    """A task result as the transactions log writes it: ``SUCCESS``, ``INPUT_MISSING``..."""
    return result_string(result).upper().replace(" ", "_")


def _requested(task: Task) -> dict:
    out = {}
    for key, value in (("cores", task._cores), ("memory", task._memory), ("disk", task._disk),
                       ("gpus", task._gpus)):
        if value >= 0:
            out[key] = value
    return out


def _measured(rec: TaskRecord) -> dict:
    if not rec.time_worker_end:
        return {}
    out = {"start": rec.time_worker_start / 1e6, "end": rec.time_worker_end / 1e6,
           "wall_time": (rec.time_worker_end - rec.time_worker_start) / 1e6}
    if rec.measured:
        out.update((k, v) for k, v in rec.measured.items() if k not in out)
    return out
