"""Running PythonTask commands in a warm Python: fork instead of a new interpreter.

A PythonTask is the command ``python3 w_<id> f_<id> a_<id> o_<id>``. Starting ``python3``
and importing cloudpickle costs some 30 ms of CPU per task, ten times the task itself. So
the worker keeps one *fork server* per Python interpreter: a process started once from the
same ``python3`` the command would run, with cloudpickle already imported. For each task
the worker sends it a request; the server forks a child, which becomes exactly what
``python3 <script> <args>`` would have been (new session, sandbox as working directory,
stdout and stderr into the task's stdout file, the task's environment, ``sys.argv``) and
runs the script as ``__main__``. The script is compiled once in the server (every task's
wrapper is a link to the same cached file), so a child only forks, runs and exits. The
server reports the child's pid, then its wait status::

    worker ──{"id", "argv", "cwd", "env", "stdout"}──► server ──fork──► child runs the script
    worker ◄──{"id", "pid"}── server
    worker ◄──{"id", "status"}── server      (raw waitpid status, when the child ends)

Messages are JSON over a ``SOCK_SEQPACKET`` socket pair (one message per packet). A server
that cannot start (no cloudpickle for that interpreter) closes the socket; the worker then
starts those tasks the ordinary way. When the socket closes (the worker closed it, or died),
the server kills the process group of every child still running, collects them and exits.
The worker registers the server's group and each child's with its reaper (``reaper.py``),
so they die with the worker even if the server is killed too. This file is also the
server's program: it imports only the standard library at the top (and the worker's reaper
only when imported as part of the package), so it runs under any Python 3.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import sys
import types
from typing import Any

if __package__:  # in the worker; the server program runs this file as a script
    from . import reaper

PYTHON_TASK = re.compile(
    r"(?:\$\{PONCHO_PREFIX:\+\$\{PONCHO_PREFIX\}/bin/\})?python3((?: [\w.-]+){2,5})")


def python_task_argv(command: str) -> list[str] | None:
    """``[script, args...]`` if ``command`` is a PythonTask command, else None."""
    match = PYTHON_TASK.fullmatch(command)
    return match.group(1).split() if match else None


class ForkServer:
    """The worker's end of one fork server."""

    def __init__(self, python: str, stderr: int | None = None):
        import subprocess  # the worker's side only: the server does not need it

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [python, os.path.abspath(__file__), str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if stderr is None else stderr,
            start_new_session=True, close_fds=True)
        theirs.close()
        reaper.watch(self.proc.pid)
        ours.setblocking(False)
        self.sock = ours
        self.alive = True
        self.children: dict[int, int] = {}  # request id -> pid, from its pid to its status

    def fileno(self) -> int:
        return self.sock.fileno()

    def start(self, request_id: int, argv: list[str], cwd: str, env: dict[str, str],
              stdout: str) -> bool:
        """Ask for a child; False if the server is gone (start the task some other way)."""
        msg = json.dumps({"id": request_id, "argv": argv, "cwd": cwd, "env": env,
                          "stdout": stdout}).encode()
        try:
            self.sock.send(msg)
            return True
        except OSError:
            self.alive = False
            return False

    def events(self) -> list[dict]:
        """Reports that arrived; the server is no longer ``alive`` once its socket closes.
        Each child's group is registered with the reaper from its pid to its status."""
        out = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:
                data = b""
            if not data:
                self.alive = False
                return out
            event = json.loads(data)
            if "pid" in event:
                self.children[event["id"]] = event["pid"]
                reaper.watch(event["pid"])
            elif "status" in event:
                reaper.forget(self.children.pop(event["id"], 0))
            out.append(event)

    def close(self, grace: float = 2.0) -> None:
        """Close the socket: the server kills its children and exits (within ``grace``
        seconds, else it is killed, and its children with it)."""
        self.alive = False
        if self.sock.fileno() >= 0:
            self.events()  # children that ended: their groups are no longer ours
            self.sock.close()
        import subprocess

        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            for pgid in (self.proc.pid, *self.children.values()):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self.proc.wait()
        for pid in self.children.values():
            reaper.forget(pid)
        self.children.clear()
        reaper.forget(self.proc.pid)


