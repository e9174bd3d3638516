"""``Resources``: an amount of cores, memory (MB), disk (MB) and GPUs.

The one value type for resources, used by the manager (allocations, worker totals, what is
committed) and by the worker (its ledger). -1 in a request means "not set".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Resources:
    cores: float = 0
    memory: int = 0
    disk: int = 0
    gpus: int = 0

    def add(self, other: Resources, sign: int = 1) -> None:
        self.cores += sign * other.cores
        self.memory += sign * other.memory
        self.disk += sign * other.disk
        self.gpus += sign * other.gpus

    def covers(self, other: Resources) -> bool:
        """Whether ``other`` fits in this amount."""
        return (other.cores <= self.cores + 1e-9 and other.memory <= self.memory
                and other.disk <= self.disk and other.gpus <= self.gpus)
