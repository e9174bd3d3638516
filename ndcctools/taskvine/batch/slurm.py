"""Slurm (``-T slurm``): ``sbatch`` to submit, ``squeue`` to see, ``scancel`` to remove."""

from __future__ import annotations

from collections.abc import Sequence

from .base import QUEUED, RUNNING, BatchError, BatchSystem, JobSpec, split_options, user_name

RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "STOPPED", "SUSPENDED"}


class SlurmBatch(BatchSystem):
    name = "slurm"
    commands = ("sbatch", "squeue", "scancel")

    def submit_argv(self, job: JobSpec) -> list[str]:
        argv = ["sbatch", "--parsable", "-J", job.name, "-D", job.workdir, "-o", job.log_path,
                "-e", job.log_path, "--export=ALL", "-N", "1", "-n", "1"]
        if job.cores:
            argv += ["-c", str(job.cores)]
        if job.memory:
            argv.append(f"--mem={job.memory}M")
        if job.disk:
            argv.append(f"--tmp={job.disk}M")
        if job.gpus:
            argv.append(f"--gpus={job.gpus}")
        return argv + split_options(job.batch_options) + [job.script_path]

    def parse_submit(self, output: str) -> str:
        job_id = output.strip().split(";")[0]  # --parsable: "id" or "id;cluster"
        if not job_id.isdigit():
            raise BatchError(f"sbatch printed {output.strip()!r}, not a job id")
        return job_id

    def poll(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        # every job of ours, filtered here: "-j" with an id that has ended is an error
        out = self.run(["squeue", "-h", "-o", "%i %T", "-u", user_name()], None)
        alive = {}
        for line in out.splitlines():
            words = line.split()
            if len(words) == 2 and words[0] in ids:
                alive[words[0]] = RUNNING if words[1] in RUNNING_STATES else QUEUED
        return alive

    def remove(self, ids: Sequence[str]) -> None:
        if ids:
            self.run(["scancel", *ids], None)
