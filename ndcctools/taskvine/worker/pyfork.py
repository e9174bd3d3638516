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
           (+ "preload": [modules], "fresh": true)
    worker ◄──{"id", "pid"}── server
    worker ◄──{"id", "status", "usage"}── server   (raw wait status and resource usage
                                                  of the child, when it ends)

*Preloading.* A child would import, when it loads the task's pickles (``f_`` and ``a_``),
the modules they name: dask and numpy cost 0.2 s per task, far more than the fork. So a
server that preloads imports, once, the modules not imported yet, so that later children
inherit them. The worker's end reads the names (``pickled_modules``: the module of each
GLOBAL and STACK_GLOBAL opcode, and of cloudpickle's ``subimport``, in pickles inside
bytes too, as DaskVine's nodes are; nothing is unpickled) and adds to a request those that
no request named before, so that the server does no more between forks than it did
without preloading. The server never imports a module the sandbox shadows or whose
top-level package this interpreter does not have (a task whose sandbox shadows a package
named before runs in a new interpreter, ``fresh``), nor one that starts a thread (forking
a process that has threads may leave the child deadlocked): a *probe*, a child forked for
the purpose, imports the modules first and counts its threads, and the server imports them
only if the probe ended with one thread (if not, it probes them one by one). The probe
runs beside the tasks; until it is done, children import what they need themselves. A
module that seeds a generator when it is imported would give every child the same
numbers: each child reseeds those it inherits (``_reseed``: numpy's global generator;
Python's ``random`` does it by itself). An import may also read environment variables
(OpenBLAS, under numpy, sizes its thread pool from ``OMP_NUM_THREADS``, which the worker
sets to the task's cores), so a preloading server runs in the environment of its tasks:
the worker keeps one per interpreter and task environment (``server_key``; the sandbox's
``TMPDIR`` and the like aside), at most ``MAX_PRELOADING`` of them, and tasks of further
environments share one server that preloads nothing.

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

import gc
import importlib
import json
import os
import re
import selectors
import signal
import socket
import sys
import types
from collections.abc import Callable
from typing import Any

if __package__:  # in the worker; the server program runs this file as a script
    from . import reaper

PYTHON_TASK = re.compile(
    r"(?:\$\{PONCHO_PREFIX:\+\$\{PONCHO_PREFIX\}/bin/\})?python3((?: [\w.-]+){2,5})")
MAX_PRELOADING = 4  # preloading servers per interpreter (one per task environment)
# not part of server_key: the sandbox's, and the allocation's sizes (which follow the free
# disk and memory); no import reads them, and each child still gets its own
PER_TASK_VARIABLES = ("TMPDIR", "TMP", "TEMP", "MEMORY", "DISK")


def python_task_argv(command: str) -> list[str] | None:
    """``[script, args...]`` if ``command`` is a PythonTask command, else None."""
    match = PYTHON_TASK.fullmatch(command)
    return match.group(1).split() if match else None


def server_key(python: str, env: dict[str, str],
               servers: dict[tuple, Any]) -> tuple[str, frozenset | None]:
    """Which of ``servers`` (or a new one) starts a task of ``python`` and environment
    ``env``: ``(python, environment)``, a preloading server in that environment, while there
    are fewer than ``MAX_PRELOADING`` of them for ``python``; else ``(python, None)``, the
    one that preloads nothing."""
    key = (python, frozenset((name, value) for name, value in env.items()
                             if name not in PER_TASK_VARIABLES))
    preloading = sum(1 for p, e in servers if p == python and e is not None)
    if key in servers or preloading < MAX_PRELOADING:
        return key
    return python, None


class ForkServer:
    """The worker's end of one fork server; with ``env`` (a task's environment) the server
    runs in it and preloads what its tasks import."""

    def __init__(self, python: str, stderr: int | None = None,
                 env: dict[str, str] | None = None):
        import subprocess  # the worker's side only: the server does not need it

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [python, os.path.abspath(__file__), str(theirs.fileno())]
        if env is not None:
            argv.append("preload")
            env = {**{k: v for k, v in env.items() if k not in PER_TASK_VARIABLES},
                   **{k: os.environ[k] for k in PER_TASK_VARIABLES if k in os.environ}}
        self.proc = subprocess.Popen(
            argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if stderr is None else stderr,
            start_new_session=True, close_fds=True, env=env)
        theirs.close()
        reaper.watch(self.proc.pid)
        ours.setblocking(False)
        self.sock = ours
        self.alive = True
        self.children: dict[int, int] = {}  # request id -> pid, from its pid to its status
        self.scanner = _Scanner() if env is not None else None

    def fileno(self) -> int:
        return self.sock.fileno()

    def start(self, request_id: int, argv: list[str], cwd: str, env: dict[str, str],
              stdout: str) -> bool:
        """Ask for a child; False if the server is gone (start the task some other way).
        To a preloading server the request also says which modules the task's pickles
        name that no request named before (``preload``), and whether its sandbox shadows a
        module named before (``fresh``: run it in a new interpreter)."""
        request = {"id": request_id, "argv": argv, "cwd": cwd, "env": env, "stdout": stdout}
        if self.scanner is not None:
            self.scanner.annotate(request)
        msg = json.dumps(request).encode()
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
def serve(fd: int, preload: bool = False) -> None:
    del sys.path[0]  # this file's directory: a task's imports must not find the worker's
    import tempfile  # noqa: F401 - imported once here, inherited by every child
    import traceback  # noqa: F401

    import cloudpickle  # noqa: F401
    sel = selectors.DefaultSelector()
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (request id, pid)
    preloader = Preloader(sel, lambda: [fd, *children]) if preload else None
    gc.freeze()  # children's collections skip (and do not copy) what the server holds
    sock = socket.socket(fileno=fd)
    sel.register(sock, selectors.EVENT_READ, None)
    compiled: dict[tuple, Any] = {}  # (device, inode, mtime, size) of a script -> its code
    try:
        _serve_requests(sock, sel, children, compiled, preloader)
    except OSError:  # the worker is gone (a send failed)
        pass
    finally:
        probes = [] if preloader is None else [pid for pid, _ in preloader.probes.values()]
        _kill_children([pid for _, pid in children.values()] + probes)


def _serve_requests(sock: socket.socket, sel: selectors.BaseSelector,
                    children: dict[int, tuple[int, int]], compiled: dict[tuple, Any],
                    preloader: Preloader | None) -> None:
    """Serve the worker until it closes the socket."""
    while True:
        for key, _ in sel.select():
            if key.data is preloader and preloader is not None:
                preloader.probed(key.fd)
            elif key.data is None:
                data = sock.recv(1 << 20)
                if not data:
                    return
                request = json.loads(data)
                code = _compiled(os.path.join(request["cwd"], request["argv"][0]), compiled)
                if preloader is not None and "preload" in request:
                    preloader.request(request["cwd"], request["preload"])
                pid = os.fork()
                if pid == 0:
                    _child(request, code, [sock.fileno(), *children,
                                           *(preloader.probes if preloader else ())])
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (request["id"], pid)
                sel.register(pidfd, selectors.EVENT_READ, pidfd)
                sock.send(json.dumps({"id": request["id"], "pid": pid}).encode())
            else:
                request_id, pid = children.pop(key.data)
                sel.unregister(key.data)
                os.close(key.data)
                _, status, ru = os.wait4(pid, 0)
                usage = [ru.ru_utime + ru.ru_stime, ru.ru_maxrss, ru.ru_inblock, ru.ru_oublock]
                sock.send(json.dumps({"id": request_id, "status": status,
                                      "usage": usage}).encode())


# ---------------------------------------------------------------------- preloading
STRING_OPS = frozenset({"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "STRING",
                        "BINSTRING", "SHORT_BINSTRING"})
BYTES_OPS = frozenset({"SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8"})
PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
SCAN_BYTES = 1 << 20  # of each pickle: modules named further in are not preloaded
NESTED_PICKLES = 2  # levels of pickles inside bytes inside pickles that are read
SUBIMPORT = ("cloudpickle.cloudpickle", "subimport")  # how cloudpickle pickles a module
_SUBIMPORT = object()  # on the stack: that function
# what every server imports before its first fork, which cloudpickle's output names
SERVER_MODULES = ("builtins", "copyreg", "cloudpickle", "cloudpickle.cloudpickle")
THREADED = 3  # a probe's exit status when the modules it imported started a thread
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def pickled_modules(data: bytes, depth: int = NESTED_PICKLES) -> set[str]:
    """The modules that loading the pickle ``data`` imports: those of its GLOBAL and
    STACK_GLOBAL opcodes, and of the pickles inside it as bytes, ``depth`` levels down. A
    cut or damaged pickle gives the modules named before the damage; nothing is unpickled.

    STACK_GLOBAL takes its module from the stack: the two strings pushed last (directly or
    from the memo) are taken as module and name, as cloudpickle and pickle write them. A
    module that a function shipped by value uses is pickled by cloudpickle as a call of
    its ``subimport`` with the module's name: the string pushed right after it."""
    if data[1:2] >= b"\x04" and b"\x93" not in data:
        return set()  # protocol 4 and later name modules with STACK_GLOBAL only: none here
    import pickletools

    found: set[str] = set()
    recent: list[Any] = [None, None]  # the values pushed last, when they are strings
    memo: dict[Any, Any] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name, value = op.name, None
            if name in ("FRAME", "PROTO"):
                continue
            if name == "MEMOIZE" or name in PUT_OPS:  # the memo keeps the top of the stack
                memo[len(memo) if name == "MEMOIZE" else arg] = recent[-1]
                continue
            if name in STRING_OPS or name in GET_OPS:
                value = arg if name in STRING_OPS else memo.get(arg)
                if recent[-1] is _SUBIMPORT and isinstance(value, str):
                    found.add(value)
            elif name in ("GLOBAL", "INST"):
                found.add(arg.partition(" ")[0])
            elif name == "STACK_GLOBAL" and isinstance(recent[-2], str):
                found.add(recent[-2])
                if (recent[-2], recent[-1]) == SUBIMPORT:
                    value = _SUBIMPORT
            elif name in BYTES_OPS and depth > 0 and _pickle(arg):
                found |= pickled_modules(bytes(arg), depth - 1)
            recent[0], recent[1] = recent[1], value
    except Exception:  # noqa: BLE001 - cut or damaged: what was read so far
        pass
    return {m for m in found if MODULE_NAME.fullmatch(m) and not m.startswith("__")}


def _pickle(data: bytes) -> bool:
    """Whether ``data`` starts as a pickle of protocol 2 to 5 (cloudpickle's) does."""
    return len(data) > 1 and data[0] == 0x80 and 2 <= data[1] <= 5


class _Scanner:
    """The worker's side of preloading: reads a task's pickles (``pickled_modules``) and
    tells the server, in the task's request, only what is new to it, so that the server's
    work between forks stays what it was without preloading."""

    def __init__(self) -> None:
        self.named = set(SERVER_MODULES)  # modules some request named already
        self.tops: set[str] = set()  # their top-level packages
        self.scanned: dict[tuple, set[str]] = {}  # a pickle file's identity -> its modules

    def annotate(self, request: dict) -> None:
        argv, cwd = request["argv"], request["cwd"]
        if len(argv) < 3 or argv[1][:2] != "f_" or argv[2][:2] != "a_":
            return  # not a PythonTask's pickles
        new = self._modules_of(os.path.join(cwd, argv[1])) | self._modules_of(
            os.path.join(cwd, argv[2]))
        if self.tops and self._shadowed(cwd):  # the server may hold one of them
            request["fresh"] = True
        new -= self.named
        if new:
            self.named |= new
            self.tops |= {m.partition(".")[0] for m in new}
            request["preload"] = sorted(new)

    def _shadowed(self, cwd: str) -> bool:
        """Whether the sandbox has a module of its own named like a package the server
        may have imported: its task must not inherit ours."""
        try:
            return any(entry.partition(".")[0] in self.tops for entry in os.listdir(cwd))
        except OSError:
            return False

    def _modules_of(self, path: str) -> set[str]:
        """The modules the pickle at ``path`` names (known by the file's identity: a
        function's file is the same cache object for all its tasks)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return set()
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            found = self.scanned.get(key)
            if found is None:
                if len(self.scanned) > 256:
                    self.scanned.clear()
                data = os.read(fd, min(st.st_size, SCAN_BYTES))  # no bigger buffer
                found = self.scanned[key] = pickled_modules(data) if _pickle(data) else set()
            return found
        except OSError:
            return set()
        finally:
            os.close(fd)


class Preloader:
    """What a preloading server imports before it forks (see the module's docstring)."""

    def __init__(self, sel: selectors.BaseSelector, fds: Callable[[], list[int]]):
        import importlib.util  # noqa: F401 - here, before the server freezes what it holds

        self.sel, self.fds = sel, fds  # the server's own descriptors, which a probe closes
        self.tried: set[str] = set()  # modules probed (or being probed): each only once
        self.probes: dict[int, tuple[int, list[str]]] = {}  # pidfd -> (pid, its modules)
        self.on = True  # off if the server ever has a thread besides its own

    def request(self, cwd: str, modules: list[str]) -> None:
        """Probe those of ``modules`` (named by the pickles of a task in ``cwd``) that are
        not imported or tried yet."""
        new = [m for m in modules if m not in sys.modules and m not in self.tried]
        if not self.on or not new:
            return
        self.tried.update(new)
        new = _importable(new, cwd)
        if new:
            self._probe(new)

    def _probe(self, modules: list[str]) -> None:
        inherited = [*self.fds(), *self.probes]
        pid = os.fork()
        if pid == 0:
            status = 2
            try:
                for fd in inherited:
                    os.close(fd)
                _import(modules)
                status = 0 if _threads() == 1 else THREADED
            finally:
                os._exit(status)
        pidfd = os.pidfd_open(pid)
        self.probes[pidfd] = (pid, modules)
        self.sel.register(pidfd, selectors.EVENT_READ, self)

    def probed(self, pidfd: int) -> None:
        """A probe ended: import its modules here if it ended well with one thread; if
        some module started a thread, probe them one by one to find the others."""
        pid, modules = self.probes.pop(pidfd)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == THREADED and len(modules) > 1:
            for module in modules:
                self._probe([module])
        if status != 0 or not self.on:
            return
        _import(modules)
        gc.freeze()
        self.on = _threads() == 1  # as the probe found; if not, no more imports here


def _importable(modules: list[str], cwd: str) -> list[str]:
    """Those of ``modules`` whose top-level package this interpreter finds and the
    sandbox ``cwd`` does not shadow (a task's own ``x.py`` or ``x/`` comes first there)."""
    import importlib.util

    try:
        local = {entry.partition(".")[0] for entry in os.listdir(cwd)}
    except OSError:
        return []
    out = []
    for name in modules:
        top = name.partition(".")[0]
        try:
            found = top in sys.modules or importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = False
        if found and top not in local:
            out.append(name)
    return out


def _import(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit):  # noqa: BLE001 - the child will say why, if it must
            pass


def _threads() -> int:
    """The threads of this process (the kernel's count, not only Python's threads)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading
        return threading.active_count()


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
    """Become ``python3 <argv>`` in the task's sandbox (by running a new interpreter if
    the request says ``fresh``); never returns."""
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
        if request.get("fresh"):
            os.execv(sys.executable, [sys.executable, *request["argv"]])
        import tempfile
        tempfile.tempdir = None  # TMPDIR is the task's now
        _reseed()
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


def _reseed() -> None:
    """Seed afresh, as a new interpreter would have, the global generators a child
    inherited from a server that preloaded their modules."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


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
    serve(int(sys.argv[1]), sys.argv[2:3] == ["preload"])
