"""What the worker offers (detected or given on the command line) and what is committed.

``Ledger`` is the one owner of committed resources: a task is started only when its
allocation ``fits()`` beside the other tasks and the cache; ``commit``/``release`` move
resources in and out.
"""

from __future__ import annotations

import math
import os
import shutil

import psutil

from ..resources import Resources

MB = 1 << 20


def detect(cores: int | None, memory: int | None, disk: int | None, gpus: int | None,
           workspace: str, disk_percent: float = 50) -> Resources:
    """Totals from the options, else from the environment (CORES, ...), else the machine."""
    env = {k: os.environ.pop(k, None) for k in ("CORES", "MEMORY", "DISK", "GPUS")}

    def pick(given: int | None, key: str, default: int) -> int:
        if given is not None and given > 0:
            return given
        if env[key]:
            return int(float(env[key]))
        return default

    free_mb = shutil.disk_usage(workspace).free // MB
    return Resources(cores=pick(cores, "CORES", os.cpu_count() or 1),
                  memory=pick(memory, "MEMORY", psutil.virtual_memory().total // MB),
                  disk=pick(disk, "DISK", math.ceil(free_mb * disk_percent / 100)),
                  gpus=pick(gpus, "GPUS", 0))


class Ledger:
    def __init__(self, total: Resources):
        self.total = total
        self.used = Resources()

    def free(self) -> Resources:
        t, u = self.total, self.used
        return Resources(t.cores - u.cores, t.memory - u.memory, t.disk - u.disk, t.gpus - u.gpus)

    def fits(self, want: Resources, cache_mb: int = 0) -> bool:
        """Whether ``want`` fits beside the running tasks and ``cache_mb`` of cached data."""
        free = self.free()
        free.disk -= cache_mb
        return free.covers(want)

    def commit(self, amount: Resources) -> None:
        self.used.add(amount)

    def release(self, amount: Resources) -> None:
        self.used.add(amount, -1)
