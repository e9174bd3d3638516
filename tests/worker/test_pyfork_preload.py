"""The fork server's preloading (worker/pyfork.py): which modules a task's pickles name, which
server a task goes to, and a real server importing, before it forks, the modules that are
safe to share (and never one whose import starts a thread, or one the sandbox shadows)."""

from __future__ import annotations

import itertools
import json
import math
import os
import pickle
import sys

import cloudpickle
import psutil
import pytest

from ndcctools.taskvine.worker.pyfork import (
    MAX_PRELOADING,
    ForkServer,
    pickled_modules,
    server_key,
)
from tests.conftest import wait_until

SERIAL = itertools.count(1)


def stack_global(module: str, name: str) -> bytes:
    """A protocol 4 pickle of ``module.name`` (a reference; the module need not exist)."""
    def short(text: str) -> bytes:
        return b"\x8c" + bytes([len(text)]) + text.encode() + b"\x94"  # SHORT_BINUNICODE
    return b"\x80\x04" + short(module) + short(name) + b"\x93\x94."  # STACK_GLOBAL, STOP


# ---------------------------------------------------------------------- pickled_modules
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_the_modules_a_pickle_names(protocol):
    data = pickle.dumps([json.dumps, math.sqrt, json.loads, math.floor, "json.x"], protocol)
    assert pickled_modules(data) == {"json", "math"}
    assert pickled_modules(cloudpickle.dumps(json.dumps)) == {"json"}
    assert pickled_modules(stack_global("some.module", "f")) == {"some.module"}
    # the module's name pushed from the memo (it was pickled before, as a plain string)
    assert pickled_modules(pickle.dumps(["math", math.sqrt], protocol)) == {"math"}
    assert pickled_modules(pickle.dumps(["json", "math", 1.5], protocol)) == set()


def test_the_modules_a_function_shipped_by_value_uses():
    code = "import json\nimport math as m\ndef f(x):\n    return json.dumps(m.sqrt(x))\n"
    scope: dict = {"__name__": "not_importable"}
    exec(code, scope)
    data = cloudpickle.dumps(scope["f"])  # by value: its module cannot be imported
    assert {"json", "math"} <= pickled_modules(data)
    assert cloudpickle.loads(data)(4.0) == "2.0"


