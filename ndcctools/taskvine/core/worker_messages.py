"""The worker messages that only keep accounts: who the worker is, what it has, what it holds.

Each handler is ``handler(engine, worker, message)``, found by message type in the engine's
``_HANDLERS`` table (the messages that move tasks, ``complete`` and replies, stay in the
engine). A handler updates the worker's own ``WorkerRecord`` and tells the owners of the rest:
the replica index and transfers (``cache-update``, ``cache-invalid``), the transactions log,
monitoring. One that changes what could be scheduled marks the engine dirty. A handler that
raises ``RemoteProtocolError`` (or anything else) gets its connection closed by the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import protocol as p
from ..resources import Resources
from ..security import TRANSFER_AUTH_INFO
from .retrieval import ResultsReply
from .workers import WorkerRecord

if TYPE_CHECKING:
    from .engine import Engine


def on_hello(e: Engine, w: WorkerRecord, msg: p.Hello) -> None:
    if w.hostname != "unknown":
        raise p.RemoteProtocolError("a second hello")
    if msg.protocol != p.PROTOCOL_VERSION:  # that connection goes, never its whole host
        raise p.RemoteProtocolError(f"speaks protocol {msg.protocol}, not "
                                    f"{p.PROTOCOL_VERSION}")
    w.hostname, w.os, w.arch, w.version = msg.hostname, msg.os, msg.arch, msg.version
    e.unidentified -= 1
    e.counters["workers_joined"] += 1
    max_workers = e.tuning.max_workers
    if max_workers >= 0 and _joined(e) > max_workers:
        e.remove_worker(w, "EXPLICIT")


def _joined(e: Engine) -> int:
    """Connected workers that said hello."""
    return sum(1 for w in e.workers.values() if w.hostname != "unknown")


def on_info(e: Engine, w: WorkerRecord, msg: p.Info) -> None:
    key, value = msg.key, msg.value
    if key == "worker-id":
        w.worker_id = value
        e.txn.worker_connection(value, w.addrport)
    elif key == "worker-end-time":
        w.end_time = p.parse_number(value or "0")
        e._dirty = True
    elif key == "from-factory":
        w.factory = value
    elif key == "idle-disconnect-request":
        if not w.tasks and not w.conn.replies and not _holds_sole_temp(e, w):
            e.send(w, p.Exit())
            e.counters["workers_idled_out"] += 1
    elif key == "library-update":
        fields = value.split()
        if len(fields) == 2 and fields[1] == "2":
            e.txn.library(int(p.parse_number(fields[0])), "STARTED", w.worker_id)
    elif key == p.MONITOR_INFO:
        w.monitors = True
    elif key == TRANSFER_AUTH_INFO:
        if e.transfer_secret is not None and not w.peer_auth:
            w.peer_auth = True
            e.debug.tx(w.hostname, w.addrport, "transfer-secret (hidden)")
            e.send_raw(w, p.TransferSecret(e.transfer_secret.decode()).encode())
    elif key in ("disk_exhausted", "memory_exhausted", "wall_time_exhausted", "vacating"):
        e.debug.write("vine", f"{w.label()} reports {key} {value}")


def _holds_sole_temp(e: Engine, w: WorkerRecord) -> bool:
    """Whether ``w`` has the only copy of a temp file (it may not idle out then)."""
    return any(name.startswith("temp-") and e.replicas.count(name) <= 1
               for name in w.cache)


def on_measured(e: Engine, w: WorkerRecord, msg: p.Measured) -> None:
    rec = w.tasks.get(msg.task_id)
    if rec is not None:
        e.monitoring.received(w, rec, msg)


def on_resources(e: Engine, w: WorkerRecord, msg: p.Resources) -> None:
    if msg.workers >= 1 and msg.tag >= 0:
        w.total = Resources(msg.cores, msg.memory, msg.disk, msg.gpus)
        if not w.has_resources:
            e.txn.worker_resources(w.worker_id, msg.cores, msg.memory, msg.disk)
            if e.transfer_secret is not None and not w.peer_auth:
                e.debug.write("vine", f"{w.label()} does not authenticate peer "
                              "transfers (an upstream worker?): its transfer port "
                              "serves anyone who asks, and our workers fetch from it "
                              "without the exchange")
        w.has_resources = True
        e._dirty = True


def on_cache_update(e: Engine, w: WorkerRecord, msg: p.CacheUpdate) -> None:
    name = msg.cachename
    old = w.cache.get(name, 0)
    w.cache[name] = msg.size
    w.cache_bytes += msg.size - old
    e.replicas.add(name, w)
    e.transfers.finish(w, name, msg.transfer_id)
    e.txn.cache_update(w.worker_id, name, msg.size, msg.duration_us, msg.start_us)
    e._dirty = True
    if name in w.building:
        e.delivery.build_ended(w, name, None)
    if name in e.delivery.producers:
        e.delivery.replicate(name)


def on_cache_invalid(e: Engine, w: WorkerRecord, msg: p.CacheInvalid) -> None:
    e.debug.write("vine", f"{w.label()}: cache object {msg.cachename} invalid: "
                  f"{msg.text.strip()}")
    if msg.cachename in w.building:
        e.delivery.build_ended(w, msg.cachename, msg.text)
    e.drop_replica(w, msg.cachename)
    t = e.transfers.finish(w, msg.cachename, msg.transfer_id)
    pause = e.tuning.transient_error_interval
    if t is not None and isinstance(t.source, WorkerRecord):
        e.transfers.source_failed(t.source, pause)
        e.debug.write("vine", f"transfer of {msg.cachename} from {t.source.label()} "
                      f"failed: not using it as a source for {pause:.0f}s")
    elif t is not None and t.put:
        w.paused_until = e.clock() + pause
        e.debug.write("vine", f"{w.label()} could not store {msg.cachename}: no tasks "
                      f"are sent there for {pause:.0f}s")
    e._dirty = True


def on_feature(e: Engine, w: WorkerRecord, msg: p.Feature) -> None:
    w.features.add(msg.name)
    e._dirty = True


def on_transfer_port(e: Engine, w: WorkerRecord, msg: Any) -> None:
    w.transfer_port = msg.port


def on_available_results(e: Engine, w: WorkerRecord, msg: p.AvailableResults) -> None:
    for other in e.workers.values():
        if other.ready:
            other.conn.replies.append(
                ResultsReply(other.tasks, lambda text: e.debug.write("vine", text)))
            e.send(other, p.SendResults(-1))


def on_status(e: Engine, w: WorkerRecord, msg: Any) -> None:
    """A status client (``vine_status``, a browser): answer with JSON and close. Only a
    connection's first message may ask: a worker that asks is dropped (its tasks go back
    to the queue)."""
    if w.hostname != "unknown" or w.tasks or w.worker_id is not None:
        raise p.RemoteProtocolError(f"a status request ({type(msg).__name__}) from a "
                                    "connection that is a worker")
    conn = w.conn
    del e.workers[conn]
    e.unidentified -= 1
    e.status_conns.add(conn)
    kind = msg.kind if isinstance(msg, p.StatusRequest) else msg.path.strip("/") or "index"
    body = e.status_builder(kind) if e.status_builder else b"[]"
    if isinstance(msg, p.HttpGet):
        body = (b"HTTP/1.1 200 OK\nConnection: close\nAccess-Control-Allow-Origin: *\n"
                b"Content-type: text/plain\n\n" + body)
    conn.send(body)
    e._to_flush.add(conn)
