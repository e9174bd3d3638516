"""PBS Pro / OpenPBS (``-T pbs``) and Torque (``-T torque``): ``qsub`` to submit, ``qstat`` to
see, ``qdel`` to remove. They differ in how resources are asked for: PBS Pro takes a
``select`` chunk, Torque ``nodes=1:ppn=N``."""

from __future__ import annotations

from collections.abc import Sequence

from .base import QUEUED, RUNNING, BatchError, BatchSystem, JobSpec, split_options

ENDED = {"C", "F", "X"}  # completed, finished, expired subjob
RUNNING_STATES = {"R", "E", "B"}


class PbsBatch(BatchSystem):
    name = "pbs"
    commands = ("qsub", "qstat", "qdel")

    def resource_request(self, job: JobSpec) -> str:
        chunk = ["select=1", f"ncpus={job.cores or 1}"]
        if job.memory:
            chunk.append(f"mem={job.memory}mb")
        if job.gpus:
            chunk.append(f"ngpus={job.gpus}")
        return ":".join(chunk)

    def submit_argv(self, job: JobSpec) -> list[str]:
        return (["qsub", "-N", job.name, "-o", job.log_path, "-j", "oe", "-V",
                 "-l", self.resource_request(job)]
                + split_options(job.batch_options) + [job.script_path])

    def parse_submit(self, output: str) -> str:
        job_id = output.strip()
        if not job_id or not job_id.split(".")[0].isdigit():
            raise BatchError(f"qsub printed {output.strip()!r}, not a job id")
        return job_id

    def poll(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        short = {i.split(".")[0]: i for i in ids}
        alive = {}
        for line in self.run(["qstat"], None).splitlines():
            words = line.split()  # Job id, Name, User, Time Use, S, Queue
            if len(words) >= 6 and words[0].split(".")[0] in short and words[4] not in ENDED:
                job_id = short[words[0].split(".")[0]]
                alive[job_id] = RUNNING if words[4] in RUNNING_STATES else QUEUED
        return alive

    def remove(self, ids: Sequence[str]) -> None:
        if ids:
            self.run(["qdel", *ids], None)


class TorqueBatch(PbsBatch):
    name = "torque"

    def resource_request(self, job: JobSpec) -> str:
        request = f"nodes=1:ppn={job.cores or 1}"
        if job.gpus:
            request += f":gpus={job.gpus}"
        if job.memory:
            request += f",mem={job.memory}mb"
        return request

    def submit_argv(self, job: JobSpec) -> list[str]:
        argv = super().submit_argv(job)
        return argv[:1] + ["-d", job.workdir] + argv[1:]
