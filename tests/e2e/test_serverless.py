"""Serverless end to end: libraries kept warm on real workers and FunctionCalls into them."""

import os
import signal
import sys

import cloudpickle
import psutil
import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine.task import FunctionCallNoResult
from tests.conftest import wait_tasks, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def area(w, h):
    return w * h


def fails(text):
    raise ValueError(text)


def uses_hoisted(x):
    return math.sqrt(x)  # noqa: F821 - ``math`` is hoisted into the library


def from_context(x):
    from ndcctools.taskvine.utils import load_variable_from_library
    return load_variable_from_library("offset") + x


def make_context(counter_path, offset):
    with open(counter_path, "a") as f:
        f.write("loaded\n")
    return {"offset": offset}


def run_calls(m, calls):
    for c in calls:
        m.submit(c)
    done = {t.id: t for t in wait_tasks(m, len(calls))}
    return [done[c.id] for c in calls]


@pytest.mark.parametrize("mode", ["fork", "direct"])
def test_calls_into_a_library(manager, workers, tmp_path, mode):
    import math
    m = manager
    counter = tmp_path / "context-loads"
    workers.start(m)
    lib = m.create_library_from_functions(
        "tools", area, fails, uses_hoisted, from_context, add_env=False, exec_mode=mode,
        hoisting_modules=[math], library_context_info=[make_context, [str(counter), 100], {}])
    lib.set_cores(1)
    m.install_library(lib)
    calls = [vine.FunctionCall("tools", "area", i, h=3) for i in range(30)]
    calls += [vine.FunctionCall("tools", "fails", "it failed"),
              vine.FunctionCall("tools", "uses_hoisted", 16),
              vine.FunctionCall("tools", "from_context", 5)]
    done = run_calls(m, calls)
    assert [c.output for c in done[:30]] == [3 * i for i in range(30)]
    assert "ValueError: it failed" in done[30].output  # the traceback, as upstream
    assert done[31].output == 4.0
    assert done[32].output == 105
    assert counter.read_text() == "loaded\n"  # the context ran once for all these calls


def doubled(data):
    return data * 2


@pytest.mark.parametrize("mode", ["fork", "direct"])
def test_arguments_and_results_of_every_size(manager, workers, mode):
    """Small ones pass inside the library's messages; larger ones than a message, a pipe or
    the worker's memory may hold go through files."""
    m = manager
    workers.start(m)
    lib = m.create_library_from_functions("sizes", doubled, add_env=False, exec_mode=mode)
    lib.set_function_slots(2)
    m.install_library(lib)
    sizes = [0, 10, 20_000, 40_000, 200_000, 700_000, 3_000_000] * 2
    data = [os.urandom(n) for n in sizes]
    done = run_calls(m, [vine.FunctionCall("sizes", "doubled", d) for d in data])
    assert [c.result for c in done] == ["success"] * len(data)
    assert [c.output == d * 2 for c, d in zip(done, data, strict=True)] == [True] * len(data)


def nap(seconds):
    import time
    time.sleep(seconds)
    return seconds


@pytest.mark.parametrize("mode", ["fork", "direct"])
def test_a_call_past_its_time_limit_ends_and_the_others_still_run(manager, workers, mode):
    m = manager
    workers.start(m)
    lib = m.create_library_from_functions("naps", nap, add_env=False, exec_mode=mode)
    lib.set_function_slots(2)
    m.install_library(lib)
    stuck = vine.FunctionCall("naps", "nap", 600)
    stuck.set_time_max(1)
    done = run_calls(m, [stuck] + [vine.FunctionCall("naps", "nap", 0) for _ in range(4)])
    assert done[0].result == "max wall time"
    assert [c.output for c in done[1:]] == [0] * 4


def test_two_libraries_on_one_worker(manager, workers):
    m = manager
    workers.start(m, cores=2)
    for name in ("first", "second"):
        lib = m.create_library_from_functions(name, area, add_env=False)
        lib.set_cores(1)
        m.install_library(lib)
    done = run_calls(m, [vine.FunctionCall(name, "area", i, 2) for i in range(10)
                         for name in ("first", "second")])
    assert all(c.successful() for c in done)
    assert {c.hostname for c in done} == {done[0].hostname}
    assert [c.output for c in done] == [2 * i for i in range(10) for _ in range(2)]


