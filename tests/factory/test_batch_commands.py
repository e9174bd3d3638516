"""The exact command lines each batch module runs, and how it reads the answers. Slurm and
Grid Engine also run for real in test_batch_systems.py; PBS, Torque, LSF and HTCondor cannot
be installed here, so their commands are checked as text (a recording runner answers the way
those systems do)."""

from __future__ import annotations

import os

import pytest

from ndcctools.taskvine.batch import (
    QUEUED,
    RUNNING,
    BatchError,
    JobSpec,
    batch_system,
    run_command,
)


class Recorder:
    """Answers each command with the next canned reply and remembers what was run."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, argv, stdin):
        self.calls.append((list(argv), stdin))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def job(tmp_path, **kw):
    base = dict(name="vine-worker-7-0", command=["/bin/vine_worker", "h", "9123"],
                workdir=str(tmp_path), cores=2, memory=1000, disk=3000)
    base.update(kw)
    return JobSpec(**base)


def submit(kind, tmp_path, reply, **kw):
    rec = Recorder(reply)
    system = batch_system(kind, rec)
    spec = job(tmp_path, **kw)
    job_id = system.submit(spec)
    return job_id, rec.calls[0], spec


def test_slurm_submit_asks_for_the_resources_and_returns_the_id(tmp_path):
    job_id, (argv, _), spec = submit("slurm", tmp_path, "4242\n", gpus=1,
                                     batch_options="-p gpu --qos 'high prio'")
    assert job_id == "4242"
    assert argv == ["sbatch", "--parsable", "-J", spec.name, "-D", str(tmp_path),
                    "-o", spec.log_path, "-e", spec.log_path, "--export=ALL", "-N", "1",
                    "-n", "1", "-c", "2", "--mem=1000M", "--tmp=3000M", "--gpus=1",
                    "-p", "gpu", "--qos", "high prio", spec.script_path]
    script = open(spec.script_path).read()
    assert script.splitlines()[-1] == "exec /bin/vine_worker h 9123"
    assert os.access(spec.script_path, os.X_OK)


def test_slurm_poll_and_remove(tmp_path):
    rec = Recorder("12 RUNNING\n13 PENDING\n99 RUNNING\n", "")
    system = batch_system("slurm", rec)
    assert system.poll(["12", "13", "14"]) == {"12": RUNNING, "13": QUEUED}
    system.remove(["12", "13"])
    assert rec.calls[0][0][:5] == ["squeue", "-h", "-o", "%i %T", "-u"]
    assert rec.calls[1][0] == ["scancel", "12", "13"]


def test_sge_uses_the_smp_parallel_environment(tmp_path):
    job_id, (argv, _), spec = submit("sge", tmp_path, "77\n")
    assert job_id == "77"
    assert argv == ["qsub", "-terse", "-N", spec.name, "-wd", str(tmp_path), "-j", "y",
                    "-o", spec.log_path, "-V", "-pe", "smp", "2", spec.script_path]
    rec = Recorder("job-ID prior name user state\n-----\n 77 0.5 w root r 11/29 all.q@vm 2\n"
                   " 78 0.0 w root qw 11/29  1\n", "")
    system = batch_system("uge", rec)
    assert system.poll(["77", "78", "79"]) == {"77": RUNNING, "78": QUEUED}
    system.remove(["78"])
    assert rec.calls[1][0] == ["qdel", "78"]


def test_condor_submit_description_on_stdin(tmp_path):
    rec = Recorder("Submitting job(s).\n1 job(s) submitted to cluster 31.\n",
                   "31 2\n32 1\n33 4\n", "")
    system = batch_system("condor", rec)
    system.requirements = '(OpSys == "LINUX")'
    spec = job(tmp_path, gpus=1)
    assert system.submit(spec) == "31"
    argv, description = rec.calls[0]
    assert argv == ["condor_submit"]
    lines = description.splitlines()
    for expected in (f"executable = {spec.script_path}", "request_cpus = 2",
                     "request_memory = 1000", "request_disk = 3072000", "request_gpus = 1",
                     'requirements = (OpSys == "LINUX")', "getenv = true"):
        assert expected in lines
    assert lines[-1] == "queue 1"
    assert system.poll(["31", "32", "33"]) == {"31": RUNNING, "32": QUEUED}
    system.remove(["31"])
    assert rec.calls[2][0] == ["condor_rm", "31"]


def test_pbs_and_torque_resource_requests(tmp_path):
    job_id, (argv, _), spec = submit("pbs", tmp_path, "123.pbsserver\n")
    assert job_id == "123.pbsserver"
    assert argv == ["qsub", "-N", spec.name, "-o", spec.log_path, "-j", "oe", "-V",
                    "-l", "select=1:ncpus=2:mem=1000mb", spec.script_path]
    _, (argv, _), spec = submit("torque", tmp_path, "124.torque\n")
    assert argv == ["qsub", "-d", str(tmp_path), "-N", spec.name, "-o", spec.log_path,
                    "-j", "oe", "-V", "-l", "nodes=1:ppn=2,mem=1000mb", spec.script_path]
    listing = ("Job id            Name   User  Time Use S Queue\n"
               "----------------  -----  ----  -------- - -----\n"
               "123.pbsserver     w      me    0        R batch\n"
               "124.pbsserver     w      me    0        Q batch\n"
               "125.pbsserver     w      me    0        C batch\n")
    rec = Recorder(listing, "")
    system = batch_system("pbs", rec)
    assert system.poll(["123.pbsserver", "124.pbsserver", "125.pbsserver"]) == {
        "123.pbsserver": RUNNING, "124.pbsserver": QUEUED}
    system.remove(["124.pbsserver"])
    assert rec.calls[1][0] == ["qdel", "124.pbsserver"]


def test_lsf_submit_poll_remove(tmp_path):
    job_id, (argv, _), spec = submit(
        "lsf", tmp_path, "Job <5501> is submitted to default queue <normal>.\n")
    assert job_id == "5501"
    assert argv == ["bsub", "-J", spec.name, "-cwd", str(tmp_path), "-o", spec.log_path,
                    "-e", spec.log_path, "-n", "2", "-R", "rusage[mem=1000]",
                    spec.script_path]
    rec = Recorder("5501 RUN\n5502 PEND\n5503 DONE\n", "")
    system = batch_system("lsf", rec)
    assert system.poll(["5501", "5502", "5503"]) == {"5501": RUNNING, "5502": QUEUED}
    system.remove(["5501"])
    assert rec.calls[1][0] == ["bkill", "5501"]


@pytest.mark.parametrize("kind,reply", [("slurm", "Submitted batch job\n"),
                                        ("sge", "Your job has been submitted\n"),
                                        ("condor", "ERROR: no\n"), ("lsf", "nope\n"),
                                        ("pbs", "\n")])
def test_an_answer_without_a_job_id_is_an_error(tmp_path, kind, reply):
    with pytest.raises(BatchError, match="not a"):
        submit(kind, tmp_path, reply)


def test_a_refused_command_names_itself():
    with pytest.raises(BatchError, match=r"^sh -c .* exited with status 1: nope"):
        run_command(["sh", "-c", "echo nope >&2; exit 1"])


def test_unknown_and_unsupported_batch_types():
    with pytest.raises(BatchError, match="is not supported"):
        batch_system("amazon")
    with pytest.raises(BatchError, match="is unknown.*slurm"):
        batch_system("nosuch")


def test_a_missing_batch_command_is_named(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BatchError, match="needs sbatch, squeue, scancel on PATH"):
        batch_system("slurm").check()


def test_python_package_is_unpacked_before_the_worker_starts(tmp_path):
    _, _, spec = submit("slurm", tmp_path, "1\n", python_package="/data/env.tar.gz",
                        env={"A": "x y"})
    script = open(spec.script_path).read()
    assert "export A='x y'" in script
    assert 'tar xf /data/env.tar.gz -C "$env_dir"' in script
    assert script.index("tar xf") < script.index("/bin/vine_worker h 9123")
