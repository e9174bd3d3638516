"""Starting and stopping task processes.

A task runs as ``/bin/sh -c <command>`` in its sandbox, in a new session (so its whole
process group can be killed), stdin from ``/dev/null``, stdout and stderr into the
sandbox's ``.taskvine.stdout``. A command that is only a program and plain words (no
quoting, expansion, redirection or other shell syntax, and not a shell builtin) is started
directly, as ``sh`` would start it: the same words, found on the task's ``PATH``, with
``PWD`` set to the sandbox as ``sh`` sets it. That saves the shell's own start, a tenth of a
millisecond of CPU on every such task; whatever cannot start that way (not found, a script
without ``#!``) goes through ``sh``, which says why. Its process group is registered with
the worker's reaper (``reaper.py``), which kills it if the worker dies; whoever collects it
with ``waitpid`` calls ``reaper.forget`` first. ``os.posix_spawn`` (vfork-based in glibc)
is the cheapest way to start a process from Python; since it cannot change directory, the
worker, which is single-threaded, changes its own directory around the call.
"""

from __future__ import annotations

import os
import re
import shutil
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


PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
#: what sh runs itself rather than as a program (dash's builtins and reserved words); true
#: and false are left out: the programs of those names do exactly the same
SHELL_BUILTINS = frozenset((
    ". : [ alias bg break cd chdir command continue echo eval exec exit export fc fg "
    "getopts hash jobs kill local printf pwd read readonly return set shift test times trap "
    "type ulimit umask unalias unset wait ! { } case do done elif else esac fi for if in "
    "then until while").split())
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # sh's, unset
_programs: dict[tuple[str, str], str] = {}  # (name, PATH) -> program, for absolute PATHs


def direct_argv(command: str) -> list[str] | None:
    """The words of ``command`` if ``sh -c`` would only run them as a program; else None."""
    words = command.split(" ")
    if not all(PLAIN_WORD.fullmatch(word) for word in words):
        return None  # shell syntax, or spaces that are not single separators
    first = words[0]
    if "=" in first or first in SHELL_BUILTINS:
        return None
    return words


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
        argv = direct_argv(command)
        pid = _spawn_program(argv, env, actions) if argv is not None else None
        if pid is None:
            pid = os.posix_spawn("/bin/sh", ["sh", "-c", command], env, file_actions=actions,
                                 setsid=True, setsigdef=PYTHON_IGNORES)
    finally:
        os.chdir(home)
    reaper.watch(pid)
    return pid


def _spawn_program(argv: list[str], env: dict[str, str], actions: list) -> int | None:
    """Start ``argv`` without a shell (the current directory is the sandbox); None if it
    cannot start that way."""
    name = argv[0]
    path = env.get("PATH", DEFAULT_PATH)
    key = (name, path)
    program = name if "/" in name else _programs.get(key)
    found = program is None
    if found:
        program = shutil.which(name, path=path)
        if program is None:
            return None
    env["PWD"] = os.getcwd()  # as sh exports it
    try:
        pid = os.posix_spawn(program, argv, env, file_actions=actions, setsid=True,
                             setsigdef=PYTHON_IGNORES)
    except OSError:  # gone, not executable, a script without #!: sh knows what to do
        _programs.pop(key, None)
        return None
    if found and all(os.path.isabs(d) for d in path.split(os.pathsep)):
        _programs[key] = program  # found the same way next time, wherever the task runs
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
