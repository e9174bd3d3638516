"""Statistics and status reports built from the engine's state (api.md §12.2–12.3).

``Stats`` is a plain snapshot object; ``snapshot(engine)`` fills it. ``report(engine, kind)``
builds the JSON lists served by ``Manager.status()``, ``vine_status`` and HTTP.
"""

from __future__ import annotations

import getpass
import ipaddress
import json
import os
import socket
from typing import TYPE_CHECKING

import psutil

from .. import __version__
from ..protocol import PROTOCOL_VERSION
from ..resources import Resources
from .tasks import READY, RUNNING, STATE_NAMES, WAITING_RETRIEVAL

if TYPE_CHECKING:
    from .engine import Engine

STAT_FIELDS = (
    "workers_connected", "workers_init", "workers_idle", "workers_busy", "workers_able",
    "workers_joined", "workers_removed", "workers_released", "workers_idled_out",
    "workers_slow", "workers_blocked", "workers_lost", "tasks_waiting", "tasks_on_workers",
    "tasks_running", "tasks_with_results", "tasks_recovery", "tasks_submitted",
    "tasks_dispatched", "tasks_done", "tasks_failed", "tasks_successful", "tasks_cancelled",
    "tasks_exhausted_attempts", "time_when_started", "time_send", "time_receive",
    "time_send_good", "time_receive_good", "time_status_msgs", "time_internal", "time_polling",
    "time_application", "time_scheduling", "time_workers_execute",
    "time_workers_execute_good", "time_workers_execute_exhaustion", "bytes_sent",
    "bytes_received", "bandwidth", "capacity_tasks", "capacity_cores", "capacity_memory",
    "capacity_disk", "capacity_gpus", "capacity_instantaneous", "capacity_weighted",
    "total_cores", "total_memory", "total_disk", "total_gpus", "committed_cores",
    "committed_memory", "committed_disk", "committed_gpus", "max_cores", "max_memory",
    "max_disk", "max_gpus", "min_cores", "min_memory", "min_disk", "min_gpus", "inuse_cache",
)


class Stats:
    """A snapshot of the manager's statistics; every field is a number."""

    __slots__ = STAT_FIELDS

    def __init__(self) -> None:
        for name in STAT_FIELDS:
            setattr(self, name, 0)

    def __repr__(self) -> str:
        return "Stats(" + ", ".join(f"{k}={getattr(self, k)}" for k in STAT_FIELDS) + ")"


def snapshot(engine: Engine, started_us: int) -> Stats:
    s = Stats()
    for name, value in engine.counters.items():
        setattr(s, name, value)
    workers = [w for w in engine.workers.values() if w.hostname != "unknown"]
    s.workers_connected = len(workers)
    s.workers_init = sum(1 for w in engine.workers.values() if w.hostname == "unknown")
    s.workers_busy = sum(1 for w in workers if w.tasks)
    s.workers_idle = s.workers_connected - s.workers_busy
    s.workers_able = sum(1 for w in workers if w.ready)
    s.workers_blocked = len(engine.blocked)
    counts = engine.tasks.counts
    s.tasks_waiting = counts[READY]
    s.tasks_running = counts[RUNNING]
    s.tasks_on_workers = counts[RUNNING] + counts[WAITING_RETRIEVAL]
    s.tasks_with_results = counts[WAITING_RETRIEVAL] + len(engine.tasks.returnable)
    s.time_when_started = started_us
    total, committed = totals(engine)
    for kind in ("cores", "memory", "disk", "gpus"):
        setattr(s, f"total_{kind}", getattr(total, kind))
        setattr(s, f"committed_{kind}", getattr(committed, kind))
        values = [getattr(w.total, kind) for w in workers]
        setattr(s, f"max_{kind}", max(values, default=0))
        setattr(s, f"min_{kind}", min(values, default=0))
    s.capacity_cores, s.capacity_memory = total.cores, total.memory
    s.capacity_disk, s.capacity_gpus = total.disk, total.gpus
    s.capacity_tasks = s.capacity_instantaneous = s.capacity_weighted = int(total.cores)
    s.inuse_cache = int(sum(w.cache_bytes for w in workers) / 1e6)
    categories = engine.categories.by_name.values()
    s.time_workers_execute = sum(c.time_execute for c in categories)
    s.time_workers_execute_good = sum(c.time_good for c in categories)
    s.time_workers_execute_exhaustion = sum(c.time_exhaustion for c in categories)
    return s


def totals(engine: Engine) -> tuple[Resources, Resources]:
    total, committed = Resources(), Resources()
    for w in engine.workers.values():
        if w.has_resources:
            total.add(w.total)
            committed.add(w.committed)
    return total, committed


def report(engine: Engine, kind: str, manager_info: dict) -> list[dict]:
    builders = {"manager": _manager, "tasks": _tasks, "workers": _workers,
                "categories": _categories}
    return builders[kind](engine, manager_info)


ALIASES = {"manager": "manager", "manager_status": "manager", "resources_status": "manager",
           "tasks": "tasks", "task_status": "tasks", "workers": "workers",
           "worker_status": "workers", "categories": "categories", "wable_status": "categories"}


