"""HTCondor (``-T condor``): a submit description on ``condor_submit``'s standard input,
``condor_q`` to see, ``condor_rm`` to remove. ``condor_requirements`` becomes the job's
``requirements`` expression."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import QUEUED, RUNNING, BatchError, BatchSystem, JobSpec, write_script

SUBMITTED = re.compile(r"submitted to cluster (\d+)")
CONDOR_RUNNING = "2"  # JobStatus: 1 idle, 2 running, 3 removed, 4 completed, 5 held


class CondorBatch(BatchSystem):
    name = "condor"
    commands = ("condor_submit", "condor_q", "condor_rm")
    requirements = ""

    def submit(self, job: JobSpec) -> str:
        write_script(job)
        return self.parse_submit(self.run(["condor_submit"], self.description(job)))

    def description(self, job: JobSpec) -> str:
        lines = ["universe = vanilla", f"executable = {job.script_path}",
                 f"initialdir = {job.workdir}", f"output = {job.log_path}",
                 f"error = {job.log_path}", "getenv = true",
                 "should_transfer_files = if_needed", "when_to_transfer_output = on_exit",
                 f'+JobBatchName = "{job.name}"']
        if job.cores:
            lines.append(f"request_cpus = {job.cores}")
        if job.memory:
            lines.append(f"request_memory = {job.memory}")
        if job.disk:
            lines.append(f"request_disk = {job.disk * 1024}")  # KB
        if job.gpus:
            lines.append(f"request_gpus = {job.gpus}")
        if self.requirements:
            lines.append(f"requirements = {self.requirements}")
        lines += [line.strip() for line in job.batch_options.split(";") if line.strip()]
        return "\n".join(lines + ["queue 1", ""])

    def parse_submit(self, output: str) -> str:
        found = SUBMITTED.search(output)
        if not found:
            raise BatchError(f"condor_submit printed {output.strip()!r}, not a cluster id")
        return found.group(1)

    def poll(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        out = self.run(["condor_q", "-af", "ClusterId", "JobStatus", *ids], None)
        alive = {}
        for line in out.splitlines():
            words = line.split()
            if len(words) == 2 and words[0] in ids and words[1] in "125":
                alive[words[0]] = RUNNING if words[1] == CONDOR_RUNNING else QUEUED
        return alive

    def remove(self, ids: Sequence[str]) -> None:
        if ids:
            self.run(["condor_rm", *ids], None)
