"""What the run did, for those watching it (Prometheus, the dashboard).

The manager forgets a task once ``wait`` returns it. While an observer is on
(``Manager(prometheus_port=...)`` or ``dashboard_port``), the engine's state-change log
hands every retrieved task to ``History.retrieved``, which keeps a little: counts by result,
a histogram of execution times, the slowest tasks and the last failures (with the end of
their output). It is bounded whatever the run's length, and without an observer it does not
exist and costs nothing.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..results import result_string

if TYPE_CHECKING:
    from .tasks import TaskRecord

#: upper bounds (seconds) of the execution-time histogram's buckets, the last one infinite
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 1800.0, 3600.0, math.inf)
KEPT = 10  # slowest tasks and failures remembered
OUTPUT_TAIL = 2000  # bytes of a failed task's output kept (its end: where errors are)


@dataclass(frozen=True, slots=True)
class Finished:
    task_id: int
    command: str
    category: str
    result: str
    exit_code: int
    seconds: float  # execution time on the worker
    worker: str
    when: float  # epoch seconds it was retrieved
    output: str = ""


class History:
    def __init__(self) -> None:
        self.results: Counter[str] = Counter()
        self.buckets = [0] * len(DURATION_BUCKETS)  # tasks per bucket (not cumulative)
        self.seconds_total = 0.0
        self.executed = 0  # tasks with an execution time (they reached a worker)
        self.slowest: list[tuple[float, int, Finished]] = []  # min-heap of the KEPT slowest
        self.failures: deque[Finished] = deque(maxlen=KEPT)

    def retrieved(self, rec: TaskRecord) -> None:
        result = result_string(rec.result)
        self.results[result] += 1
        if not rec.time_worker_end:
            return
        seconds = max(0.0, (rec.time_worker_end - rec.time_worker_start) / 1e6)
        self.executed += 1
        self.seconds_total += seconds
        i = 0
        while seconds > DURATION_BUCKETS[i]:
            i += 1
        self.buckets[i] += 1
        failed = rec.result != 0 or rec.exit_code != 0
        if len(self.slowest) < KEPT or seconds > self.slowest[0][0] or failed:
            finished = self._finished(rec, result, seconds, failed)
            if len(self.slowest) < KEPT:
                heapq.heappush(self.slowest, (seconds, rec.task_id, finished))
            elif seconds > self.slowest[0][0]:
                heapq.heapreplace(self.slowest, (seconds, rec.task_id, finished))
            if failed:
                self.failures.append(finished)

    @staticmethod
    def _finished(rec: TaskRecord, result: str, seconds: float, failed: bool) -> Finished:
        task = rec.task
        output = ""
        if failed and rec.stdout:
            output = bytes(rec.stdout[-OUTPUT_TAIL:]).decode("utf-8", "replace")
        return Finished(rec.task_id, task._command[:200], task._category, result, rec.exit_code,
                        seconds, rec.hostname or "", time.time(), output)

    def slowest_first(self) -> list[Finished]:
        return [f for _, _, f in sorted(self.slowest, key=lambda x: (-x[0], x[1]))]