def _manager(engine: Engine, info: dict) -> list[dict]:
    s = snapshot(engine, info["started_us"])
    record = {
        "type": "vine_manager", "project": info.get("name") or "", "starttime":
        info["started_us"] // 1_000_000, "working_dir": os.getcwd(), "owner": _owner(),
        "version": __version__, "port": engine.port, "priority": info.get("priority", 0),
        "manager_preferred_connection": info.get("preferred_connection", "by_ip"),
        "taskvine_uuid": info["uuid"], "protocol": PROTOCOL_VERSION, "ssl": info.get("ssl", False),
        "network_interfaces": network_interfaces(), "name": socket.gethostname(),
    }
    for key, value in info.get("properties", {}).items():
        record.setdefault(key, value)
    for name in s.__slots__:
        if name in ("bandwidth", "workers_blocked") or name.startswith(
                ("total_", "committed_", "max_", "min_")):
            continue
        record[name] = getattr(s, name)
    record["workers"] = s.workers_connected
    record["tasks_left"] = len(engine.tasks.records)
    record["tasks_complete"] = s.tasks_done
    if engine.blocked:
        record["workers_blocked"] = sorted(engine.blocked)
    total, committed = totals(engine)
    record["workers_inuse"], record["workers_total"] = s.workers_busy, s.workers_connected
    for kind in ("cores", "memory", "disk", "gpus"):
        record[f"{kind}_inuse"] = getattr(committed, kind)
        record[f"{kind}_total"] = getattr(total, kind)
    record.update(_task_totals(engine))
    record["categories"] = _categories(engine, info)
    return [record]


def _task_totals(engine: Engine) -> dict[str, float | int]:
    """``tasks_total_*``: the resources declared by the tasks waiting or running (a resource
    a task leaves unspecified counts 0)."""
    cores, memory, disk, gpus = 0.0, 0, 0, 0
    for rec in engine.tasks.records.values():
        if rec.state == READY or rec.state == RUNNING:
            t = rec.task
            cores += max(t._cores, 0)
            memory += max(t._memory, 0)
            disk += max(t._disk, 0)
            gpus += max(t._gpus, 0)
    return {"tasks_total_cores": cores, "tasks_total_memory": memory,
            "tasks_total_disk": disk, "tasks_total_gpus": gpus}


_FAMILIES = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6"}


def network_interfaces(families: tuple[int, ...] = (socket.AF_INET,)) -> list[dict]:
    """The addresses a worker may reach this machine at, for the catalog record: every
    interface address of ``families`` (the manager listens on IPv4 only) but loopback and
    link-local ones."""
    out = []
    try:
        interfaces = psutil.net_if_addrs()
    except OSError:
        return out
    for name, addresses in interfaces.items():
        for a in addresses:
            if a.family not in families:
                continue
            try:
                ip = ipaddress.ip_address(a.address.split("%")[0])
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_link_local):
                out.append({"interface": name, "address": a.address,
                            "family": _FAMILIES[a.family]})
    return out


def _tasks(engine: Engine, info: dict) -> list[dict]:
    now = int(engine.clock() * 1e6)
    out = []
    for rec in engine.tasks.records.values():
        t = rec.task
        row = {"task_id": rec.task_id, "state": STATE_NAMES[rec.state], "category": t._category,
               "command": t._command, "priority": str(t._priority),
               "time_when_submitted": rec.metrics.get("time_when_submitted", 0),
               "time_when_commit_start": rec.metrics.get("time_when_commit_start", 0),
               "time_when_commit_end": rec.metrics.get("time_when_commit_end", 0),
               "current_time": now}
        if t._tag is not None:
            row["tag"] = t._tag
        alloc = rec.allocation if rec.worker is not None else None
        src = alloc or Resources(t._cores, t._memory, t._disk, t._gpus)
        row.update(cores=src.cores, gpus=src.gpus, memory=src.memory, disk=src.disk)
        if rec.worker is not None:
            row["addrport"], row["host"] = rec.worker.addrport, rec.worker.hostname
        out.append(row)
    return out


def _workers(engine: Engine, info: dict) -> list[dict]:
    now = int(engine.clock() * 1e6)
    out = []
    for w in engine.workers.values():
        if w.hostname == "unknown":
            continue
        row = {"hostname": w.hostname, "os": w.os, "arch": w.arch, "addrport": w.addrport,
               "version": w.version, "workerid": w.worker_id,
               "ncpus": w.total.cores, "total_tasks_complete": w.tasks_done,
               "total_tasks_running": len(w.tasks), "total_bytes_transferred": w.cache_bytes,
               "total_transfer_time": 0, "start_time": int(w.start_time * 1e6),
               "current_time": now, "workers_inuse": 1 if w.tasks else 0, "workers_total": 1}
        for kind in ("cores", "memory", "disk", "gpus"):
            row[f"{kind}_inuse"] = getattr(w.committed, kind)
            row[f"{kind}_total"] = getattr(w.total, kind)
        if w.factory:
            row["factory_name"] = w.factory
        out.append(row)
    return out


def _categories(engine: Engine, info: dict) -> list[dict]:
    """One record per category that has had tasks (``Categories.row``)."""
    cats = engine.categories
    workers = engine.workers.values()
    return [cats.row(name, cats.workers_able(name, workers)) for name in cats.names_with_tasks()]


def to_json(rows: list[dict]) -> bytes:
    return json.dumps(rows).encode()


def _owner() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return str(os.getuid())
