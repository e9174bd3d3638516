"""Which worker gets a task (api.md §10.1): small policies over plain data.

The engine walks the workers with room for a task and asks ``score`` for each; the highest
score wins, the first of equal ones (workers are walked in connection order)::

    files  bytes of the task's inputs already in the worker's cache (the default)
    time   the worker's average task wall time, negated (fastest first; a worker that has
           not finished a task yet counts 0, so every worker gets tried)
    rand   a random number (fcfs behaves as rand, as upstream)
    worst  the worker's free (cores, memory, disk): the emptiest worker
    disk   the worker's free disk

The "time" policy reads ``WorkerRecord.average_wall_us()``, kept by the worker table.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from .. import cvine

if TYPE_CHECKING:
    from ..resources import Resources
    from ..task import Task
    from .workers import WorkerRecord

FILES = cvine.VINE_SCHEDULE_FILES
NAMES = {"fcfs": cvine.VINE_SCHEDULE_FCFS, "files": cvine.VINE_SCHEDULE_FILES,
         "time": cvine.VINE_SCHEDULE_TIME, "rand": cvine.VINE_SCHEDULE_RAND,
         "random": cvine.VINE_SCHEDULE_RAND, "worst": cvine.VINE_SCHEDULE_WORST,
         "worst fit": cvine.VINE_SCHEDULE_WORST, "disk": cvine.VINE_SCHEDULE_DISK}
_VALUES = {cvine.VINE_SCHEDULE_UNSET, *NAMES.values()}
_rng = random.Random()


def parse_scheduler(scheduler: str | int) -> int:
    """A ``VINE_SCHEDULE_*`` value from a name (any case, with or without the
    ``VINE_SCHEDULE_`` prefix) or the constant itself."""
    if isinstance(scheduler, int) and not isinstance(scheduler, bool):
        if scheduler in _VALUES:
            return scheduler
    elif isinstance(scheduler, str):
        name = " ".join(scheduler.strip().lower().replace("_", " ").split())
        name = name.removeprefix("vine schedule ")
        if name in NAMES:
            return NAMES[name]
        if name == "unset":
            return cvine.VINE_SCHEDULE_UNSET
    raise ValueError(f"unknown scheduler {scheduler!r}; use one of "
                     f"{', '.join(sorted(NAMES))} or a VINE_SCHEDULE_* constant")


def cached_bytes(task: Task, w: WorkerRecord) -> int:
    cache = w.cache
    return sum(cache.get(m.file._cachename, 0) or 0 for m in task._inputs)


def score(policy: int, task: Task, w: WorkerRecord, free: Resources,
          rng: random.Random = _rng) -> float | tuple:
    """How much ``policy`` likes ``w`` (with ``free`` resources) for ``task``: more is
    better."""
    if policy == FILES:
        return cached_bytes(task, w) if task._inputs else 0
    if policy == cvine.VINE_SCHEDULE_WORST:
        return (free.cores, free.memory, free.disk)
    if policy == cvine.VINE_SCHEDULE_DISK:
        return free.disk
    if policy == cvine.VINE_SCHEDULE_TIME:
        return -w.average_wall_us()
    if policy in (cvine.VINE_SCHEDULE_RAND, cvine.VINE_SCHEDULE_FCFS):
        return rng.random()
    return cached_bytes(task, w)
