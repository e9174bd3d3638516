"""How much of a worker a task gets (api.md §9.1): a pure policy over plain numbers.

Unset requests are -1. ``allocate()`` computes the allocation of one task on one worker;
``fits()`` says whether it fits in what the worker has free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..resources import Resources

UNSET = -1


@dataclass(slots=True, frozen=True)
class Policy:
    proportional: bool = True
    whole_tasks: bool = False
    submit_multiplier: float = 1.0
    disk_proportion: float = 0.75


def _merge(explicit: float, category: float | None) -> float:
    if explicit is not None and explicit >= 0:
        return explicit
    return category if category is not None and category >= 0 else UNSET


def allocate(request: Resources, total: Resources, avail_disk: float, policy: Policy,
             category_max: dict | None = None, category_min: dict | None = None,
             explicit_memory_or_disk: bool = False) -> Resources:
    """Allocation of a task with limits ``request`` (-1 = unset) on a worker of ``total``."""
    cmax, cmin = category_max or {}, category_min or {}
    lim = Resources(_merge(request.cores, cmax.get("cores")),
                    _merge(request.memory, cmax.get("memory")),
                    _merge(request.disk, cmax.get("disk")),
                    _merge(request.gpus, cmax.get("gpus")))
    alloc = _proportional(lim, total, avail_disk, policy, explicit_memory_or_disk, cmin) \
        if policy.proportional else None
    if alloc is None:
        alloc = _whole_or_partial(lim, total, avail_disk)
    alloc.disk = math.floor(alloc.disk * policy.disk_proportion)
    for name in ("cores", "memory", "disk", "gpus"):
        low = cmin.get(name)
        if low is not None and low > getattr(alloc, name):
            setattr(alloc, name, low)
        explicit = getattr(request, name)
        if explicit >= 0:
            setattr(alloc, name, explicit)
    return alloc


def _proportional(lim: Resources, total: Resources, avail_disk: float, policy: Policy,
                  explicit_memory_or_disk: bool, cmin: dict) -> Resources | None:
    shares = [getattr(lim, k) / getattr(total, k) for k in ("cores", "memory", "gpus")
              if getattr(lim, k) > 0 and getattr(total, k) > 0]
    if lim.disk > 0 and avail_disk > 0:
        shares.append(lim.disk / avail_disk)
    shares += [cmin[k] / getattr(total, k) for k in ("cores", "memory", "gpus")
               if cmin.get(k, 0) > 0 and getattr(total, k) > 0]
    p = max(shares, default=0)
    if p <= 0 or p > 1:
        return None
    if policy.whole_tasks and not explicit_memory_or_disk:
        p = 1 / math.floor(1 / p)
    cores = 0 if (lim.cores < 0 and lim.gpus > 0) else max(1, lim.cores,
                                                             math.floor(total.cores * p))
    return Resources(cores=cores,
                     memory=max(1, lim.memory, math.floor(total.memory * p)),
                     disk=max(1, lim.disk, math.floor(avail_disk * p / policy.submit_multiplier)),
                     gpus=max(0, lim.gpus))


def _whole_or_partial(lim: Resources, total: Resources, avail_disk: float) -> Resources:
    nothing_set = all(getattr(lim, k) < 0 for k in ("cores", "memory", "disk", "gpus"))
    too_big = any(getattr(lim, k) >= getattr(total, k) > 0 for k in ("cores", "memory", "gpus"))
    if nothing_set or too_big:
        lim = Resources(UNSET, UNSET, UNSET, lim.gpus)
    return Resources(
        cores=lim.cores if lim.cores >= 0 else (0 if lim.gpus > 0 else total.cores),
        memory=lim.memory if lim.memory >= 0 else total.memory,
        disk=lim.disk if lim.disk >= 0 else math.floor(avail_disk),
        gpus=max(0, lim.gpus))


def fits(alloc: Resources, free: Resources) -> bool:
    """Whether ``alloc`` fits in ``free`` (disk is checked too)."""
    return free.covers(alloc)


def can_ever_fit(request: Resources, total: Resources) -> bool:
    """A task whose explicit requests exceed the worker's totals never runs there."""
    return all(getattr(request, k) <= getattr(total, k) for k in ("cores", "memory", "disk", "gpus")
               if getattr(request, k) >= 0)
