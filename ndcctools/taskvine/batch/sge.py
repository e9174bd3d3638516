"""Grid Engine (``-T sge``, ``-T uge``): ``qsub`` to submit, ``qstat`` to see, ``qdel`` to
remove. Cores are asked for with the parallel environment ``smp`` (``-pe smp N``), the
convention of upstream's factory; sites that name it otherwise pass ``-B``."""

from __future__ import annotations

from collections.abc import Sequence

from .base import QUEUED, RUNNING, BatchError, BatchSystem, JobSpec, split_options, user_name


class SgeBatch(BatchSystem):
    name = "sge"
    commands = ("qsub", "qstat", "qdel")

    def submit_argv(self, job: JobSpec) -> list[str]:
        argv = ["qsub", "-terse", "-N", job.name, "-wd", job.workdir, "-j", "y",
                "-o", job.log_path, "-V"]
        if job.cores:
            argv += ["-pe", "smp", str(job.cores)]
        return argv + split_options(job.batch_options) + [job.script_path]

    def parse_submit(self, output: str) -> str:
        job_id = output.strip().split(".")[0]
        if not job_id.isdigit():
            raise BatchError(f"qsub printed {output.strip()!r}, not a job id")
        return job_id

    def poll(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        out = self.run(["qstat", "-u", user_name()], None)
        alive = {}
        for line in out.splitlines():
            words = line.split()  # job-ID prior name user state ...
            if len(words) >= 5 and words[0] in ids:
                alive[words[0]] = RUNNING if "r" in words[4] else QUEUED
        return alive

    def remove(self, ids: Sequence[str]) -> None:
        if ids:
            self.run(["qdel", *ids], None)
