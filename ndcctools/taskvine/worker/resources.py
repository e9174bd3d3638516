"""What the worker offers (detected or given on the command line) and what is committed.

``Ledger`` is the one owner of committed resources: a task is started only when its
allocation ``fits()``; ``commit``/``release`` move resources in and out.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass

import psutil

MB = 1 << 20


@dataclass(slots=True)
class Amount:
    cores: int = 0
    memory: int = 0
    disk: int = 0
    gpus: int = 0

    def covers(self, other: Amount) -> bool:
        return (other.cores <= self.cores and other.memory <= self.memory
                and other.disk <= self.disk and other.gpus <= self.gpus)


def detect(cores: int | None, memory: int | None, disk: int | None, gpus: int | None,
           workspace: str, disk_percent: float = 50) -> Amount:
    """Totals from the options, else from the environment (CORES, ...), else the machine."""
    env = {k: os.environ.pop(k, None) for k in ("CORES", "MEMORY", "DISK", "GPUS")}

    def pick(given: int | None, key: str, default: int) -> int:
        if given is not None and given > 0:
            return given
        if env[key]:
            return int(float(env[key]))
        return default

    free_mb = shutil.disk_usage(workspace).free // MB
    return Amount(cores=pick(cores, "CORES", os.cpu_count() or 1),
                  memory=pick(memory, "MEMORY", psutil.virtual_memory().total // MB),
                  disk=pick(disk, "DISK", math.ceil(free_mb * disk_percent / 100)),
                  gpus=pick(gpus, "GPUS", 0))


class Ledger:
    def __init__(self, total: Amount):
        self.total = total
        self.used = Amount()

    def free(self) -> Amount:
        t, u = self.total, self.used
        return Amount(t.cores - u.cores, t.memory - u.memory, t.disk - u.disk, t.gpus - u.gpus)

    def fits(self, want: Amount) -> bool:
        return self.free().covers(want)

    def commit(self, amount: Amount) -> None:
        self._add(amount, 1)

    def release(self, amount: Amount) -> None:
        self._add(amount, -1)

    def _add(self, a: Amount, sign: int) -> None:
        u = self.used
        u.cores += sign * a.cores
        u.memory += sign * a.memory
        u.disk += sign * a.disk
        u.gpus += sign * a.gpus
