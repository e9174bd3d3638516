"""Our logs as the real ``taskvine-report-tool`` (PyPI) reads them, and logs that stay
complete when the user's program fails.

The tool builds its model of a run from ``vine-logs/debug`` (tokenised on spaces, protocol
fields read by position) with the time zone taken from ``transactions``, then writes CSV
files. One run of ours covers what it models: command tasks, a temp file made on one worker
and read on the other (a peer transfer), a library with function calls, and a worker killed
while running tasks. The tool's report must agree with what the run did.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest

import ndcctools.taskvine as vine
from tests.conftest import wait_connected, wait_tasks

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the library runs area()


def _report_tool():
    try:
        from taskvine_report.src.csv_manager import CSVManager
        from taskvine_report.src.data_parser import DataParser
    except ImportError:
        if os.environ.get("VINE_TEST_SYSTEMS") == "required":
            pytest.fail("taskvine-report-tool not installed (VINE_TEST_SYSTEMS=required)")
        pytest.skip("taskvine-report-tool not installed: pip install taskvine-report-tool")
    return DataParser, CSVManager


def area(w, h):
    return w * h


def _run(m, workers, tmp_path):
    """The workflow; returns what the report must agree with."""
    a = workers.start(m, extra=["--feature", "A"])
    b = workers.start(m, extra=["--feature", "B"])
    wait_connected(m, 2)
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    temp = m.declare_temp()
    make = vine.Task("cat in > t && echo more >> t")
    make.add_input(m.declare_file(str(src)), "in")
    make.add_output(temp, "t")
    make.add_feature("A")
    use = vine.Task("cat t > o")
    use.add_input(temp, "t")
    use.add_output(m.declare_file(str(tmp_path / "out.txt")), "o")
    use.add_feature("B")
    plain = [vine.Task(f"echo {i}") for i in range(4)]
    for t in [make, use, *plain]:
        m.submit(t)
    assert all(t.successful() for t in wait_tasks(m, 6))
    lib = m.create_library_from_functions("tools", area, add_env=False)
    lib.set_cores(1)
    m.install_library(lib)
    calls = [vine.FunctionCall("tools", "area", i, 3) for i in range(4)]
    for c in calls:
        m.submit(c)
    assert sorted(c.output for c in wait_tasks(m, 4)) == [0, 3, 6, 9]
    sleepers = []
    for _ in range(3):  # 3 cores free: the library holds one; some land on worker B
        t = vine.Task("sleep 1")
        t.set_cores(1)
        m.submit(t)
        sleepers.append(t)
    deadline = time.monotonic() + 30
    while m.stats.tasks_running < 4 and time.monotonic() < deadline:  # 3 + the library
        m.wait(0.05)
    on_b = [t for t in sleepers if t.addrport and t.hostname and _worker_of(m, t) == "B"]
    assert on_b, "no sleeper went to worker B"
    os.killpg(b.pid, signal.SIGKILL)
    assert all(t.successful() for t in wait_tasks(m, 3))
    return {"a": a, "b": b, "temp": temp._cachename, "make": make, "use": use,
            "plain": plain, "calls": calls, "sleepers": sleepers,
            "killed_ids": {t.id for t in on_b}, "stats": m.stats}


def _worker_of(m, task):
    """Which feature the worker running ``task`` has (the worker table, read-only)."""
    for w in m._engine.workers.values():
        if w.addrport == task.addrport:
            return "A" if "A" in w.features else "B"
    return None


def test_the_report_tool_reads_our_run(tmp_path, workers):
    DataParser, CSVManager = _report_tool()
    with vine.Manager(port=0, run_info_path=str(tmp_path / "vine-run-info")) as m:
        run = _run(m, workers, tmp_path)
        runtime = m.runtime_directory
    from taskvine_report.cli.parse import find_valid_dirs
    found = {os.path.realpath(d) for d in find_valid_dirs(str(tmp_path))}
    assert found == {runtime}  # (and most-recent, a link to it): every log, workflow.json
    dp = DataParser(runtime)
    dp.parse_logs()
    CSVManager(runtime, data_parser=dp).generate_csv_files()
    _check_workers(dp, run)
    _check_tasks(dp, run)
    _check_transfer(dp, run)
    _check_csv(runtime, run)


def _check_workers(dp, run):
    workers = list(dp.workers.values())
    assert len(workers) == 2
    assert all(w.ip == "127.0.0.1" and w.cores == 2 for w in workers)
    assert all(w.hash and w.hash.startswith("worker-") for w in workers)
    start, end = dp.manager.time_start, dp.manager.time_end
    assert start is not None and end is not None and start <= end
    first, second = sorted(workers, key=lambda w: w.time_disconnected[0])
    # the killed worker left first, while the run went on; the other one at the end
    assert first.time_disconnected[0] < second.time_disconnected[0] <= end


def _tries(dp, task_id):
    return [t for (tid, _), t in sorted(dp.tasks.items()) if tid == task_id]


def _check_tasks(dp, run):
    done = [run["make"], run["use"], *run["plain"], *run["calls"], *run["sleepers"]]
    for task in done:
        tries = _tries(dp, task.id)
        assert tries, f"task {task.id} unknown to the tool"
        last = tries[-1]
        assert last.task_status == 0, (task.id, [t.task_status for t in tries])
        measured = task.resources_measured
        assert abs(last.time_worker_start - measured.start / 1e6) <= 0.011
        assert abs(last.time_worker_end - measured.end / 1e6) <= 0.011
        assert last.when_ready <= last.when_running <= last.when_retrieved <= last.when_done
    for task in run["killed_ids"]:
        first, second = _tries(dp, task)
        assert first.task_status == 15 << 3  # its worker disconnected
        assert first.worker_entry != second.worker_entry
    for task in run["sleepers"]:
        last = _tries(dp, task.id)[-1]
        assert last.cores_requested == 1  # read from the echoed task body
        assert last.time_worker_end - last.time_worker_start >= 0.99
    stats = run["stats"]
    successful = [t for t in dp.tasks.values() if t.task_status == 0]
    assert len(successful) == stats.tasks_successful == len(done)
    assert len({t.task_id for t in dp.tasks.values()}) == stats.tasks_submitted + 1  # library
    (library,) = [t for t in dp.tasks.values() if t.is_library_task]  # seen as one, as upstream's
    assert library.task_id not in {t.task_id for t in successful}


def _check_transfer(dp, run):
    make, use = _tries(dp, run["make"].id)[-1], _tries(dp, run["use"].id)[-1]
    temp = run["temp"]
    assert temp in make.output_files and temp in use.input_files
    file = dp.files[temp]
    assert file.size_mb * 2**20 == len("hello\nmore\n")
    (transfer,) = file.indexed_transfers.values()  # one peer transfer, worker to worker
    assert transfer.source == make.worker_entry and transfer.dest_worker_entry == use.worker_entry
    assert transfer.time_stage_in is not None


def _check_csv(runtime, run):
    def rows(name):
        with open(os.path.join(runtime, "csv-files", name)) as f:
            return list(csv.DictReader(f))
    meta = {r["key"]: r["value"] for r in rows("metadata.csv")}
    assert meta["total_workers"] == "2"
    assert int(meta["successful_tasks"]) == run["stats"].tasks_successful
    sizes = {r["file_name"]: float(r["file_size_bytes"]) for r in rows("file_sizes.csv")}
    assert sizes[run["temp"]] == len("hello\nmore\n")
    assert len(rows("worker_lifetime.csv")) == 2


# ---------------------------------------------------------------- logs survive a failure
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import ndcctools.taskvine as vine
from conftest import Workers, wait_tasks
from pathlib import Path

def run(m):
    w = Workers(Path({tmp!r})).start(m)
    Path({tmp!r}, "worker.pid").write_text(str(w.pid))
    for i in range(3):
        m.submit(vine.Task(f"echo {{i}}"))
    wait_tasks(m, 3)
    print(m.runtime_directory, flush=True)
    raise RuntimeError("the user's program failed")

if {context}:
    with vine.Manager(port=0, run_info_path={info!r}) as m:
        run(m)
else:
    m = vine.Manager(port=0, run_info_path={info!r})
    run(m)
"""


@pytest.mark.parametrize("context", [True, False], ids=["with", "without"])
def test_logs_are_complete_after_an_exception(tmp_path, context):
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = textwrap.dedent(SCRIPT).format(tests=tests, tmp=str(tmp_path), context=context,
                                            info=str(tmp_path / "vine-run-info"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    try:
        assert proc.returncode == 1 and "the user's program failed" in proc.stderr
        logs = os.path.join(proc.stdout.split()[0], "vine-logs")
        with open(os.path.join(logs, "debug")) as f:
            assert f.read().splitlines()[-1].endswith("manager end")
        with open(os.path.join(logs, "transactions")) as f:
            assert " END " in f.read().splitlines()[-1]
        with open(os.path.join(logs, "performance")) as f:
            lines = f.read().splitlines()
        columns = lines[0].split()[1:]
        last = dict(zip(columns, lines[-1].split(), strict=True))
        assert last["tasks_done"] == "3" and last["tasks_successful"] == "3"
        assert last["workers_connected"] == "0" and last["workers_released"] == "1"
    finally:
        pid = tmp_path / "worker.pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
