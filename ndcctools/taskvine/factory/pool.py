"""The factory's jobs: which it submitted, which are still alive, and bringing their number
to a target.

``Pool`` owns the table of jobs. Each cycle the daemon calls ``refresh(now)`` (ask the batch
system which jobs live, at most every ``status_interval``) and ``resize(target, now)``.
Growing submits up to ``workers_per_cycle`` jobs. Shrinking is mostly the workers' own doing:
every worker beyond the first ``min_workers`` ("base" jobs) is started with an idle timeout
and leaves when the manager has nothing for it; the pool only removes jobs still waiting in
a batch queue that are no longer wanted, and the newest jobs when over ``max_workers``.

Failures never make it spin: a refused submission, or a job that ends within
``QUICK_EXIT`` seconds (or with a non-zero status, where the system tells), stops
submissions for a back-off that doubles up to ``MAX_BACKOFF``, and the log says why, with
the end of the job's own output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..batch import QUEUED, RUNNING, BatchError, BatchSystem, JobSpec

QUICK_EXIT = 3.0
MAX_BACKOFF = 60.0
LOG_TAIL = 1500  # bytes of a failed job's output quoted in the factory log


@dataclass
class Job:
    id: str
    spec: JobSpec
    base: bool  # one of the first min_workers: started without an idle timeout
    submitted: float
    state: str = QUEUED
    running_since: float | None = None


class Pool:
    def __init__(self, batch: BatchSystem, make_spec: Callable[[bool], JobSpec],
                 log: Callable[[str], None]) -> None:
        self.batch = batch
        self.make_spec = make_spec  # base -> the spec of a new job
        self.log = log
        self.jobs: dict[str, Job] = {}
        self.polled = float("-inf")
        self.failures = 0
        self.blocked_until = 0.0
        self.submitted_total = 0

    # ------------------------------------------------------------------ state
    def alive(self) -> int:
        return len(self.jobs)

    def running(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.state == RUNNING]

    def refresh(self, now: float, force: bool = False) -> None:
        if not self.jobs or (not force and now - self.polled < self.batch.status_interval):
            return
        try:
            states = self.batch.poll(list(self.jobs))
        except BatchError as e:  # not an answer: keep what we knew
            self.log(f"cannot see the {self.batch.name} queue: {e}")
            return
        self.polled = now
        for job in list(self.jobs.values()):
            state = states.get(job.id)
            if state is None:
                self._ended(job, now)
            else:
                if state == RUNNING and job.running_since is None:
                    job.running_since = now
                job.state = state

    def _ended(self, job: Job, now: float) -> None:
        del self.jobs[job.id]
        began = job.running_since if job.running_since is not None else job.submitted
        status = getattr(self.batch, "exit_status", lambda _: None)(job.id)
        if now - began < QUICK_EXIT or status not in (None, 0):
            how = f"with status {status}" if status not in (None, 0) else \
                f"after {now - began:.1f}s"
            self._failed(f"worker job {job.id} ended {how}; its output ends with:\n"
                         f"{tail(job.spec.log_path)}", now)
        else:
            self.failures = 0
        _remove_quietly(job.spec.log_path, job.spec.script_path)

    def _failed(self, why: str, now: float) -> None:
        self.failures += 1
        wait = min(MAX_BACKOFF, 2.0 ** (self.failures - 1))
        self.blocked_until = max(self.blocked_until, now + wait)
        self.log(f"{why}\nnot submitting for {wait:.0f}s")

    # ------------------------------------------------------------------ changes
    def resize(self, target: int, per_cycle: int, minimum: int, now: float) -> None:
        alive = len(self.jobs)
        if alive < target and now >= self.blocked_until:
            want = target - alive
            for _ in range(min(want, per_cycle) if per_cycle > 0 else want):
                base = sum(1 for j in self.jobs.values() if j.base) < minimum
                if not self._submit(base, now):
                    break
        elif alive > target:
            self._trim(target)

    def _submit(self, base: bool, now: float) -> bool:
        spec = self.make_spec(base)
        try:
            job_id = self.batch.submit(spec)
        except BatchError as e:
            self._failed(f"submitting a worker failed: {e}", now)
            return False
        self.jobs[job_id] = Job(job_id, spec, base, now)
        self.submitted_total += 1
        return True

    def _trim(self, target: int) -> None:
        """Remove jobs still waiting in the queue beyond ``target`` (newest first); running
        workers leave by their idle timeout."""
        queued = sorted((j for j in self.jobs.values() if j.state == QUEUED and not j.base),
                        key=lambda j: j.submitted, reverse=True)
        self.remove(queued[:len(self.jobs) - target])

    def cap(self, maximum: int) -> None:
        """Remove the newest jobs beyond ``maximum`` (it was lowered while running)."""
        if len(self.jobs) > maximum:
            newest = sorted(self.jobs.values(), key=lambda j: (j.base, -j.submitted))
            self.remove(newest[:len(self.jobs) - maximum])

    def remove(self, jobs: list[Job]) -> None:
        """Remove ``jobs``; one the batch system still lists after a failed removal stays
        in the table, to be removed again."""
        if not jobs:
            return
        ids = [j.id for j in jobs]
        still: set[str] = set()
        try:
            self.batch.remove(ids)
        except BatchError as e:
            self.log(f"removing jobs {' '.join(ids)}: {e}")
            try:
                still = set(self.batch.poll(ids))
            except BatchError:
                still = set(ids)
        for job in jobs:
            if job.id not in still:
                self.jobs.pop(job.id, None)
                _remove_quietly(job.spec.log_path, job.spec.script_path)

    def remove_all(self, patience: float = 30.0, clock: Callable[[], float] = time.monotonic,
                   pause: Callable[[float], None] = time.sleep) -> None:
        """Remove every job, and wait (up to ``patience`` seconds) until the batch system
        lists none of them any more."""
        gone = list(self.jobs)
        deadline = clock() + patience
        while self.jobs and clock() < deadline:
            self.remove(list(self.jobs.values()))
            if self.jobs:
                pause(1.0)
        while gone and clock() < deadline:
            try:
                gone = list(self.batch.poll(gone))
            except BatchError:
                break
            if gone:
                pause(0.5)
        if self.jobs or gone:
            self.log(f"jobs {' '.join(list(self.jobs) + gone)} may still be in the "
                     f"{self.batch.name} queue")


def tail(path: str, size: int = LOG_TAIL) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read().decode(errors="replace").strip() or "(nothing)"
    except OSError:
        return "(no output file)"


def _remove_quietly(*paths: str) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass
