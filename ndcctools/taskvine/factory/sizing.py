"""How many workers the managers need: pure arithmetic over their status records.

A manager's record (``manager_status``, or its catalog record) says how many tasks wait or
run and what resources they declared in total. Without a better hint a task is assumed to
fill a worker (what an unlabelled task does). When the workers' size is known and the tasks
declared resources, as many tasks are packed per worker as the scarcest resource allows;
``tasks_per_worker`` overrides the estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..resources import Resources

KINDS = ("cores", "memory", "disk", "gpus")


@dataclass(frozen=True)
class Demand:
    tasks: int = 0
    declared: Resources = field(default_factory=Resources)  # summed over the tasks
    workers: int = 0  # connected to the managers now, from any source


def demand_of(records: list[dict]) -> Demand:
    """The summed demand of some managers' status records."""
    def total(key: str) -> float:
        return sum(_number(r.get(key)) for r in records)
    declared = Resources(*(total(f"tasks_total_{kind}") for kind in KINDS))
    return Demand(tasks=int(total("tasks_waiting") + total("tasks_on_workers")),
                  declared=declared,
                  workers=int(total("workers_connected") or total("workers")))


def tasks_per_worker(demand: Demand, worker: dict[str, int | None], fixed: int = -1) -> int:
    """How many of these tasks one worker of size ``worker`` runs at once."""
    if fixed and fixed > 0:
        return fixed
    if not demand.tasks:
        return 1
    fits = []
    for kind in KINDS:
        per_task = getattr(demand.declared, kind) / demand.tasks
        size = worker.get(kind)
        if per_task > 0 and size:
            fits.append(int(size // per_task))
    return max(1, min(fits)) if fits else 1


def workers_needed(demand: Demand, worker: dict[str, int | None], fixed: int = -1) -> int:
    return math.ceil(demand.tasks / tasks_per_worker(demand, worker, fixed))


def pool_target(needed: int, minimum: int, maximum: int) -> int:
    """The pool size to aim for: what is needed, within ``minimum``..``maximum``."""
    maximum = max(0, maximum)
    return max(min(needed, maximum), min(max(0, minimum), maximum))


def _number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0
