"""Factories on real Slurm and Grid Engine schedulers, installed from Debian's packages and
started by ``tests/systems/{slurm,sge}.sh`` on this machine: the factory keeps N workers
alive through the scheduler (a job the scheduler loses is replaced), tasks run on them, and
``stop()`` leaves no job in the queue.

Where a scheduler is not installed these tests skip, except when ``VINE_TEST_SYSTEMS`` is
``required`` (as in CI), where that is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import ndcctools.taskvine as vine
from tests.conftest import wait_tasks, wait_until
from tests.factory.conftest import doomed_program, factory_state

SYSTEMS = os.path.join(os.path.dirname(__file__), "..", "systems")
pytestmark = pytest.mark.slow


def start_system(script: str, needs: str) -> None:
    if shutil.which(needs) is None:
        message = f"{needs} is not installed: run tests/systems/{script} install"
        if os.environ.get("VINE_TEST_SYSTEMS") == "required":
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run([os.path.join(SYSTEMS, script), "start"], check=True,
                   capture_output=True, timeout=300)


@pytest.fixture
def slurm():
    start_system("slurm.sh", "sbatch")
    return lambda: subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True,
                                  text=True, check=True).stdout.split("\n")[:-1]


@pytest.fixture
def sge(monkeypatch):
    monkeypatch.setenv("SGE_ROOT", "/var/lib/gridengine")
    monkeypatch.setenv("SGE_CELL", "default")
    start_system("sge.sh", "qsub")
    return lambda: [line for line in subprocess.run(
        ["qstat", "-u", "*"], capture_output=True, text=True, check=True).stdout.splitlines()[2:]
        if line.strip()]


def serve_until(m, predicate, timeout):
    def check():
        m.wait(0.1)
        return predicate()
    wait_until(check, timeout=timeout, step=0)


def keeps_n_workers_then_cleans_up(kind, queue, remove_cmd, manager, tmp_path):
    seen: set[str] = set()  # every job id the factory had (other runs may share the queue)

    def jobs():
        ids = [j["id"] for j in factory_state(f)["jobs"]]
        seen.update(ids)
        return ids

    def listed(ids):
        return [line for line in queue() if line.split()[0] in ids]

    f = vine.Factory(kind, manager_host_port=f"127.0.0.1:{manager.port}",
                     log_file=str(tmp_path / "factory.log"))
    f.min_workers = f.max_workers = 2
    f.cores, f.memory, f.disk, f.timeout = 1, 300, 300, 60
    f.scratch_dir = str(tmp_path / "scratch")
    with f:
        serve_until(manager, lambda: manager.stats.workers_connected == 2, timeout=90)
        assert len(listed(jobs())) == 2
        for i in range(6):
            manager.submit(vine.Task(f"echo job $JOB_ID$SLURM_JOB_ID task {i}"))
        done = wait_tasks(manager, 6)
        assert all(t.successful() for t in done)
        assert {t.output.split()[1] for t in done} <= seen  # ran inside the factory's jobs
        lost = jobs()[0]
        subprocess.run([*remove_cmd, lost], check=True, capture_output=True)
        serve_until(manager, lambda: lost not in jobs()
                    and manager.stats.workers_connected == 2, timeout=90)
        assert len(jobs()) == 2 and len(seen) == 3
    assert listed(seen) == []  # stop() waited until the queue forgot every job


def test_slurm_factory(slurm, manager, tmp_path):
    keeps_n_workers_then_cleans_up("slurm", slurm, ["scancel"], manager, tmp_path)


def test_sge_factory(sge, manager, tmp_path):
    keeps_n_workers_then_cleans_up("sge", sge, ["qdel"], manager, tmp_path)


def test_a_killed_program_leaves_no_slurm_job(slurm, tmp_path):
    """The program dies (SIGKILL): its factory sees its parent gone and cancels its jobs."""
    prog, started = doomed_program(tmp_path, "slurm")
    try:
        ids = started["jobs"]
        assert len(ids) == 2 and set(ids) <= {line.split()[0] for line in slurm()}
    finally:
        prog.kill()
        prog.wait()
    wait_until(lambda: not [line for line in slurm() if line.split()[0] in ids], timeout=60)
    assert "parent process is gone" in (tmp_path / "factory.log").read_text()
