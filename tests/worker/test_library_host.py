"""The library host as a worker runs it: a subprocess talking over two inherited pipes."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence

import cloudpickle
import pytest

from ndcctools.taskvine import library_host
from ndcctools.taskvine.library_host import library_info

DEADLINE = 20.0
HOST = library_host.__file__


class Library:
    """One library host process and the worker's ends of its pipes."""

    def __init__(self, tmp_path, info: bytes, slots: int = 1, cores: int = 1,
                 wrapper: Sequence[str] = ()) -> None:
        self.tmp_path = tmp_path
        self.dir = tmp_path / "library"
        self.dir.mkdir()
        (self.dir / "library_info.clpk").write_bytes(info)
        to_host, self.to_host = os.pipe()
        self.from_host, from_host = os.pipe()
        self.stderr = self.dir / "library.stderr"
        self.stdout = self.dir / "library.stdout"
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [*wrapper, sys.executable, HOST, "--unknown-option", "ignored",
                 "--in-pipe-fd", str(to_host), "--out-pipe-fd", str(from_host),
                 "--task-id", "7", "--library-cores", str(cores),
                 "--function-slots", str(slots), "--worker-pid", str(os.getpid())],
                cwd=self.dir, pass_fds=(to_host, from_host),
                stdin=subprocess.PIPE if wrapper else subprocess.DEVNULL,
                stdout=out, stderr=err)
        os.close(to_host)
        os.close(from_host)
        self.buffer = bytearray()
        self.received: deque[bytes] = deque()
        self.calls = 0

    def recv(self, timeout: float = DEADLINE) -> str:
        """The next message from the host, as text."""
        return self.recv_bytes(timeout).decode()

    def recv_bytes(self, timeout: float = DEADLINE) -> bytes:
        """The next message from the host; TimeoutError if none comes in time."""
        deadline = time.monotonic() + timeout
        while not self.received:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.from_host], [], [], remaining)[0]:
                raise TimeoutError("no message from the library host")
            data = os.read(self.from_host, 65536)
            if not data:
                raise EOFError("the library host closed its out-pipe")
            self.buffer += data
            self.received += library_host.take_messages(self.buffer)
        return self.received.popleft()

    def handshake(self) -> dict:
        return json.loads(self.recv())

    def send(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        os.write(self.to_host, b"%d\n%s" % (len(payload), payload))

    def invoke(self, function: str, *args, inline: bool = False, **kwargs) -> str:
        """Sends a call, its arguments in its sandbox's infile or ``inline``; returns its id
        (its sandbox is ``call<id>``)."""
        self.calls += 1
        call_id = str(self.calls)
        sandbox = self.tmp_path / f"call{call_id}"
        sandbox.mkdir()
        pickled = cloudpickle.dumps({"fn_args": list(args), "fn_kwargs": kwargs})
        head = f"{call_id} {function} {sandbox} {sandbox / 'stdout'}"
        if inline:
            (sandbox / "stdout").write_text("left by an earlier call\n")
            self.send(head.encode() + b"\n" + pickled)
        else:
            (sandbox / "infile").write_bytes(pickled)
            self.send(head)
        return call_id

    def outcome(self, call_id: str) -> dict:
        return cloudpickle.loads((self.tmp_path / f"call{call_id}" / "outfile").read_bytes())

    def output(self, call_id: str) -> str:
        return (self.tmp_path / f"call{call_id}" / "stdout").read_text()

    def call(self, function: str, *args, **kwargs) -> dict:
        """One call, waited for: its outfile."""
        call_id = self.invoke(function, *args, **kwargs)
        assert self.recv() == f"{call_id} 0"
        return self.outcome(call_id)

    def close(self) -> int:
        """Closes the in-pipe; the host's exit status."""
        os.close(self.to_host)
        try:
            return self.proc.wait(timeout=DEADLINE)
        finally:
            os.close(self.from_host)


@pytest.fixture
def start(tmp_path):
    libraries = []

    def start(*args, **kwargs) -> Library:
        libraries.append(Library(tmp_path, *args, **kwargs))
        return libraries[-1]

    yield start
    for library in libraries:
        if library.proc.poll() is None:
            library.proc.kill()
            library.proc.wait()


# Nested, so that cloudpickle sends them by value (the host cannot import this module).
def basic_functions() -> list:
    def add(a, b=0):
        return a + b

    def fail(message):
        raise ValueError(message)

    def chatty(text):
        print(text)
        print(f"err {text}", file=sys.stderr)
        return os.getcwd()

    def suicide():
        os.kill(os.getpid(), signal.SIGKILL)

    def threads():
        return os.environ.get("OMP_NUM_THREADS")

    return [add, fail, chatty, suicide, threads]


@pytest.mark.parametrize("mode", ["fork", "direct"])
def test_calls_results_failures_and_output(start, tmp_path, mode):
    library = start(library_info("basic", basic_functions(), mode), slots=2, cores=4)
    assert library.handshake() == {"name": "basic", "taskid": 7, "exec_mode": mode,
                                   "queues_calls": True, "inline_io": True}
    assert library.call("add", 2, b=3) == {"Result": 5, "Success": True, "Reason": None}
    failed = library.call("fail", "broken on purpose")
    assert failed["Success"] is False and failed["Result"] is None
    assert "ValueError: broken on purpose" in failed["Reason"]
    unknown = library.call("nope")
    assert unknown["Success"] is False and "'nope'" in unknown["Reason"]
    call_id = library.invoke("chatty", "hello")
    assert library.recv() == f"{call_id} 0"
    assert library.outcome(call_id)["Result"] == str(tmp_path / f"call{call_id}")
    assert library.output(call_id) == "hello\nerr hello\n"
    assert library.call("threads")["Result"] == "2"
    assert library.call("add", 1)["Result"] == 1  # still serving after all that
    assert library.close() == 0
    assert "hello" not in library.stdout.read_text() + library.stderr.read_text()


@pytest.mark.parametrize("mode", ["fork", "direct"])
def test_inline_calls_take_and_give_files_in_their_messages(start, tmp_path, mode):
    signals = []
    previous = signal.signal(signal.SIGCHLD, lambda *_: signals.append(1))
    try:
        library = start(library_info("basic", basic_functions(), mode), slots=2)
        library.handshake()
        call_id = library.invoke("chatty", "hi", inline=True)
        sandbox = tmp_path / f"call{call_id}"
        head, _, outfile = library.recv_bytes().partition(b"\n")
        signals.clear()  # the handshake's signal has arrived by now
        assert head == f"{call_id} 0".encode()
        if mode == "direct":  # the result comes in the message, nothing on disk
            assert not (sandbox / "outfile").exists()
        else:  # a forked child still writes its outfile
            assert outfile == b""
            outfile = (sandbox / "outfile").read_bytes()
        assert cloudpickle.loads(outfile)["Result"] == str(sandbox)
        assert library.output(call_id) == "hi\nerr hi\n"  # the host emptied it first
        assert not (sandbox / "infile").exists()
        big = library.invoke("add", "x" * (library_host.INLINE_RESULT_MAX + 1), b="",
                             inline=True)
        assert library.recv() == f"{big} 0"  # too big for a message: in outfile
        assert len(library.outcome(big)["Result"]) == library_host.INLINE_RESULT_MAX + 1
        if mode == "direct":
            assert signals == []  # a worker sending inline calls reads the pipe unprompted
        assert library.close() == 0
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_a_killed_child_reports_its_raw_status(start):
    library = start(library_info("basic", basic_functions(), "fork"))
    library.handshake()
    call_id = library.invoke("suicide")
    assert library.recv() == f"{call_id} {signal.SIGKILL}"
    assert library.call("add", 4, 5)["Result"] == 9
    assert library.close() == 0


def test_hoisting_makes_modules_visible_to_functions(start):
    def hypotenuse(a, b):
        return math.hypot(a, b), j.dumps([a])  # noqa: F821 - hoisted

    info = library_info("hoisted", [hypotenuse], "fork", None, "import math\nimport json as j\n")
    library = start(info)
    library.handshake()
    assert library.call("hypotenuse", 3, 4)["Result"] == (5.0, "[3]")


def context_functions(counter) -> tuple:
    def setup(path, scale=1):
        with open(path, "a") as f:
            f.write("ran\n")
        return {"model": 21 * scale}

    def predict(x):
        from ndcctools.taskvine.utils import load_variable_from_library
        return load_variable_from_library("model") + x

    def missing():
        from ndcctools.taskvine.utils import load_variable_from_library
        return load_variable_from_library("no_such_variable")

    def utils_file():
        import ndcctools.taskvine.utils
        return getattr(ndcctools.taskvine.utils, "__file__", None)

    return [predict, missing, utils_file], [setup, [str(counter)], {"scale": 2}]


@pytest.mark.parametrize("mode", ["fork", "direct"])
def test_the_context_runs_once_and_feeds_functions(start, tmp_path, mode):
    counter = tmp_path / "counter"
    functions, context = context_functions(counter)
    library = start(library_info("ctx", functions, mode, context))
    library.handshake()
    assert [library.call("predict", x)["Result"] for x in range(3)] == [42, 43, 44]
    assert counter.read_text() == "ran\n"
    assert library.call("utils_file")["Result"].endswith("utils.py")  # the real module


BLOCK_NDCCTOOLS = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ndcctools":
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[2:]  # drop this script and the interpreter before the host
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_context_variables_without_the_package_installed(start, tmp_path):
    counter = tmp_path / "counter"
    functions, context = context_functions(counter)
    wrapper = tmp_path / "block.py"
    wrapper.write_text(BLOCK_NDCCTOOLS)
    library = start(library_info("ctx", functions, "fork", context),
                    wrapper=[sys.executable, str(wrapper)])
    library.handshake()
    assert library.call("predict", 1)["Result"] == 43
    missing = library.call("missing")
    assert missing["Success"] is False and "no_such_variable" in missing["Reason"]
    assert library.call("utils_file")["Result"] is None  # the stand-in module


def broken_context() -> list:
    def setup():
        raise RuntimeError("no model today")

    return [setup]


@pytest.mark.parametrize("hoisting, context, error", [
    ("import does_not_exist", None, "ModuleNotFoundError: No module named 'does_not_exist'"),
    ("", broken_context(), "RuntimeError: no model today"),
])
def test_a_startup_failure_exits_1_without_handshake(start, hoisting, context, error):
    library = start(library_info("bad", basic_functions(), "fork", context, hoisting))
    with pytest.raises(EOFError):
        library.recv()
    assert library.proc.wait(timeout=DEADLINE) == 1
    assert error in library.stderr.read_text()


def rendezvous_functions(tmp_path) -> list:
    def meet(mine, other):
        """Arrives at ``mine`` and waits for ``other``: only succeeds if both run at once."""
        open(os.path.join(str(tmp_path), mine), "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(str(tmp_path), other)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def gone(name):
        return os.path.exists(os.path.join(str(tmp_path), name))

    return [meet, gone]


def test_fork_mode_runs_slots_calls_at_once(start, tmp_path):
    library = start(library_info("meet", rendezvous_functions(tmp_path), "fork"), slots=2)
    library.handshake()
    first, second = library.invoke("meet", "a", "b"), library.invoke("meet", "b", "a")
    assert {library.recv(), library.recv()} == {f"{first} 0", f"{second} 0"}
    assert library.outcome(first)["Result"] is True
    assert library.outcome(second)["Result"] is True


def test_fork_mode_queues_calls_beyond_the_slots(start, tmp_path):
    library = start(library_info("meet", rendezvous_functions(tmp_path), "fork"), slots=1)
    library.handshake()
    first = library.invoke("meet", "started", "go")
    second = library.invoke("gone", "go")  # would see no "go" if it ran alongside the first
    with pytest.raises(TimeoutError):
        library.recv(timeout=0.5)
    (tmp_path / "go").touch()
    assert [library.recv(), library.recv()] == [f"{first} 0", f"{second} 0"]
    assert library.outcome(second)["Result"] is True


def test_the_host_exits_when_its_parent_changes(tmp_path):
    """The host's parent is a shell that leaves when told to; the host's out-pipe then closes."""
    library = Library(tmp_path, library_info("basic", basic_functions(), "direct"),
                      wrapper=["sh", "-c", '"$@" & echo $!; read line', "sh"])
    library.handshake()
    host_pid = int(library.stdout.read_text())
    library.proc.communicate(b"go\n", timeout=DEADLINE)
    try:
        with pytest.raises(EOFError):
            library.recv()
    except BaseException:
        os.kill(host_pid, signal.SIGKILL)
        raise
    finally:
        os.close(library.to_host)
        os.close(library.from_host)
