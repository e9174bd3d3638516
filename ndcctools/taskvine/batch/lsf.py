"""LSF (``-T lsf``): ``bsub`` to submit, ``bjobs`` to see, ``bkill`` to remove. Memory is
asked for in MB through ``rusage`` (sites whose ``LSF_UNIT_FOR_LIMITS`` is not MB say so with
``-B``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import QUEUED, RUNNING, BatchError, BatchSystem, JobSpec, split_options, user_name

SUBMITTED = re.compile(r"Job <(\d+)> is submitted")
ENDED = {"DONE", "EXIT", "ZOMBI", "UNKWN"}


class LsfBatch(BatchSystem):
    name = "lsf"
    commands = ("bsub", "bjobs", "bkill")

    def submit_argv(self, job: JobSpec) -> list[str]:
        argv = ["bsub", "-J", job.name, "-cwd", job.workdir, "-o", job.log_path,
                "-e", job.log_path, "-n", str(job.cores or 1)]
        if job.memory:
            argv += ["-R", f"rusage[mem={job.memory}]"]
        if job.gpus:
            argv += ["-gpu", f"num={job.gpus}"]
        return argv + split_options(job.batch_options) + [job.script_path]

    def parse_submit(self, output: str) -> str:
        found = SUBMITTED.search(output)
        if not found:
            raise BatchError(f"bsub printed {output.strip()!r}, not a job id")
        return found.group(1)

    def poll(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        out = self.run(["bjobs", "-noheader", "-o", "jobid stat", "-u", user_name()], None)
        alive = {}
        for line in out.splitlines():
            words = line.split()
            if len(words) == 2 and words[0] in ids and words[1] not in ENDED:
                alive[words[0]] = RUNNING if words[1] == "RUN" else QUEUED
        return alive

    def remove(self, ids: Sequence[str]) -> None:
        if ids:
            self.run(["bkill", *ids], None)
