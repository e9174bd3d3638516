"""Starting and stopping task processes.

A task runs as ``/bin/sh -c <command>`` in its sandbox, in a new session (so its whole
process group can be killed), stdin from ``/dev/null``, stdout and stderr into the
sandbox's ``.taskvine.stdout``. Its process group is registered with the worker's reaper
(``reaper.py``), which kills it if the worker dies; whoever collects it with ``waitpid``
calls ``reaper.forget`` first. ``os.posix_spawn`` (vfork-based in glibc) is the cheapest way
to start a process from Python; since it cannot change directory, the worker, which is
single-threaded, changes its own directory around the call.
"""

from __future__ import annotations

import os
import signal

from . import reaper

_BASE_ENV = {k: v for k, v in os.environ.items() if k != "DISPLAY"}

# Python ignores these; a task must get them as any program does (``yes | head`` ends quietly)
PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_NUM_THREADS",
               "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def task_environment(task_env: tuple[str, ...], cores: int, memory: int, disk: int,
                     gpus: int, tmpdir: str, core_ids: str = "", gpu_ids: str = "",
                     extra: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment (less DISPLAY), then the task's, then the allocation. A
    task's variable that no process can have (no name, or a NUL byte) is left out."""
    env = dict(_BASE_ENV)
    if extra:
        env.update(extra)
    for var in task_env:
        name, sep, value = var.partition("=")
        if sep and name and "\0" not in var:
            env[name] = value
    if cores > 0:
        env["CORES"] = str(cores)
        env["CORES_LIST"] = core_ids or ",".join(str(i) for i in range(cores))
        for name in THREAD_VARS:
            env[name] = str(cores)
    if memory > 0:
        env["MEMORY"] = str(memory)
    if disk > 0:
        env["DISK"] = str(disk)
    if gpus > 0:
        ids = gpu_ids or ",".join(str(i) for i in range(gpus))
        env["GPUS"] = str(gpus)
        env["GPUS_LIST"] = env["CUDA_VISIBLE_DEVICES"] = ids
    env["TMPDIR"] = env["TEMP"] = env["TMP"] = tmpdir
    return env


def spawn(command: str, cwd: str, stdout: str, env: dict[str, str], home: str) -> int:
    """Start the command; returns its pid (= its process group id, registered with the
    reaper)."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    os.chdir(cwd)
    try:
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", command], env, file_actions=actions,
                             setsid=True, setsigdef=PYTHON_IGNORES)
    finally:
        os.chdir(home)
    reaper.watch(pid)
    return pid


def collect(pid: int) -> tuple[int, os.struct_rusage]:
    """Wait for child ``pid`` (which ended, or was killed); its wait status and resource
    usage. The reaper forgets its group first, so that it never kills a group id that may be
    reused."""
    reaper.forget(pid)
    _, status, usage = os.wait4(pid, 0)
    return status, usage


def kill_group(pid: int) -> None:
    if pid <= 0:  # not started yet: never signal our own group
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def exit_status(status: int) -> tuple[bool, int]:
    """(killed by a signal, exit code or signal number) from a ``waitpid`` status."""
    if os.WIFSIGNALED(status):
        return True, os.WTERMSIG(status)
    return False, os.waitstatus_to_exitcode(status)
