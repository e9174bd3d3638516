"""Reading a running manager from another thread: what Prometheus (``prometheus.py``) and
the dashboard (``dashboard/``) serve.

The manager is single-threaded and changes its tables only inside ``wait()``; the observers'
HTTP servers run in threads of their own and read those tables as they are, never a second
copy kept up to date. Each reader below builds plain data (numbers, strings, lists, dicts)
from the live objects. A dictionary the manager changes while a reader walks it makes
Python raise ``RuntimeError``; ``consistent`` then reads again (the manager's own work is
never held up: readers take no lock). Values read this way may be a cycle apart from one
another, which is what a person or a scraper watching a run can expect.

``watch(manager)`` turns on what only observers need (the bounded ``History`` of finished
tasks); without observers the manager pays nothing for them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .core.history import DURATION_BUCKETS, History
from .core.tasks import READY, RETRIEVED, RUNNING, WAITING_RETRIEVAL

if TYPE_CHECKING:
    from .manager import Manager

T = TypeVar("T")
ATTEMPTS = 20


def watch(m: Manager) -> History:
    """The history of ``m``'s finished tasks, kept from now on (idempotent)."""
    changes = m._engine.changes
    if changes.history is None:
        changes.history = History()
    return changes.history


def consistent(read: Callable[[], T]) -> T:
    """``read()``, again if the manager changed a table under it."""
    for _ in range(ATTEMPTS - 1):
        try:
            return read()
        except RuntimeError:  # "dictionary changed size during iteration"
            time.sleep(0.001)
    return read()


def overview(m: Manager) -> dict[str, Any]:
    """Counts of the whole run: tasks by state, workers, resources, bytes, libraries."""
    return consistent(lambda: _overview(m))


def _overview(m: Manager) -> dict[str, Any]:
    e = m._engine
    s = m.stats
    counts = list(e.tasks.counts)
    instances = list(e.libraries.instances.values())
    out = {name: getattr(s, name) for name in (
        "workers_connected", "workers_init", "workers_idle", "workers_busy", "workers_able",
        "workers_joined", "workers_removed", "workers_lost", "workers_blocked",
        "tasks_submitted", "tasks_dispatched", "tasks_done", "tasks_failed",
        "tasks_successful", "tasks_cancelled", "tasks_exhausted_attempts", "tasks_waiting",
        "tasks_running", "tasks_on_workers", "tasks_with_results", "bytes_sent",
        "bytes_received", "total_cores", "total_memory", "total_disk", "total_gpus",
        "committed_cores", "committed_memory", "committed_disk", "committed_gpus",
        "inuse_cache", "time_when_started")}
    out["tasks_by_state"] = {"waiting": counts[READY], "running": counts[RUNNING],
                             "waiting_retrieval": counts[WAITING_RETRIEVAL],
                             "retrieved": counts[RETRIEVED], "returned": s.tasks_done}
    out["library_instances"] = len(instances)
    out["libraries"] = sorted({i.rec.library for i in instances})
    out["transfers_in_flight"] = len(e.transfers.by_id)
    out["name"] = m.name or ""
    out["port"] = m.port
    out["now"] = time.time()
    return out


def workers(m: Manager) -> list[dict[str, Any]]:
    """One row per connected worker: who, resources total and in use, tasks, cache."""
    return consistent(lambda: _workers(m))


def _workers(m: Manager) -> list[dict[str, Any]]:
    rows = []
    for w in list(m._engine.workers.values()):
        if w.hostname == "unknown":
            continue
        t, c = w.total, w.committed
        rows.append({"hostname": w.hostname, "addrport": w.addrport, "worker_id": w.worker_id,
                     "cores_total": t.cores, "cores_inuse": c.cores,
                     "memory_total": t.memory, "memory_inuse": c.memory,
                     "disk_total": t.disk, "disk_inuse": c.disk, "gpus_total": t.gpus,
                     "gpus_inuse": c.gpus, "tasks_running": len(w.tasks),
                     "tasks_done": w.tasks_done, "cache_bytes": w.cache_bytes,
                     "cache_objects": len(w.cache), "connected_at": w.start_time})
    return rows


def transfers(m: Manager) -> list[dict[str, Any]]:
    """Transfers of cache objects to workers now in flight."""
    return consistent(lambda: _transfers(m))


def _transfers(m: Manager) -> list[dict[str, Any]]:
    now = time.monotonic()
    rows = []
    for t in list(m._engine.transfers.by_id.values()):
        source = t.source
        rows.append({"cachename": t.cachename, "size": t.size,
                     "source": "manager" if t.put else (
                         source.addrport if hasattr(source, "addrport") else "url"),
                     "dest": t.dest.addrport, "seconds": round(now - t.started, 3)})
    return rows


def finished(m: Manager) -> dict[str, Any]:
    """What ``History`` kept of finished tasks (empty until ``watch`` was called)."""
    return consistent(lambda: _finished(m))


def _finished(m: Manager) -> dict[str, Any]:
    h = m._engine.changes.history
    if h is None:
        return {"results": {}, "buckets": [], "seconds_total": 0.0, "executed": 0,
                "slowest": [], "failures": []}
    return {"results": dict(h.results),
            # upper bounds in seconds; the last, infinite, is null (JSON has no infinity)
            "buckets": [[None if math.isinf(bound) else bound, n]
                        for bound, n in zip(DURATION_BUCKETS, list(h.buckets), strict=True)],
            "seconds_total": h.seconds_total, "executed": h.executed,
            "slowest": [dataclasses.asdict(f) for f in h.slowest_first()],
            "failures": [dataclasses.asdict(f) for f in reversed(list(h.failures))]}


def libraries(m: Manager) -> list[dict[str, Any]]:
    """One row per installed library: its instances on workers, slots, calls in flight."""
    return consistent(lambda: _libraries(m))


def _libraries(m: Manager) -> list[dict[str, Any]]:
    table = m._engine.libraries
    instances = list(table.instances.values())
    rows = []
    for name, template in sorted(table.templates.items()):
        mine = [i for i in instances if i.rec.library == name]
        rows.append({"name": name, "instances": len(mine),
                     "workers": sorted(i.worker.addrport for i in mine),
                     "slots": sum(i.slots for i in mine),
                     "calls_in_flight": sum(len(i.calls) for i in mine),
                     "failures": template.failures, "pending": name in table.pending,
                     "dropped": False})
    for name in sorted(table.dropped):
        rows.append({"name": name, "instances": 0, "workers": [], "slots": 0,
                     "calls_in_flight": 0, "failures": None, "pending": False, "dropped": True})
    return rows