# ---------------------------------------------------------------------- the server program
def serve(fd: int) -> None:
    del sys.path[0]  # this file's directory: a task's imports must not find the worker's
    import gc
    import tempfile  # noqa: F401 - imported once here, inherited by every child
    import traceback  # noqa: F401

    import cloudpickle  # noqa: F401
    gc.freeze()  # children's collections skip (and do not copy) what the server holds
    sock = socket.socket(fileno=fd)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, None)
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (request id, pid)
    compiled: dict[tuple, Any] = {}  # (device, inode, mtime, size) of a script -> its code
    try:
        _serve_requests(sock, sel, children, compiled)
    except OSError:  # the worker is gone (a send failed)
        pass
    finally:
        _kill_children([pid for _, pid in children.values()])


def _serve_requests(sock: socket.socket, sel: selectors.BaseSelector,
                    children: dict[int, tuple[int, int]], compiled: dict[tuple, Any]) -> None:
    """Serve the worker until it closes the socket."""
    while True:
        for key, _ in sel.select():
            if key.data is None:
                data = sock.recv(1 << 20)
                if not data:
                    return
                request = json.loads(data)
                code = _compiled(os.path.join(request["cwd"], request["argv"][0]), compiled)
                pid = os.fork()
                if pid == 0:
                    _child(request, code, [sock.fileno(), *children])
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (request["id"], pid)
                sel.register(pidfd, selectors.EVENT_READ, pidfd)
                sock.send(json.dumps({"id": request["id"], "pid": pid}).encode())
            else:
                request_id, pid = children.pop(key.data)
                sel.unregister(key.data)
                os.close(key.data)
                _, status = os.waitpid(pid, 0)
                sock.send(json.dumps({"id": request_id, "status": status}).encode())


def _kill_children(pids: list[int]) -> None:
    """Kill the process group of each child (the child itself if it has no group of its own
    yet), then collect them."""
    for pid in pids:
        for kill, target in ((os.killpg, pid), (os.kill, pid)):
            try:
                kill(target, signal.SIGKILL)
            except OSError:
                pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass


def _compiled(path: str, cache: dict[tuple, Any]) -> Any:
    """The code of the script at ``path``, or None if it cannot be read or compiled here
    (the child then reports why)."""
    try:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        code = cache.get(key)
        if code is None:
            if len(cache) > 64:
                cache.clear()
            with open(path, "rb") as f:
                code = cache[key] = compile(f.read(), path, "exec")
        return code
    except (OSError, SyntaxError, ValueError):
        return None


def _child(request: dict, code: Any, inherited: list[int]) -> None:
    """Become ``python3 <argv>`` in the task's sandbox; never returns."""
    status = 1
    try:
        for fd in inherited:
            os.close(fd)
        os.setsid()
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(request["cwd"])
        _set_environment(request["env"])
        import tempfile
        tempfile.tempdir = None  # TMPDIR is the task's now
        sys.argv = list(request["argv"])
        sys.path.insert(0, request["cwd"])
        status = _run(sys.argv[0], code)
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(status)


def _set_environment(env: dict[str, str]) -> None:
    """Make ``os.environ`` equal ``env``, touching only what differs (each change is a
    ``putenv``)."""
    environ = os.environ
    for name in [n for n in environ if n not in env]:
        del environ[name]
    for name, value in env.items():
        if environ.get(name) != value:
            environ[name] = value


def _run(script: str, code: Any) -> int:
    """Run ``script`` as ``__main__``, as ``python3 script`` would; its exit status."""
    main = types.ModuleType("__main__")
    main.__file__ = os.path.abspath(script)
    sys.modules["__main__"] = main
    try:
        if code is None:
            with open(script, "rb") as f:
                code = compile(f.read(), main.__file__, "exec")
        exec(code, main.__dict__)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    serve(int(sys.argv[1]))
