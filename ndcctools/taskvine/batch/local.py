"""Workers as child processes of the factory on this machine (``-T local``).

Each job is the common job script run in its own session, so that removing it kills the
worker and everything it started. A job's id is its process id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence

from .base import RUNNING, BatchSystem, JobSpec, write_script

TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when removing


class LocalBatch(BatchSystem):
    name = "local"
    status_interval = 0.0  # asking a child is free

    def __init__(self, runner=None) -> None:
        super().__init__(runner)
        self.procs: dict[str, subprocess.Popen] = {}

    def submit(self, job: JobSpec) -> str:
        script = write_script(job)
        with open(job.log_path, "ab") as log:
            proc = subprocess.Popen([script], cwd=job.workdir, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[str(proc.pid)] = proc
        return str(proc.pid)

    def poll(self, ids: Sequence[str]) -> dict[str, str]:
        alive = {}
        for job_id in ids:
            proc = self.procs.get(job_id)
            if proc is not None and proc.poll() is None:
                alive[job_id] = RUNNING
            else:
                self.procs.pop(job_id, None)
        return alive

    def exit_status(self, job_id: str) -> int | None:
        proc = self.procs.get(job_id)
        return None if proc is None else proc.returncode

    def remove(self, ids: Sequence[str]) -> None:
        procs = [self.procs.pop(i) for i in ids if i in self.procs]
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            _signal_group(proc, signal.SIGKILL)  # whatever the worker left in its group

    def close(self) -> None:
        self.remove(list(self.procs))


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