def test_calls_with_extra_files(manager, workers, tmp_path):
    m = manager

    def concat(suffix):
        with open("extra.txt") as f:
            text = f.read() + suffix
        with open("made.txt", "w") as f:
            f.write(text)
        return len(text)
    workers.start(m)
    lib = m.create_library_from_functions("files", concat, add_env=False)
    m.install_library(lib)
    made = tmp_path / "made.txt"
    c = vine.FunctionCall("files", "concat", "!")
    c.add_input(m.declare_buffer("hello"), "extra.txt")
    c.add_output(m.declare_file(str(made)), "made.txt")
    (done,) = run_calls(m, [c])
    assert done.output == 6 and made.read_text() == "hello!"


def test_a_library_that_cannot_start_ends_its_calls_with_its_error(manager, workers):
    m = manager
    m.tune("max-library-retries", 2)
    workers.start(m)
    lib = m.create_library_from_functions("broken", area, add_env=False,
                                          init_command="echo cannot import numpyy >&2; exit 3;")
    m.install_library(lib)
    calls = [vine.FunctionCall("broken", "area", 1, 2) for _ in range(3)]
    done = run_calls(m, calls)
    for c in done:
        assert c.result == "missing library"
        assert isinstance(c.output, FunctionCallNoResult)
        assert "cannot import numpyy" in c.std_output
    assert not m.check_library_exists("broken")


def test_a_library_whose_context_raises_ends_its_calls(manager, workers):
    m = manager
    m.tune("max-library-retries", 1)
    workers.start(m)
    lib = m.create_library_from_functions("noctx", area, add_env=False,
                                          library_context_info=[fails, ["bad context"], {}])
    m.install_library(lib)
    (done,) = run_calls(m, [vine.FunctionCall("noctx", "area", 1, 2)])
    assert done.result == "missing library" and "bad context" in done.std_output


def test_a_killed_library_is_restarted_and_its_calls_finish(manager, workers, tmp_path):
    m = manager
    proc = workers.start(m)
    gate = tmp_path / "gate"

    def slow(x, gate_path):
        import time
        while not os.path.exists(gate_path):
            time.sleep(0.02)
        return x
    lib = m.create_library_from_functions("slowlib", slow, add_env=False)
    lib.set_cores(1)
    m.install_library(lib)
    calls = [vine.FunctionCall("slowlib", "slow", i, str(gate)) for i in range(6)]
    for c in calls:
        m.submit(c)

    def library_process():
        for p in psutil.Process(proc.pid).children(recursive=True):
            if "library_code.py" in " ".join(p.cmdline()):
                return p
        return None
    wait_until(lambda: m.wait(0) is None and library_process() is not None)
    first = library_process()
    os.kill(first.pid, signal.SIGKILL)
    gate.touch()
    done = {t.id: t for t in wait_tasks(m, len(calls))}
    assert [done[c.id].output for c in calls] == list(range(6))


def test_calls_need_an_installed_library(manager, workers):
    m = manager
    with pytest.raises(ValueError, match="invalid library name 'nowhere'"):
        m.submit(vine.FunctionCall("nowhere", "f"))
    with pytest.raises(TypeError):
        m.install_library(vine.Task("true"))
    with pytest.raises(TypeError):
        m.check_library_exists(3)
    with pytest.raises(ValueError):
        m.create_library_from_functions("x", exec_mode="fork")
    with pytest.raises(ValueError):
        m.create_library_from_functions("x", area, exec_mode="thread")
    lib = m.create_library_from_functions("gone", area, add_env=False)
    m.install_library(lib)
    c = vine.FunctionCall("gone", "area", 1, 2)
    m.submit(c)  # no worker yet: it waits
    m.remove_library("gone")
    (done,) = wait_tasks(m, 1)
    assert done.result == "missing library"
    assert "not installed" in done.std_output


def test_an_idle_library_makes_room_for_other_work(manager, workers):
    m = manager
    workers.start(m, cores=2)
    for name in ("big_a", "big_b"):
        lib = m.create_library_from_functions(name, area, add_env=False)
        lib.set_cores(2)  # the whole worker
        m.install_library(lib)
    (first,) = run_calls(m, [vine.FunctionCall("big_a", "area", 2, 3)])
    assert first.output == 6
    t = vine.Task("echo ran beside nothing")
    t.set_cores(1)
    (done,) = run_calls(m, [t])  # big_a is idle and holds every core: it is stopped
    assert done.successful()
    calls = run_calls(m, [vine.FunctionCall("big_b", "area", 4, 5),
                          vine.FunctionCall("big_a", "area", 1, 1)])
    assert [c.output for c in calls] == [20, 1]


def noisy_context():
    print("hello from the library context", flush=True)
    return {}


