"""Batch systems the factory submits workers to, one module each behind ``BatchSystem``
(``base.py``). ``batch_system(name)`` makes the one a ``-T`` name asks for."""

from __future__ import annotations

from .base import QUEUED, RUNNING, BatchError, BatchSystem, JobSpec, Runner, run_command
from .condor import CondorBatch
from .local import LocalBatch
from .lsf import LsfBatch
from .pbs import PbsBatch, TorqueBatch
from .sge import SgeBatch
from .slurm import SlurmBatch

SYSTEMS: dict[str, type[BatchSystem]] = {
    "local": LocalBatch, "slurm": SlurmBatch, "sge": SgeBatch, "uge": SgeBatch,
    "condor": CondorBatch, "pbs": PbsBatch, "torque": TorqueBatch, "lsf": LsfBatch,
}
UPSTREAM_ONLY = ("moab", "cluster", "amazon", "k8s", "flux", "vine", "wq", "dryrun", "mesos")


def batch_system(name: str, runner: Runner | None = None) -> BatchSystem:
    """The batch system called ``name``; ``BatchError`` for one this factory lacks."""
    cls = SYSTEMS.get(name)
    if cls is None:
        what = "is not supported by this factory" if name in UPSTREAM_ONLY else "is unknown"
        raise BatchError(f"batch type {name!r} {what}; use one of {', '.join(SYSTEMS)}")
    return cls(runner)


__all__ = ["BatchError", "BatchSystem", "JobSpec", "QUEUED", "RUNNING", "Runner", "SYSTEMS",
           "batch_system", "run_command"]
