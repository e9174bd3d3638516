"""The ``vine_factory`` loop: look at the managers, look at the jobs, bring the pool to what
is needed, every ``interval`` seconds, until stopped.

::

    managers --(status records)--> sizing --(target)--> Pool --(submit/remove)--> batch system
                                                          ^                            |
                                                          +------(which jobs live)-----+

It stops on SIGTERM/SIGINT/SIGHUP, when its parent exits (``--parent-death``), or after
``factory_timeout`` seconds without a manager, and always removes every job it started on
the way out. When the managers are known to be gone for ``LOST_GRACE`` seconds, it removes
its jobs but keeps running (the program may start a new manager).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from ..batch import BatchSystem, JobSpec
from . import sizing
from .jobs import worker_binary, worker_job
from .options import read_config
from .pool import Pool, tail
from .target import DirectTarget, NamedTarget, Reading

LOST_GRACE = 10.0  # seconds a manager may be unreachable before its workers are removed
CONNECT_GRACE = 15.0  # seconds a running worker may take to connect before the log says so
STATE_FILE = "state.json"


class Stop(Exception):
    """A signal or the parent's death: remove the jobs and exit."""


class FactoryDaemon:
    def __init__(self, options: dict[str, Any], target: DirectTarget | NamedTarget,
                 batch: BatchSystem, workdir: str, interval: float = 1.0,
                 log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options = dict(options)
        self.target, self.batch, self.workdir = target, batch, workdir
        self.interval, self.clock = interval, clock
        self.log = log or _stderr_log
        self.name = f"vine_factory-{socket.gethostname()}-{os.getpid()}"
        self.worker = worker_binary(options.get("worker_binary"))
        self.pool = Pool(batch, self.job_spec, self.log)
        self.config_mtime = 0.0
        self.lost_since: float | None = None
        self.last_reading = Reading()
        self.said: dict[str, str] = {}  # what the log said last, per topic: say it once
        self.checked_connections = float("-inf")
        self.target_size: int | None = None
        self.cycles = 0
        self.stop_asked = False  # by a signal during a cycle: acted on when the cycle ends
        self.sleeping = False
        self.parent = os.getppid()
        self.apply_batch_options()

    # ------------------------------------------------------------------ the loop
    def run(self, parent_death: bool = False) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.log(f"{self.name}: {self.batch.name} workers for {self.target}; "
                 f"jobs and logs in {self.workdir}")
        self.write_state()  # started: the Python Factory waits for this
        try:
            while True:
                if parent_death and os.getppid() != self.parent:
                    self.log("parent process is gone: stopping")
                    break
                if not self.cycle(self.clock()) or self.stop_asked:
                    raise Stop()
                self.sleeping = True
                time.sleep(self.interval)
                self.sleeping = False
        except Stop:
            self.log("told to stop" if self.stop_asked else "stopping")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            self.shutdown()
        return 0

    def _on_signal(self, *_: object) -> None:
        """Stop now if asleep; else once the cycle ends (a job submitted but not yet
        recorded would be left behind)."""
        self.stop_asked = True
        if self.sleeping:
            raise Stop()

    def cycle(self, now: float) -> bool:
        """One look and one change; False when the factory should exit."""
        self.cycles += 1
        self.reload_config()
        reading = self.target.read()
        self.last_reading = reading
        self.pool.refresh(now)
        self.pool.cap(self.opt("max_workers"))
        if reading.records is None:
            keep_going = self.managers_absent(reading, now)
        else:
            keep_going = True
            self.managers_present(reading.records, now)
        self.check_connections(now)
        self.write_state()
        return keep_going

    def managers_present(self, records: list[dict], now: float) -> None:
        if self.lost_since is not None:
            self.say("manager", f"{self.target} answers again")
        self.lost_since = None
        demand = sizing.demand_of(records)
        worker = {k: self.opt(k) for k in sizing.KINDS}
        needed = sizing.workers_needed(demand, worker, self.opt("tasks_per_worker"))
        others = max(0, demand.workers - len(self.pool.running()))
        target = sizing.pool_target(needed - others, self.opt("min_workers"),
                                    self.opt("max_workers"))
        before = self.pool.alive()
        self.pool.resize(target, self.opt("workers_per_cycle"), self.opt("min_workers"), now)
        self.target_size = target
        self.say("sizing", f"{demand.tasks} tasks, {demand.workers} workers connected; "
                 f"aiming at {target} of ours, {self.pool.alive()} alive"
                 + (f" ({self.pool.alive() - before:+d})" if self.pool.alive() != before
                    else ""))

    def managers_absent(self, reading: Reading, now: float) -> bool:
        if not reading.gone:
            self.say("manager", f"no answer from {self.target} ({reading.why}); "
                     "keeping the workers as they are")
            return True
        if self.lost_since is None:
            self.lost_since = now
            self.say("manager", f"cannot reach {self.target}: {reading.why}")
        away = now - self.lost_since
        if away >= LOST_GRACE and self.pool.alive():
            self.log(f"{self.target} has been away {away:.0f}s: removing "
                     f"{self.pool.alive()} workers")
            self.pool.remove_all()
        timeout = self.opt("factory_timeout")
        if timeout and away >= timeout:
            self.log(f"no manager for {away:.0f}s (factory timeout {timeout}s): exiting")
            return False
        return True

    def check_connections(self, now: float) -> None:
        """Say (once) when workers that have run a while never connected: the managers'
        address is probably wrong for them."""
        if now - self.checked_connections < CONNECT_GRACE:
            return
        old = [j for j in self.pool.running()
               if j.running_since is not None and now - j.running_since > CONNECT_GRACE]
        if not old:
            return
        self.checked_connections = now
        connected = self.target.workers_of(self.name)
        if connected == 0:
            self.say("connect", f"{len(old)} workers have run over {CONNECT_GRACE:.0f}s and "
                     f"none is connected to {self.target}; the output of job {old[0].id} "
                     f"ends with:\n{tail(old[0].spec.log_path)}")
        elif connected:
            self.said.pop("connect", None)

    def shutdown(self) -> None:
        if self.pool.alive():
            self.log(f"removing {self.pool.alive()} workers")
        self.pool.remove_all()
        self.batch.close()
        self.write_state(stopped=True)

    # ------------------------------------------------------------------ jobs
    def job_spec(self, base: bool) -> JobSpec:
        return worker_job(self.options, self.batch.name, self.worker,
                          self.target.worker_args(),
                          f"vine-worker-{os.getpid()}-{self.pool.submitted_total}",
                          self.workdir, self.name, idle_exit=not base)

    # ------------------------------------------------------------------ options, state, log
    def opt(self, name: str) -> Any:
        return self.options.get(name)

    def reload_config(self) -> None:
        path = self.options.get("config_file")
        if not path:
            return
        try:
            mtime = os.stat(path).st_mtime
            if mtime == self.config_mtime:
                return
            self.config_mtime = mtime
            changes = read_config(path)
        except (OSError, ValueError) as e:
            self.say("config", f"keeping the options as they were: {e}")
            return
        self.said.pop("config", None)
        self.options.update(changes)
        self.apply_batch_options()

    def apply_batch_options(self) -> None:
        if hasattr(self.batch, "requirements"):
            self.batch.requirements = self.options.get("condor_requirements") or ""

    def say(self, topic: str, text: str) -> None:
        if self.said.get(topic) != text:
            self.said[topic] = text
            self.log(text)

    def write_state(self, stopped: bool = False) -> None:
        """``state.json`` in the work directory: what the factory is doing, for people and
        for the Python ``Factory`` (which waits for the first one)."""
        state = {
            "name": self.name, "pid": os.getpid(), "cycles": self.cycles, "stopped": stopped,
            "target": self.target_size,
            "manager": "answering" if self.last_reading.records is not None else
            (self.last_reading.why or "not asked yet"),
            "jobs": [{"id": j.id, "state": j.state, "base": j.base}
                     for j in self.pool.jobs.values()],
        }
        path = os.path.join(self.workdir, STATE_FILE)
        try:
            with open(path + ".tmp", "w") as f:
                json.dump(state, f)
            os.replace(path + ".tmp", path)
        except OSError as e:
            self.say("state", f"cannot write {path}: {e}")


def _stderr_log(text: str) -> None:
    sys.stderr.write(stamp(text))
    sys.stderr.flush()


def stamp(text: str) -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S ") + text + "\n"
