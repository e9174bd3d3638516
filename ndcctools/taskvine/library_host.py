"""The library host: the program inside a TaskVine *library* process that serves function calls.

Theory of operation
-------------------
The manager ships this file's source to workers as ``library_code.py``, so it stands alone
(standard library and cloudpickle only). The worker starts it in the library's sandbox, which
holds ``library_info.clpk`` (built by :func:`library_info`)::

    python3 library_code.py --in-pipe-fd A --out-pipe-fd B --task-id ID \\
        --library-cores C --function-slots S --worker-pid P

A is read from (worker to host), B is written to (host to worker); every message on either is
``<len>\\n<payload>``, ``len`` being the payload's length in bytes, in decimal.

Startup: the hoisting source runs once and the names it defines are added to the globals of
every function (and of the context function), so functions may use them without importing
them; the context function, if any, runs once and the dict it returns becomes readable through
``ndcctools.taskvine.utils.load_variable_from_library`` (the real module when it is installed,
stand-in modules otherwise). The host then writes the handshake, JSON
``{"name": <library name>, "taskid": ID, "exec_mode": "fork"|"direct", "queues_calls": true,
"inline_io": true}``,
on B and sends SIGCHLD to the worker P. ``queues_calls`` (ignored by workers that do not know
it) tells the worker it may send more calls than there are slots: the extra ones wait here,
so a slot never waits for the worker. If startup fails, the traceback goes to stderr and the
host exits 1 without a handshake.

Calls: the worker puts ``{"fn_args": [...], "fn_kwargs": {...}}`` (cloud)pickled in
``<sandbox>/infile`` and writes ``<call_id> <function> <sandbox> <stdout_file>`` on A. The call
runs with ``<sandbox>`` as its current directory and fds 1 and 2 appended to ``<stdout_file>``
(created if missing); ``<sandbox>/outfile`` receives cloudpickled
``{"Result": value, "Success": True, "Reason": None}``, or ``Result None, Success False`` and
the traceback as ``Reason`` if the function raised. The host then writes ``<call_id> <status>``
on B and sends SIGCHLD to P.

Inline calls, an extension our worker uses with libraries whose handshake says
``"inline_io": true`` (this one): the invocation is ``<call_id> <function> <sandbox>
<stdout_file>\n<content of infile>``; no ``infile`` is in the sandbox, ``<stdout_file>`` is
truncated by the host, not the worker, and no SIGCHLD is sent (that worker watches B). In
direct mode the result is then ``<call_id> <status>\n<content of outfile>`` and no outfile is
written, unless the content exceeds ``INLINE_RESULT_MAX`` bytes. Calls without the newline
are served as above, so the host also works with workers that do not know the extension.

* fork: each call runs in a child forked from the host, whose functions are already loaded; at
  most S children at once (more calls wait in a queue). The status is the child's raw waitpid
  status: 0 when the outfile was written, even if the function raised; 256 (exit 1) when the
  call could not be set up or its outfile written; the signal number if it was killed (e.g. 9).
  The SIGCHLD handler wakes the loop through a self-pipe (``signal.set_wakeup_fd``). One
  *spare* child is always forked in advance and waits on a pipe for its call, so a call
  starts without waiting for a fork (which costs milliseconds for a large Python).
* direct: calls run one at a time in the host itself; the status is 0, or 256 as above.

Thread pools are limited to ``max(1, C // S)`` threads (OMP_NUM_THREADS and the like). The host
exits 0 when A reaches EOF, B is broken or its parent process changes (checked at least once a
second); children still running are killed first.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import sys
import traceback
import types
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, NoReturn

import cloudpickle

INFO_FILE = "library_info.clpk"
EXEC_MODES = ("fork", "direct")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
PARENT_CHECK_SECONDS = 1.0
INLINE_RESULT_MAX = 256 << 10  # larger results of inline calls still go to outfile
SETUP_FAILED = 1 << 8  # the raw waitpid status of a process that exited 1


def library_info(library_name: str, functions: Mapping[str, Callable] | Iterable[Callable],
                 exec_mode: str = "fork", context_info: Sequence | None = None,
                 hoisting_source: str = "") -> bytes:
    """The bytes of ``library_info.clpk`` for these functions.

    ``functions`` maps names to functions, or is a list of functions named by ``__name__``.
    ``context_info`` is ``None`` or ``[context_fn, args, kwargs]`` (args and kwargs optional).
    """
    if exec_mode not in EXEC_MODES:
        raise ValueError(f"exec_mode must be one of {EXEC_MODES}, not {exec_mode!r}")
    named = functions.items() if isinstance(functions, Mapping) else (
        (fn.__name__, fn) for fn in functions)
    context = None
    if context_info is not None:
        fn, args, kwargs = [*context_info, None, None][:3]
        context = cloudpickle.dumps([fn, list(args or ()), dict(kwargs or {})])
    return cloudpickle.dumps({
        "library_name": library_name,
        "functions": {name: cloudpickle.dumps(fn) for name, fn in named},
        "exec_mode": exec_mode,
        "context": context,
        "hoisting": hoisting_source,
    })


class Call(NamedTuple):
    call_id: str
    function: str
    sandbox: str
    stdout_file: str
    args: bytes | None = None  # the content of infile, for an inline call

    @classmethod
    def parse(cls, message: bytes) -> Call | None:
        """The call an invocation describes (None if malformed)."""
        head, inline, args = message.partition(b"\n")
        parts = head.decode("utf-8", "surrogateescape").split()
        if len(parts) != 4:
            return None
        return cls(*parts, args if inline else None)

    def encode(self) -> bytes:
        head = " ".join(self[:4]).encode("utf-8", "surrogateescape")
        return head if self.args is None else head + b"\n" + self.args


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="TaskVine library host")
    parser.add_argument("--in-pipe-fd", type=int, required=True)
    parser.add_argument("--out-pipe-fd", type=int, required=True)
    parser.add_argument("--task-id", type=int, required=True)
    parser.add_argument("--library-cores", type=int, default=0)
    parser.add_argument("--function-slots", type=int, default=0)
    parser.add_argument("--worker-pid", type=int, default=0)
    return parser.parse_known_args(argv)[0]


def limit_threads(cores: int, slots: int) -> None:
    if cores > 0 and slots > 0:
        os.environ.update(dict.fromkeys(THREAD_VARS, str(max(1, cores // slots))))


def variable_store() -> dict[str, Any]:
    """The namespace ``load_variable_from_library`` reads from."""
    try:
        import ndcctools.taskvine.utils as utils
    except Exception:
        utils = install_stub_modules()
    return vars(utils)


def install_stub_modules() -> types.ModuleType:
    """Stand-ins for ``ndcctools.taskvine.utils`` and its parents, for workers without them."""
    utils = types.ModuleType("ndcctools.taskvine.utils")

    def load_variable_from_library(name: str) -> Any:
        try:
            return vars(utils)[name]
        except KeyError:
            raise KeyError(f"no variable {name!r} was loaded by this library's context "
                           "(library_context_info)") from None

    utils.load_variable_from_library = load_variable_from_library
    top, taskvine = types.ModuleType("ndcctools"), types.ModuleType("ndcctools.taskvine")
    top.__path__, taskvine.__path__ = [], []
    top.taskvine, taskvine.utils = taskvine, utils
    sys.modules.update({"ndcctools": top, "ndcctools.taskvine": taskvine,
                        "ndcctools.taskvine.utils": utils})
    return utils


def hoisted_names(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<hoisting>", "exec"), namespace)
    namespace.pop("__builtins__", None)
    return namespace


def hoist(fn: Callable, names: dict[str, Any]) -> Callable:
    fn_globals = getattr(fn, "__globals__", None)
    if fn_globals is not None:
        fn_globals.update(names)
    return fn


def load_library(path: str) -> tuple[str, str, dict[str, Callable]]:
    """(name, exec mode, functions by name) of the library, its context installed."""
    with open(path, "rb") as f:
        info = cloudpickle.load(f)
    exec_mode = info.get("exec_mode") or "fork"
    if exec_mode not in EXEC_MODES:
        raise ValueError(f"unknown exec_mode {exec_mode!r}")
    store = variable_store() if info.get("context") else None
    names = hoisted_names(info.get("hoisting") or "")
    functions = {name: hoist(cloudpickle.loads(blob), names)
                 for name, blob in info["functions"].items()}
    if store is not None:
        fn, args, kwargs = cloudpickle.loads(info["context"])
        variables = hoist(fn, names)(*args, **kwargs)
        if not isinstance(variables, dict):
            raise TypeError(f"the context function returned {type(variables).__name__}, "
                            "not a dict")
        store.update(variables)
    return info["library_name"], exec_mode, functions


def run_call(fn: Callable | None, call: Call) -> bytes:
    """Runs the call; returns the content of its outfile."""
    if fn is None:
        outcome = {"Result": None, "Success": False,
                   "Reason": f"this library has no function named {call.function!r}"}
        return cloudpickle.dumps(outcome)
    try:
        if call.args is None:
            with open(os.path.join(call.sandbox, "infile"), "rb") as f:
                event = cloudpickle.load(f)
        else:
            event = cloudpickle.loads(call.args)
        args = [a.load(call.sandbox) if hasattr(a, "load") and type(a).__name__ == "FutureArg"
                else a for a in event.get("fn_args", ())]  # futures (ndcctools futures.py)
        value = fn(*args, **event.get("fn_kwargs", {}))
        return cloudpickle.dumps({"Result": value, "Success": True, "Reason": None})
    except BaseException:
        return cloudpickle.dumps({"Result": None, "Success": False,
                                  "Reason": traceback.format_exc()})


def write_outfile(call: Call, data: bytes) -> None:
    with open(os.path.join(call.sandbox, "outfile"), "wb") as f:
        f.write(data)


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def redirect_output(call: Call) -> None:
    """Fds 1 and 2 to the call's stdout file (emptied first for an inline call)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if call.args is not None else 0)
    fd = os.open(call.stdout_file, flags, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def take_messages(buffer: bytearray) -> list[bytes]:
    """Removes the complete ``<len>\\n<payload>`` messages at the front of the buffer."""
    messages = []
    while (newline := buffer.find(b"\n")) >= 0:
        end = newline + 1 + int(buffer[:newline])
        if len(buffer) < end:
            break
        messages.append(bytes(buffer[newline + 1:end]))
        del buffer[:end]
    return messages


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send(fd: int, payload: bytes) -> None:
    write_all(fd, b"%d\n%s" % (len(payload), payload))


class Host:
    """Serves the calls that arrive on the in-pipe until it closes."""

    def __init__(self, args: argparse.Namespace, exec_mode: str,
                 functions: dict[str, Callable]) -> None:
        self.in_fd, self.out_fd = args.in_pipe_fd, args.out_pipe_fd
        self.worker_pid = args.worker_pid
        self.signal_worker = True  # SIGCHLD after each message (workers that poll need it)
        self.fork = exec_mode == "fork"
        self.functions = functions
        self.slots = args.function_slots if args.function_slots > 0 else None
        self.home = os.getcwd()
        self.parent = os.getppid()
        self.buffer = bytearray()
        self.running: dict[int, str] = {}  # child pid -> call id
        self.spare: tuple[int, int] | None = None  # (pid, pipe) of a child awaiting a call
        self.queue: deque[Call] = deque()
        self.open = True
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.in_fd, selectors.EVENT_READ, self.on_input)
        self.own_fds = [self.in_fd, self.out_fd]
        for fd in self.own_fds:
            os.set_inheritable(fd, False)
        if self.fork:
            wake_read, wake_write = os.pipe()
            os.set_blocking(wake_read, False)
            os.set_blocking(wake_write, False)
            signal.signal(signal.SIGCHLD, lambda signum, frame: None)
            signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
            self.selector.register(wake_read, selectors.EVENT_READ, self.on_child_exit)
            self.own_fds += [wake_read, wake_write]

    def notify(self, payload: str | bytes) -> None:
        send(self.out_fd, payload.encode() if isinstance(payload, str) else payload)
        if self.signal_worker and self.worker_pid > 0:
            try:
                os.kill(self.worker_pid, signal.SIGCHLD)
            except OSError:
                pass

    def serve(self) -> None:
        try:
            while self.open and os.getppid() == self.parent:
                for key, _ in self.selector.select(PARENT_CHECK_SECONDS):
                    key.data(key.fd)
        except BrokenPipeError:
            pass
        if self.spare is not None:
            self.running[self.spare[0]] = ""
        for pid in self.running:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)

    def on_input(self, fd: int) -> None:
        data = os.read(fd, 1 << 16)
        if not data:
            self.open = False
            return
        self.buffer += data
        for message in take_messages(self.buffer):
            call = Call.parse(message)
            if call is None:
                print(f"library host: ignoring malformed invocation {message[:200]!r}",
                      file=sys.stderr, flush=True)
                continue
            if call.args is not None:
                self.signal_worker = False  # a worker that sends inline calls watches B
            if self.fork:
                self.queue.append(call)
                self.start_queued()
            else:
                self.run_direct(call)

    def run_direct(self, call: Call) -> None:
        """Runs the call in this process and reports it."""
        flush_std()
        saved = os.dup(1), os.dup(2)
        result = f"{call.call_id} {SETUP_FAILED}".encode()
        try:
            redirect_output(call)
            os.chdir(call.sandbox)
            data = run_call(self.functions.get(call.function), call)
            if call.args is not None and len(data) <= INLINE_RESULT_MAX:
                result = b"%s 0\n%s" % (call.call_id.encode(), data)
            else:
                write_outfile(call, data)
                result = f"{call.call_id} 0".encode()
        except Exception:
            traceback.print_exc()
        finally:
            flush_std()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            os.chdir(self.home)
        self.notify(result)

    def start_queued(self) -> None:
        """Hand queued calls to children: the spare one forked in advance, else a new one;
        then fork the next spare, so the next call need not wait for a fork."""
        while self.queue and (self.slots is None or len(self.running) < self.slots):
            call = self.queue.popleft()
            pid = self.give_to_spare(call) or self.give_to_spare(call)
            if pid is None:
                self.notify(f"{call.call_id} {SETUP_FAILED}")
                continue
            self.running[pid] = call.call_id
        if self.spare is None:
            self.fork_spare()

    def give_to_spare(self, call: Call) -> int | None:
        """The pid of the spare child now running ``call`` (None if no child could be
        forked or the spare is gone; a new spare is then ready for a second try)."""
        if self.spare is None and not self.fork_spare():
            return None
        pid, pipe = self.spare
        self.spare = None
        try:
            write_all(pipe, call.encode())
            return pid
        except OSError:  # it died waiting: it is reaped as an unknown child
            self.fork_spare()
            return None
        finally:
            os.close(pipe)

    def fork_spare(self) -> bool:
        flush_std()
        read_end, write_end = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            traceback.print_exc()
            os.close(read_end)
            os.close(write_end)
            return False
        if pid == 0:
            os.close(write_end)
            self.await_call(read_end)
        os.close(read_end)
        self.spare = (pid, write_end)
        return True

    def await_call(self, pipe: int) -> NoReturn:
        """In a spare child: wait for the call the host hands over, then run it."""
        try:
            self.leave_host()
            data = b""
            while chunk := os.read(pipe, 4096):
                data += chunk
        except BaseException:
            os._exit(1)
        if not data:  # the host went away without a call for us
            os._exit(0)
        call = Call.parse(data)
        if call is None:
            os._exit(1)
        self.run_child(call)

    def leave_host(self) -> None:
        """In a child: drop the host's signal handling and descriptors."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in self.own_fds:
            os.close(fd)

    def run_child(self, call: Call) -> NoReturn:
        status = 1
        try:
            redirect_output(call)
            os.chdir(call.sandbox)
            write_outfile(call, run_call(self.functions.get(call.function), call))
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            flush_std()
            os._exit(status)

    def on_child_exit(self, fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass
        while self.running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            call_id = self.running.pop(pid, None)
            if call_id is not None:
                self.notify(f"{call_id} {status}")
        self.start_queued()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    limit_threads(args.library_cores, args.function_slots)
    try:
        name, exec_mode, functions = load_library(INFO_FILE)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    flush_std()
    host = Host(args, exec_mode, functions)
    host.notify(json.dumps({"name": name, "taskid": args.task_id, "exec_mode": exec_mode,
                            "queues_calls": True, "inline_io": True}))
    if host.fork:
        host.fork_spare()  # the first call need not wait for a fork either
    host.serve()


if __name__ == "__main__":
    main()