def test_library_output_is_streamed_to_its_log(manager, workers):
    m = manager
    m.tune("watch-library-logfiles", 1)
    workers.start(m)
    lib = m.create_library_from_functions("chatty", area, add_env=False,
                                          library_context_info=[noisy_context, [], {}])
    m.install_library(lib)
    (done,) = run_calls(m, [vine.FunctionCall("chatty", "area", 2, 2)])
    assert done.output == 4
    logs = m.library_logging_directory

    def streamed():
        assert m.wait(0.05) is None
        return any("hello from the library context" in open(os.path.join(logs, n)).read()
                   for n in os.listdir(logs))
    wait_until(streamed)  # while the library still runs


def test_a_hoisted_module_that_does_not_import_ends_the_calls(manager, workers):
    import types
    m = manager
    m.tune("max-library-retries", 1)
    workers.start(m)
    lib = m.create_library_from_functions(
        "noimport", area, add_env=False,
        hoisting_modules=[types.ModuleType("module_that_is_nowhere")])
    m.install_library(lib)
    (done,) = run_calls(m, [vine.FunctionCall("noimport", "area", 1, 2)])
    assert done.result == "missing library"
    assert "No module named 'module_that_is_nowhere'" in done.std_output


def test_libraries_from_serverized_files_and_from_a_command(manager, workers, tmp_path):
    from ndcctools.taskvine import library_host
    m = manager
    workers.start(m)
    for name in ("served", "commanded"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "library_code.py").write_bytes(open(library_host.__file__, "rb").read())
        (folder / "library_info.clpk").write_bytes(library_host.library_info(name, [area]))
    m.install_library(m.create_library_from_serverized_files("served", str(tmp_path / "served")))
    run = tmp_path / "commanded" / "run.sh"
    run.write_text('#!/bin/sh\nexec python3 ./library_code.py "$@"\n')
    run.chmod(0o755)
    lib = m.create_library_from_command(str(run), "commanded")
    for f in ("library_code.py", "library_info.clpk"):
        lib.add_input(m.declare_file(str(tmp_path / "commanded" / f)), f)
    m.install_library(lib)
    done = run_calls(m, [vine.FunctionCall("served", "area", 3, 3),
                         vine.FunctionCall("commanded", "area", 2, 5)])
    assert [c.output for c in done] == [9, 10]


PLAIN_LIBRARY = f"#!{sys.executable}\n" + """
import json, os, signal, sys
import cloudpickle
opts = dict(zip(sys.argv[1::2], sys.argv[2::2]))
pipe_in, pipe_out = int(opts["--in-pipe-fd"]), int(opts["--out-pipe-fd"])
def send(payload):
    os.write(pipe_out, b"%d\\n%s" % (len(payload), payload))
    os.kill(int(opts["--worker-pid"]), signal.SIGCHLD)
send(json.dumps({"name": "plain", "taskid": int(opts["--task-id"]),
                 "exec_mode": "direct"}).encode())
buffer = b""
while chunk := os.read(pipe_in, 65536):
    buffer += chunk
    while b"\\n" in buffer:
        size, rest = buffer.split(b"\\n", 1)
        if len(rest) < int(size):
            break
        message, buffer = rest[:int(size)], rest[int(size):]
        call_id, function, sandbox, stdout = message.decode().split()
        with open(os.path.join(sandbox, "infile"), "rb") as f:
            event = cloudpickle.load(f)
        with open(os.path.join(sandbox, "outfile"), "wb") as f:
            f.write(cloudpickle.dumps({"Result": sum(event["fn_args"]), "Success": True,
                                       "Reason": None}))
        send(f"{call_id} 0".encode())
"""


def test_a_library_that_knows_only_the_plain_protocol_gets_files(manager, workers, tmp_path):
    """A library host like upstream's (no ``inline_io`` in its handshake) finds each call's
    arguments in its sandbox's infile and leaves the result in its outfile."""
    m = manager
    workers.start(m)
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_LIBRARY)
    script.chmod(0o755)
    m.install_library(m.create_library_from_command(str(script), "plain"))
    done = run_calls(m, [vine.FunctionCall("plain", "add", i, 10) for i in range(20)])
    assert [c.output for c in done] == [i + 10 for i in range(20)]


def test_a_library_that_cannot_be_sent_ends_its_calls(manager, workers, tmp_path):
    m = manager
    workers.start(m)
    m.install_library(m.create_library_from_command(str(tmp_path / "no-such-program"), "gone"))
    (done,) = run_calls(m, [vine.FunctionCall("gone", "f", 1)])
    assert done.result == "missing library"
    assert "no-such-program does not exist" in done.std_output
