"""The engine's once-a-second phase: what happens because time passed, not because a
message came.

``every_second`` runs at the end of a cycle when a second has gone by since the last run:

    keepalives     a worker silent for keepalive-interval gets a ``check``; one that does
                   not answer within keepalive-timeout is dropped (its tasks go back to the
                   queue), as is a connection that says no hello in time
    admission      connections stuck in the TLS handshake or password exchange expire
    slow tasks     with ``enable_disconnect_slow_workers`` (api.md §10.4), tasks over their
                   category's limit go to another worker; a worker slow twice is dropped
    blocklist      hosts whose block ran out are unblocked
    transfers      overdue transfers are given up (a ``put`` not acknowledged drops its worker)
    periodic       the facade's timer (catalog updates)
    logs           a performance row if tasks changed and perf-log-interval has passed;
                   every log's buffer written out

The state all this reads and changes belongs to the engine and its owners (workers, tasks,
transfers, categories); these functions take the engine as their first argument.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import protocol as p
from .workers import WorkerRecord

if TYPE_CHECKING:
    from .engine import Engine
    from .transfers import Transfer


def every_second(e: Engine, hello_timeout: float) -> None:
    """Run the timers; a connection has ``hello_timeout`` seconds (at most keepalive-timeout)
    to say hello."""
    now = e.clock()
    _keepalives(e, now, hello_timeout)
    if e.admission is not None:
        e.admission.expire(time.monotonic())
    if e.categories.watch_slow:
        _cancel_slow_tasks(e, int(now * 1e6))
    for host, until in list(e.blocked.items()):
        if until and now > until:
            del e.blocked[host]
    for t in e.transfers.overdue(e.tuning.min_transfer_timeout,
                                 e.tuning.default_transfer_rate):
        _transfer_overdue(e, t)
    if e.periodic is not None:
        e.periodic()
    e.perf.tick()
    e.flush_logs()
    e._dirty = True


def _keepalives(e: Engine, now: float, hello_timeout: float) -> None:
    interval, timeout = e.tuning.keepalive_interval, e.tuning.keepalive_timeout
    for w in list(e.workers.values()):
        if w.check_sent and now - w.check_sent > timeout:
            e.debug.write("vine", f"{w.label()} did not answer a keepalive in "
                          f"{timeout:.0f}s")
            e.remove_worker(w, "FAILURE")
        elif not w.check_sent and now - w.last_heard > interval and w.hostname != "unknown":
            w.check_sent = now
            e.send(w, p.Check())
        elif w.hostname == "unknown" and now - w.start_time > min(timeout, hello_timeout):
            e.debug.write("vine", f"{w.label()} said no hello in {hello_timeout:.0f}s")
            e.remove_worker(w, "UNKNOWN")


def _cancel_slow_tasks(e: Engine, now_us: int) -> None:
    """api.md §10.4: a task running longer than its category's multiplier × average goes
    back to the queue for another worker; a worker with two of them is dropped and its
    host blocked for ``option-blocklist-slow-workers-timeout``."""
    for w in list(e.workers.values()):
        for rec in list(w.tasks.values()):
            limit = e.categories.slow_after_us(rec.task._category)
            started = rec.metrics.get("time_when_commit_end", now_us)
            if rec.library is not None or limit is None or now_us - started <= limit:
                continue
            e.debug.write("vine", f"task {rec.task_id} has run "
                          f"{(now_us - started) / 1e6:.1f}s on {w.label()}, more than "
                          f"{limit / 1e6:.1f}s: trying another worker")
            e.kill_on_worker(rec)  # its slot and allocation there are free again
            rec.worker, rec.slow_on = None, w
            e.tasks.make_ready(rec)
            w.slow_tasks += 1
        if w.slow_tasks >= 2 and not w.conn.closed:
            until = e.tuning.option_blocklist_slow_workers_timeout
            e.block(w.hostname, until)
            e.counters["workers_slow"] += 1
            e.debug.write("vine", f"{w.label()} was slow twice: disconnected, host "
                          f"blocked for {until:.0f}s")
            e.remove_worker(w, "FAST_ABORT")


def _transfer_overdue(e: Engine, t: Transfer) -> None:
    """A transfer took longer than it may. A worker that does not acknowledge a ``put``
    is stuck or lying: it is dropped (its tasks go back to the queue). For a ``puturl``
    the source is freed for others; the destination reports when its fetch ends."""
    took = time.monotonic() - t.started
    if t.put:
        e.debug.write("vine", f"{t.dest.label()} did not acknowledge the put of "
                      f"{t.cachename} ({t.size} bytes) in {took:.0f}s: disconnecting")
        e.remove_worker(t.dest, "FAILURE")
        return
    e.transfers.finish(t.dest, t.cachename, t.tid)
    if isinstance(t.source, WorkerRecord):
        e.transfers.source_failed(t.source, e.tuning.transient_error_interval)
    e.debug.write("vine", f"transfer {t.tid} of {t.cachename} to {t.dest.label()} is "
                  f"not over after {took:.0f}s: no longer waiting for it")