def test_pickles_inside_bytes_are_read_to_a_depth_and_damage_stops_the_reading():
    inner = pickle.dumps(math.sqrt, 5)
    outer = cloudpickle.dumps(((inner, {"k": pickle.dumps(json.dumps, 5)}), {}))
    assert pickled_modules(outer) == {"math", "json"}
    assert pickled_modules(outer, depth=0) == set()
    cut = pickle.dumps([json.dumps, b"x" * 1000, math.sqrt], 5)
    assert pickled_modules(cut[:len(cut) // 2]) == {"json"}
    assert pickled_modules(b"\x80\x05 garbage \xff") == set()
    assert pickled_modules(stack_global("__main__", "f")) == set()


# ---------------------------------------------------------------------- server_key
def test_one_preloading_server_per_environment_then_a_shared_plain_one():
    env = {"PATH": "/bin", "OMP_NUM_THREADS": "1", "TMPDIR": "/w/task.1/tmp"}
    key = server_key("py", env, {})
    assert key[0] == "py" and key[1] is not None
    assert server_key("py", {**env, "TMPDIR": "/w/task.2/tmp"}, {key: 1}) == key
    servers = {key: 1}
    for cores in range(2, MAX_PRELOADING + 1):
        other = server_key("py", {**env, "OMP_NUM_THREADS": str(cores)}, servers)
        assert other != key and other[1] is not None
        servers[other] = 1
    assert server_key("py", {**env, "OMP_NUM_THREADS": "99"}, servers) == ("py", None)
    assert server_key("py", env, servers) == key  # known environments keep their server
    assert server_key("other-python", env, servers)[1] is not None


# ---------------------------------------------------------------------- a real server
class Modules:
    """Importable modules that log each import (pid, and an environment variable)."""

    def __init__(self, tmp_path):
        self.dir, self.log = tmp_path / "mods", tmp_path / "imports.log"
        self.dir.mkdir()
        record = (f"import os\nwith open({str(self.log)!r}, 'a') as f:\n"
                  "    f.write(f\"{__name__} {os.getpid()} {os.environ.get('VINE_MARK')}\\n\")\n")
        (self.dir / "vine_clean_mod.py").write_text(record)
        (self.dir / "vine_shadowed_mod.py").write_text(record)
        (self.dir / "vine_thread_mod.py").write_text(
            record + "import threading\n"
            "threading.Thread(target=threading.Event().wait, daemon=True).start()\n")

    def imports(self, module: str) -> list[tuple[int, str]]:
        if not self.log.exists():
            return []
        rows = [line.split() for line in self.log.read_text().splitlines()]
        return [(int(pid), mark) for name, pid, mark in rows if name == module]


class Server:
    """A ForkServer and the PythonTask-shaped requests sent to it."""

    def __init__(self, tmp_path, env: dict | None):
        self.tmp_path = tmp_path
        self.fork = ForkServer(sys.executable, env=env)
        self.statuses: dict[int, int] = {}

    def run(self, module: str, sandbox_files: dict[str, str] | None = None,
            args_module: str | None = None) -> dict:
        """A task whose function pickle names ``module`` (and its arguments' pickle
        ``args_module``); which modules were imported when its script started (before it
        loaded anything)."""
        n = next(SERIAL)
        box = self.tmp_path / f"task.{n}"
        box.mkdir()
        (box / f"w_{n}").write_text(
            "import json, sys\n"
            "names = ['vine_clean_mod', 'vine_thread_mod', 'vine_shadowed_mod', 'numpy.random']\n"
            "seen = {m: m in sys.modules for m in names}\n"
            "if seen['numpy.random']:\n"
            "    seen['random'] = sys.modules['numpy.random'].random()\n"
            "json.dump(seen, open('seen', 'w'))\n")
        (box / f"f_{n}").write_bytes(stack_global(module, "anything"))
        (box / f"a_{n}").write_bytes(pickle.dumps(((), {}), 5) if args_module is None
                                     else stack_global(args_module, "anything"))
        for name, text in (sandbox_files or {}).items():
            (box / name).write_text(text)
        env = {**os.environ, "TMPDIR": str(box)}
        assert self.fork.start(n, [f"w_{n}", f"f_{n}", f"a_{n}", f"o_{n}"], str(box), env,
                               str(box / "stdout"))

        def ended() -> bool:
            for event in self.fork.events():
                if "status" in event:
                    self.statuses[event["id"]] = event["status"]
            return n in self.statuses
        wait_until(ended, timeout=30)
        assert self.statuses[n] == 0, (box / "stdout").read_text()
        return json.loads((box / "seen").read_text())

    def idle(self) -> bool:
        """No child (task or probe) of the server is left, not even unreaped."""
        return not psutil.Process(self.fork.proc.pid).children()

    def close(self) -> None:
        self.fork.close()


@pytest.fixture
def modules(tmp_path):
    return Modules(tmp_path)


@pytest.fixture
def preloading(tmp_path, modules):
    server = Server(tmp_path, {**os.environ, "PYTHONPATH": str(modules.dir),
                               "VINE_MARK": "server-env"})
    yield server
    server.close()


def test_a_module_is_probed_then_imported_once_and_children_inherit_it(preloading, modules):
    pid = preloading.fork.proc.pid
    assert not preloading.run("vine_clean_mod")["vine_clean_mod"]  # probed meanwhile
    wait_until(lambda: any(p == pid for p, _ in modules.imports("vine_clean_mod")))
    (probe, probe_mark), (server, server_mark) = modules.imports("vine_clean_mod")
    assert probe != pid and server == pid
    assert probe_mark == server_mark == "server-env"  # imported in the server's environment
    assert preloading.run("vine_clean_mod")["vine_clean_mod"]
    assert preloading.run("vine_clean_mod")["vine_clean_mod"]
    assert len(modules.imports("vine_clean_mod")) == 2  # children did not import it again
    assert psutil.Process(pid).num_threads() == 1


def test_a_module_that_starts_a_thread_is_never_imported_by_the_server(preloading, modules):
    pid = preloading.fork.proc.pid
    preloading.run("vine_thread_mod")
    wait_until(lambda: modules.imports("vine_thread_mod") and preloading.idle())
    assert not preloading.run("vine_thread_mod")["vine_thread_mod"]
    wait_until(preloading.idle)
    assert pid not in [p for p, _ in modules.imports("vine_thread_mod")]
    assert len(modules.imports("vine_thread_mod")) == 1  # probed once only
    assert psutil.Process(pid).num_threads() == 1


def test_modules_probed_together_are_probed_one_by_one_when_one_starts_a_thread(
        preloading, modules):
    pid = preloading.fork.proc.pid
    preloading.run("vine_thread_mod", args_module="vine_clean_mod")
    wait_until(lambda: pid in [p for p, _ in modules.imports("vine_clean_mod")])
    seen = preloading.run("vine_clean_mod")
    assert seen["vine_clean_mod"] and not seen["vine_thread_mod"]
    wait_until(preloading.idle)
    assert pid not in [p for p, _ in modules.imports("vine_thread_mod")]
    assert len(modules.imports("vine_thread_mod")) == 2  # together, then alone
    assert psutil.Process(pid).num_threads() == 1


def test_a_module_the_sandbox_shadows_is_not_preloaded(preloading, modules):
    seen = preloading.run("vine_shadowed_mod", {"vine_shadowed_mod.py": "x = 1\n"})
    assert not seen["vine_shadowed_mod"]
    wait_until(preloading.idle)
    assert modules.imports("vine_shadowed_mod") == []  # not even probed


def test_a_task_whose_sandbox_shadows_a_preloaded_module_runs_in_a_new_python(
        preloading, modules):
    pid = preloading.fork.proc.pid
    preloading.run("vine_clean_mod")
    wait_until(lambda: pid in [p for p, _ in modules.imports("vine_clean_mod")])
    assert preloading.run("vine_clean_mod")["vine_clean_mod"]
    own = preloading.run("vine_clean_mod", {"vine_clean_mod.py": "x = 1\n"})
    assert not own["vine_clean_mod"]  # its own module would be imported, not ours
    other = preloading.run("vine_thread_mod", {"vine_clean_mod.py": "x = 1\n"})
    assert not other["vine_clean_mod"]  # the same when its pickles name a new module


def test_children_of_a_server_that_preloaded_numpy_random_draw_different_numbers(tmp_path):
    pytest.importorskip("numpy")
    threads = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    server = Server(tmp_path, {**os.environ, **threads})  # so numpy starts no thread
    try:
        wait_until(lambda: server.run("numpy.random")["numpy.random"], timeout=60)
        draws = {server.run("numpy.random")["random"] for _ in range(3)}
        assert len(draws) == 3
        assert psutil.Process(server.fork.proc.pid).num_threads() == 1
    finally:
        server.close()


def test_a_plain_server_preloads_nothing(tmp_path, modules, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(modules.dir))
    server = Server(tmp_path, None)
    try:
        assert not server.run("vine_clean_mod")["vine_clean_mod"]
        wait_until(server.idle)
        assert not server.run("vine_clean_mod")["vine_clean_mod"]
        assert modules.imports("vine_clean_mod") == []
    finally:
        server.close()
