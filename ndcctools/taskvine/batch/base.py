"""What every batch system offers the factory: submit a worker job, see which jobs are still
alive, remove jobs. One module per system implements it; nothing outside ``batch/`` knows a
system's commands.

A ``JobSpec`` says what to run (the worker's argv), with what resources and environment; the
system turns it into its own job (a script plus a submit command line) and returns the job's
id. ``poll(ids)`` answers which of those ids are still queued or running; an id it no longer
lists has ended (done, failed or lost: the factory treats them alike). Commands run through
an injectable ``runner`` so that tests can check the exact command lines of systems that
cannot be installed here.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

QUEUED, RUNNING = "queued", "running"


class BatchError(Exception):
    """A batch system is missing, refused a command, or answered something unexpected."""


@dataclass(frozen=True)
class JobSpec:
    """One worker job. ``memory`` and ``disk`` are in MB; ``None`` asks the system for its
    default. ``workdir`` holds the job's script and its output log."""

    name: str
    command: Sequence[str]
    workdir: str
    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    gpus: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    batch_options: str = ""
    python_package: str | None = None

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, f"{self.name}.log")

    @property
    def script_path(self) -> str:
        return os.path.join(self.workdir, f"{self.name}.sh")


Runner = Callable[[Sequence[str], "str | None"], str]


def run_command(argv: Sequence[str], stdin: str | None = None, timeout: float = 120) -> str:
    """Run a batch command; its standard output. A failure raises ``BatchError`` naming the
    command and what it printed."""
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BatchError(f"{shlex.join(argv)}: {e}") from e
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()[-2000:]
        raise BatchError(f"{shlex.join(argv)} exited with status {done.returncode}: {said}")
    return done.stdout


class BatchSystem:
    """The interface; subclasses set ``commands`` (programs that must be on ``PATH``) and
    implement ``submit_argv``/``parse_submit`` and ``poll``/``remove``."""

    name = "batch"
    commands: tuple[str, ...] = ()
    status_interval = 5.0  # seconds between polls of the queue (batch commands are not free)

    def __init__(self, runner: Runner | None = None) -> None:
        self.run = runner or run_command

    def check(self) -> None:
        """Raise ``BatchError`` if a command this system needs is not on ``PATH``."""
        missing = [c for c in self.commands if shutil.which(c) is None]
        if missing:
            raise BatchError(f"batch type {self.name!r} needs {', '.join(missing)} on PATH, "
                             "and it is not there")

    def submit(self, job: JobSpec) -> str:
        """Submit ``job``; its id."""
        write_script(job)
        return self.parse_submit(self.run(self.submit_argv(job), None))

    def submit_argv(self, job: JobSpec) -> list[str]:
        raise NotImplementedError

    def parse_submit(self, output: str) -> str:
        raise NotImplementedError

    def poll(self, ids: Sequence[str]) -> dict[str, str]:
        """The ids among ``ids`` still alive, each with ``QUEUED`` or ``RUNNING``."""
        raise NotImplementedError

    def remove(self, ids: Sequence[str]) -> None:
        """Remove (cancel, kill) these jobs; ids already gone are not an error."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the system object holds (nothing, for most)."""


def write_script(job: JobSpec) -> str:
    """The shell script every batch job runs: set the environment, unpack the Python
    package if one is shipped, then become the worker."""
    lines = ["#!/bin/sh", f"cd {shlex.quote(job.workdir)} || exit 1"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in job.env.items()]
    if job.python_package:
        pkg = shlex.quote(os.path.abspath(job.python_package))
        lines += [
            'env_dir="${TMPDIR:-/tmp}/vine-env-$$"',
            'mkdir -p "$env_dir" || exit 1',
            'trap \'rm -rf "$env_dir"\' EXIT',
            f'tar xf {pkg} -C "$env_dir" || exit 1',
            '[ -f "$env_dir/bin/activate" ] && . "$env_dir/bin/activate"',
            'PATH="$env_dir/bin:$PATH"; export PATH',
            shlex.join(job.command),
        ]
    else:
        lines.append("exec " + shlex.join(job.command))
    os.makedirs(job.workdir, exist_ok=True)
    with open(job.script_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(job.script_path, 0o755)
    return job.script_path


def user_name() -> str:
    """Whose jobs to list."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return str(os.getuid())


def split_options(text: str) -> list[str]:
    """The user's ``--batch-options`` as separate words (shell quoting honoured)."""
    return shlex.split(text) if text else []
