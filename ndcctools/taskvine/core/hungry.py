"""``hungry()``: how many more tasks are worth submitting now (api.md §6.1). Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..resources import Resources

_KINDS = ("cores", "memory", "disk", "gpus")


def hungry(workers: int, total: Resources, committed: Resources, running: int,
           waiting: Sequence[Resources], queued: int, minimum: float, factor: float) -> int:
    """``waiting`` holds the requests (-1 = unset) of up to attempt-schedule-depth of the
    ``queued`` waiting tasks, in priority order."""
    floor = max(minimum, workers * factor)
    r = max(running, 1)
    avg = {k: math.ceil(getattr(committed, k) / r) for k in _KINDS}
    avg["cores"] = max(1, avg["cores"])
    avail = {k: factor * getattr(total, k) - getattr(committed, k) for k in _KINDS}
    if waiting:
        for k in _KINDS:
            values = [getattr(t, k) if getattr(t, k) >= 0 else avg[k] for t in waiting]
            avg[k] = math.ceil(sum(values) / len(values))
    need = math.ceil(avail["cores"] / avg["cores"]) if avg["cores"] > 0 else 0
    for k in ("memory", "disk", "gpus"):
        if avg[k] > 0:
            need = min(need, math.ceil(avail[k] / avg[k]))
    best = max(need, floor)
    return int(best if not queued else max(0, best - queued))
