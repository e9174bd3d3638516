"""The factory's arithmetic and its pool of jobs, with a batch system in memory (pure logic:
the real systems run in test_factory_local.py and test_batch_systems.py)."""

from __future__ import annotations

import pytest

from ndcctools.taskvine.batch import QUEUED, RUNNING, BatchError, BatchSystem, JobSpec
from ndcctools.taskvine.factory import sizing
from ndcctools.taskvine.factory.options import read_config, write_config
from ndcctools.taskvine.factory.pool import MAX_BACKOFF, Pool
from ndcctools.taskvine.resources import Resources


class MemoryBatch(BatchSystem):
    name = "memory"
    status_interval = 0.0

    def __init__(self):
        super().__init__()
        self.jobs: dict[str, str] = {}
        self.refuse = False
        self.next = 0
        self.submits = 0

    def submit(self, job):
        self.submits += 1
        if self.refuse:
            raise BatchError("sbatch: error: QOSMaxSubmitJobPerUserLimit")
        self.next += 1
        self.jobs[str(self.next)] = QUEUED
        return str(self.next)

    def poll(self, ids):
        return {i: self.jobs[i] for i in ids if i in self.jobs}

    def remove(self, ids):
        for i in ids:
            self.jobs.pop(i, None)


def make_pool(tmp_path):
    batch, lines = MemoryBatch(), []
    spec = lambda base: JobSpec("j", ["w"], str(tmp_path))  # noqa: E731
    return Pool(batch, spec, lines.append), batch, lines


def test_demand_sums_the_managers_and_ignores_junk():
    d = sizing.demand_of([{"tasks_waiting": 10, "tasks_on_workers": 2, "tasks_total_cores": 24,
                           "workers_connected": 3},
                          {"tasks_waiting": "x", "tasks_on_workers": float("nan"),
                           "tasks_total_cores": -5}])
    assert (d.tasks, d.declared.cores, d.workers) == (12, 24, 3)


@pytest.mark.parametrize("demand,worker,fixed,needed", [
    (sizing.Demand(tasks=200), {"cores": 4}, -1, 200),          # unlabelled: a worker each
    (sizing.Demand(200, Resources(cores=200)), {"cores": 4}, -1, 50),  # 1-core tasks
    (sizing.Demand(10, Resources(cores=10, memory=10_000)), {"cores": 8, "memory": 4000}, -1, 3),
    (sizing.Demand(10, Resources(cores=40)), {"cores": 2}, -1, 10),    # bigger than a worker
    (sizing.Demand(tasks=9), {"cores": 4}, 4, 3),                 # --tasks-per-worker
    (sizing.Demand(), {"cores": 4}, -1, 0),
])
def test_workers_needed(demand, worker, fixed, needed):
    assert sizing.workers_needed(demand, worker, fixed) == needed


@pytest.mark.parametrize("needed,lo,hi,target", [(0, 2, 8, 2), (5, 2, 8, 5), (50, 2, 8, 8),
                                                  (50, 10, 8, 8), (3, 0, 0, 0)])
def test_pool_target_stays_within_min_and_max(needed, lo, hi, target):
    assert sizing.pool_target(needed, lo, hi) == target


def test_grows_by_workers_per_cycle_and_marks_base_jobs(tmp_path):
    pool, batch, _ = make_pool(tmp_path)
    pool.resize(8, per_cycle=5, minimum=2, now=0)
    assert pool.alive() == 5
    pool.resize(8, per_cycle=5, minimum=2, now=1)
    assert pool.alive() == 8
    assert sum(j.base for j in pool.jobs.values()) == 2
    pool.resize(8, per_cycle=5, minimum=2, now=2)
    assert batch.submits == 8  # never past the target


def test_a_refused_submission_backs_off_instead_of_spinning(tmp_path):
    pool, batch, lines = make_pool(tmp_path)
    batch.refuse = True
    for now in range(0, 600):  # ten minutes of one-second cycles
        pool.resize(4, per_cycle=4, minimum=0, now=float(now))
    assert 5 <= batch.submits <= 20  # back-off up to a minute, not 2,400 tries
    assert "QOSMaxSubmitJobPerUserLimit" in lines[0] and "not submitting for 1s" in lines[0]
    assert any(f"not submitting for {MAX_BACKOFF:.0f}s" in line for line in lines)


def test_jobs_that_end_at_once_back_off_and_quote_their_output(tmp_path):
    pool, batch, lines = make_pool(tmp_path)
    pool.resize(1, per_cycle=1, minimum=0, now=0)
    (job,) = pool.jobs.values()
    with open(job.spec.log_path, "w") as f:
        f.write("vine_worker: error: unrecognized arguments: --bogus\n")
    batch.jobs.clear()  # it ended (or the system lost it)
    pool.refresh(1.0)
    assert pool.alive() == 0
    assert "unrecognized arguments: --bogus" in lines[-1]
    pool.resize(1, per_cycle=1, minimum=0, now=1.5)
    assert batch.submits == 1  # waits out the back-off
    pool.resize(1, per_cycle=1, minimum=0, now=2.1)
    assert batch.submits == 2


def test_a_long_lived_job_ending_is_not_a_failure(tmp_path):
    pool, batch, lines = make_pool(tmp_path)
    pool.resize(1, per_cycle=1, minimum=0, now=0)
    batch.jobs["1"] = RUNNING
    pool.refresh(1.0)
    batch.jobs.clear()
    pool.refresh(100.0)
    assert not lines and pool.failures == 0
    pool.resize(1, per_cycle=1, minimum=0, now=100.0)
    assert pool.alive() == 1


def test_shrinking_removes_queued_jobs_only_and_cap_removes_the_newest(tmp_path):
    pool, batch, _ = make_pool(tmp_path)
    pool.resize(6, per_cycle=0, minimum=1, now=0)
    for i in ("1", "2", "3"):
        batch.jobs[i] = RUNNING
    pool.refresh(1.0, force=True)
    pool.resize(2, per_cycle=0, minimum=1, now=2)
    assert sorted(pool.jobs) == ["1", "2", "3"]  # queued 4-6 removed; running stay
    pool.cap(1)
    assert list(pool.jobs) == ["1"]  # the base job stays
    assert list(batch.jobs) == ["1"]


def test_remove_all_waits_until_the_queue_forgets_the_jobs(tmp_path):
    pool, batch, lines = make_pool(tmp_path)
    pool.resize(3, per_cycle=0, minimum=0, now=0)
    lingering = {"n": 2}
    real_poll = batch.poll

    def slow_poll(ids):  # like squeue listing cancelled jobs as COMPLETING for a while
        lingering["n"] -= 1
        return {i: RUNNING for i in ids} if lingering["n"] >= 0 else real_poll(ids)
    batch.poll = slow_poll
    clock = iter(range(1000))
    pool.remove_all(patience=30, clock=lambda: next(clock), pause=lambda s: None)
    assert pool.alive() == 0 and not batch.jobs and lingering["n"] < 0 and not lines


def test_config_file_round_trip_and_errors(tmp_path):
    path = str(tmp_path / "config.json")
    write_config(path, {"max_workers": 8, "min_workers": 0, "batch_type": "slurm"})
    assert read_config(path) == {"max_workers": 8, "min_workers": 0}
    (tmp_path / "bad.json").write_text('{"max-workers": "lots"}')
    with pytest.raises(ValueError, match="max_workers"):
        read_config(str(tmp_path / "bad.json"))
    (tmp_path / "static.json").write_text('{"batch-type": "slurm"}')
    with pytest.raises(ValueError, match="cannot|can change"):
        read_config(str(tmp_path / "static.json"))
