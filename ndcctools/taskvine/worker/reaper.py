"""The reaper: task processes die with their worker, however the worker dies.

Every task, library and fork server runs in a session of its own (so that its whole process
group can be killed), which also means it outlives a worker killed with SIGKILL.
``prctl(PR_SET_PDEATHSIG)`` cannot help: it cannot be set in a ``posix_spawn`` child, and
grandchildren do not inherit it. So the worker starts one helper process at start-up: this
file run as a script, in a session of its own (a ``killpg`` of the worker's group leaves it
alone), reading from a pipe whose write end only the worker holds (the descriptor is not
inheritable, so no task keeps it open)::

    worker ──pgid──► reaper          a process group started (task, library, fork server,
    worker ──-pgid─► reaper          forked PythonTask) / that group's leader is reaped
    worker dies ──EOF──► reaper      SIGKILL every group still registered, then exit

Records are 4-byte native ints; a pipe takes a write of up to ``PIPE_BUF`` bytes whole or
not at all, so the worker's cost is one ``os.write`` of 4 bytes per start and per reap, and
no process of its own per task. The reaper reads them at most five times a second (a pipe
holds 16,384 records), so it does not wake up, and take a core's time, for every task. The
write end is non-blocking: if the reaper falls behind, records wait in the worker's memory
and go with the next write, so a stalled reaper can never stop the worker. A group is
forgotten just before its leader is collected (``waitpid``), so the reaper never kills a
group id that may already have been reused.

One window is left: a worker killed after ``posix_spawn`` created a task but before it
wrote the pid (``posix_spawn`` waits for the child's ``exec``, and a busy worker spends
much of its time there). So at end of file the reaper also kills every process working in
one of the worker's sandboxes (``<workspace>/task.N``, ``libr.N``, ``func.N``, ``mini.N``
or under ``trash/``), with its group if it leads one: a task process starts there. That
costs one scan of ``/proc``, once, when the worker is gone.

This file is also the reaper's program: it imports only the standard library at the top, and
runs as ``python -I -S reaper.py FD WORKSPACE`` (quick to start, and the worker's directory, whose
module names could shadow the standard library's, is not on its path).
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import sys
import time

RECORD = struct.Struct("=i")
READ_PAUSE = 0.2  # seconds the reaper sleeps after each read (records wait in the pipe)
LOCK_NAME = ".reaper-lock"  # in the workspace: shared-locked by a reaper while it lives
SANDBOX = re.compile(r"(?:task|func|libr|mini)\.\d+|trash")  # a sandbox's top directory


class Reaper:
    """The worker's end: started once, told of every process group as it comes and goes."""

    def __init__(self, workspace: str) -> None:
        import subprocess  # the worker's side only

        read_end, write_end = os.pipe()  # both non-inheritable
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), str(read_end),
                 os.path.realpath(workspace)],
                pass_fds=[read_end], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True, close_fds=True)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        os.set_blocking(write_end, False)
        self.fd = write_end
        self.pending = bytearray()  # records the pipe had no room for yet

    def watch(self, pgid: int) -> None:
        self._send(RECORD.pack(pgid))

    def forget(self, pgid: int) -> None:
        self._send(RECORD.pack(-pgid))

    def _send(self, record: bytes) -> None:
        if self.fd < 0:
            return
        if self.pending:
            self.pending += record
            self._flush()
            return
        try:
            os.write(self.fd, record)
        except BlockingIOError:
            self.pending += record
        except OSError as e:
            self._lost(e)

    def _flush(self) -> None:
        try:
            n = os.write(self.fd, self.pending)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost(e)
            return
        del self.pending[:n]

    def _lost(self, error: OSError) -> None:
        """The reaper is gone: carry on without it (tasks may then outlive a killed worker)."""
        if self.fd >= 0:
            sys.stderr.write(f"vine_worker: the reaper process is gone ({error}); tasks "
                             "will not be killed if this worker dies\n")
            os.close(self.fd)
            self.fd = -1
        self.pending.clear()

    def close(self) -> None:
        """Close the pipe (the reaper kills what is still registered, then exits)."""
        if self.fd >= 0:
            os.set_blocking(self.fd, True)
            if self.pending:
                try:
                    os.write(self.fd, self.pending)
                except OSError:
                    pass
            os.close(self.fd)
            self.fd = -1
        import subprocess

        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


_current: Reaper | None = None


def start(workspace: str) -> Reaper | None:
    """Start this worker's reaper (once); None if it cannot be started."""
    global _current
    if _current is None:
        try:
            _current = Reaper(workspace)
        except OSError as e:
            sys.stderr.write(f"vine_worker: cannot start the reaper process: {e}\n")
    return _current


def wait_for_previous(workspace: str, patience: float = 30.0) -> bool:
    """Wait until no reaper of an earlier worker on ``workspace`` is still at work (a worker
    killed just before: its reaper kills whatever runs in the sandboxes, which would soon
    be ours). False if one still was after ``patience`` seconds."""
    try:
        fd = os.open(os.path.join(workspace, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return True
    deadline = time.monotonic() + patience
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
    finally:
        os.close(fd)


def stop() -> None:
    global _current
    if _current is not None:
        _current.close()
        _current = None


def watch(pgid: int) -> None:
    """Process group ``pgid`` was started: kill it if the worker dies."""
    if _current is not None and pgid > 0:
        _current.watch(pgid)


def forget(pgid: int) -> None:
    """The leader of group ``pgid`` is about to be collected: no longer the reaper's."""
    if _current is not None and pgid > 0:
        _current.forget(pgid)


# ---------------------------------------------------------------------- the reaper program
def serve(fd: int, workspace: str) -> None:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    try:  # held until this process ends: a worker started on this workspace waits for it
        fcntl.flock(os.open(os.path.join(workspace, LOCK_NAME), os.O_RDWR | os.O_CREAT,
                            0o600), fcntl.LOCK_SH)
    except OSError:
        pass
    own = os.getpgrp()
    groups: set[int] = set()
    buffer = bytearray()
    while True:
        data = os.read(fd, 1 << 20)
        if not data:
            break
        time.sleep(READ_PAUSE)  # let records gather: no wake-up (and CPU) per task started
        buffer += data
        whole = len(buffer) - len(buffer) % RECORD.size
        for (pgid,) in RECORD.iter_unpack(buffer[:whole]):
            if pgid > 0:
                groups.add(pgid)
            else:
                groups.discard(-pgid)
        del buffer[:whole]
    groups.discard(own)
    strays = [pid for pid in _in_sandboxes(workspace)
              if pid != os.getpid() and _group(pid) not in groups | {own}]
    if groups or strays:
        try:
            sys.stderr.write(f"vine_worker reaper: the worker is gone; killing {len(groups)} "
                             f"process groups and {len(strays)} processes it left\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    for pgid in groups:
        if pgid > 1:
            try:  # a forked child not yet in its own group dies with its fork server's
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
    for pid in strays:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _group(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return 0


def _in_sandboxes(workspace: str) -> list[int]:
    """Processes working in a sandbox of ``workspace`` (among those whose working directory
    we may read: our user's)."""
    prefix = workspace.rstrip("/") + "/"
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc here: registered groups only
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        cwd = cwd.removesuffix(" (deleted)")
        if cwd.startswith(prefix) and SANDBOX.fullmatch(cwd[len(prefix):].partition("/")[0]):
            found.append(int(entry))
    return found


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
