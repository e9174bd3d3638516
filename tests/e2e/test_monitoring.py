"""End-to-end: ``enable_monitoring`` (api.md §9.3). Real workers measure real processes
(memory, cores, disk, processes, I/O), the watchdog stops a task over its memory, samples
go to ``vine-logs/time-series``, and automatic categories size tasks from measurements."""

import gzip
import json
import random
import sys

import pytest

import ndcctools.taskvine as vine
from tests.conftest import wait_connected, wait_tasks

PY = sys.executable


def sized(cmd, cores=1, memory=1000, disk=1000):
    t = vine.Task(cmd)
    t.set_cores(cores)
    t.set_memory(memory)
    t.set_disk(disk)
    return t


def test_measurements_of_memory_cores_disk_and_processes(manager, workers, tmp_path):
    m = manager
    assert m.enable_monitoring() == 1
    workers.start(m, cores=4, memory=4000, disk=4000)
    wait_connected(m, 1)
    hog = sized(f"{PY} -c \"b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); "
                f"import time; time.sleep(1.5)\"")
    # each spinner burns 2 s of CPU, however long the machine takes to give it that
    spin = f"{PY} -c \"import time\nwhile time.process_time() < 2: pass\""
    busy = sized(f"{spin} & {spin} & wait", cores=2)
    disk = sized("head -c 52428800 /dev/zero > big && sleep 1.2 && rm big")
    tiny = sized("true")
    by_id = {m.submit(t): t for t in (hog, busy, disk, tiny)}
    done = {t.id: t for t in wait_tasks(m, 4)}
    assert set(done) == set(by_id)
    for t in done.values():
        assert t.successful(), (t.command, t.result, t.std_output)
        assert t.limits_exceeded is None
    r = hog.resources_measured
    assert 300 <= r.memory <= 400, r
    assert r.virtual_memory >= r.memory
    r = busy.resources_measured
    assert r.cpu_time >= 3.9 and r.max_concurrent_processes >= 3, r
    # two busy processes: about 2 cores, or what a loaded machine gave them (CPU / wall)
    assert min(1.5, 0.9 * r.cpu_time / r.wall_time) <= r.cores <= 2.6, r
    assert r.total_processes >= 3
    r = disk.resources_measured
    assert 50 <= r.disk <= 60, r
    assert r.bytes_written >= 49, r
    r = tiny.resources_measured
    assert r.memory >= 1 and r.wall_time < 1 and r.exit_status == 0 and r.cores >= 0
    # the transaction log carries the measurement of each task
    txn = (tmp_path / "vine-run-info" / "most-recent" / "vine-logs" / "transactions").read_text()
    line = next(x for x in txn.splitlines() if f"TASK {hog.id} RETRIEVED" in x)
    assert json.loads(line.split("  ")[-1].split(" ", 1)[1])["memory"][0] >= 300


def test_the_watchdog_stops_a_task_over_its_memory(manager, workers):
    m = manager
    m.enable_monitoring(watchdog=True)
    m.tune("monitor-interval", 1)
    workers.start(m, cores=2, memory=2000, disk=2000)
    wait_connected(m, 1)
    t = sized(f"{PY} -c \"b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); "
              f"import time; time.sleep(60)\"", memory=100)
    t.set_retries(3)  # not retried all the same: the fixed category would not grow it
    ok = sized("true", memory=100)
    m.submit(t)
    m.submit(ok)
    done = {x.id: x for x in wait_tasks(m, 2, timeout=40)}
    assert done[ok.id].successful()
    assert t.result == "resource exhaustion", (t.result, t.std_output)
    assert t.limits_exceeded is not None and t.limits_exceeded.memory >= 100
    assert t.limits_exceeded.cores == -1  # only what went over is named
    assert t.resources_measured.wall_time < 30  # stopped, not left to sleep
    assert m.stats.tasks_exhausted_attempts == 1
    assert m.stats.time_workers_execute_exhaustion > 0


def test_a_peak_between_samples_is_caught_at_the_end(manager, workers):
    """No sample sees it: the kernel's peak of the tree does, when the task ends. Samples
    come about 0.25, 0.75, 1.75 and 3.75 s after the start (worker/monitor.py); this task
    holds 250 MB only around 2.2 s and ends before 3.75 s."""
    m = manager
    m.enable_monitoring()
    workers.start(m, cores=2, memory=2000, disk=2000)
    wait_connected(m, 1)
    t = sized(f"{PY} -c \"import time; time.sleep(2.2); b = bytearray(250 << 20); "
              f"b[::4096] = b'x' * len(b[::4096]); del b; time.sleep(0.5)\"", memory=100)
    t.set_retries(0)
    m.submit(t)
    (t,) = wait_tasks(m, 1)
    assert t.result == "resource exhaustion"
    assert t.limits_exceeded.memory >= 250


def test_without_the_watchdog_a_task_over_its_memory_runs_to_the_end(manager, workers):
    m = manager
    m.enable_monitoring(watchdog=False)
    workers.start(m, cores=2, memory=2000, disk=2000)
    wait_connected(m, 1)
    t = sized(f"{PY} -c \"b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); "
              f"print('finished')\"", memory=50)
    m.submit(t)
    (t,) = wait_tasks(m, 1)
    assert t.successful() and t.std_output == "finished\n"
    assert t.resources_measured.memory >= 200 and t.limits_exceeded is None


def test_time_series_and_monitor_output_are_written(manager, workers, tmp_path):
    m = manager
    m.enable_monitoring(time_series=True)
    m.tune("monitor-interval", 0.5)
    workers.start(m, cores=2, memory=2000, disk=2000)
    wait_connected(m, 1)
    t = sized("sleep 2")
    t.set_monitor_output(str(tmp_path / "summaries"))
    m.submit(t)
    (t,) = wait_tasks(m, 1)
    assert t.successful()
    series = (tmp_path / "vine-run-info" / "most-recent" / "vine-logs" / "time-series"
              / f"vine-task-{t.id}.series.gz")
    lines = gzip.open(series, "rt").read().splitlines()
    header = lines[0].split()
    assert header[:3] == ["#", "wall_clock", "cpu_time"] and "memory" in header
    rows = [[float(v) for v in line.split()] for line in lines[1:]]
    assert len(rows) >= 3  # 0.25 s, then every 0.5 s over 2 s
    clocks = [r[0] for r in rows]
    assert clocks == sorted(clocks) and all(r[header.index("memory") - 1] >= 1 for r in rows)
    summary = json.loads((tmp_path / "summaries" / f"vine-task-{t.id}.summary").read_text())
    assert summary["task_id"] == t.id and summary["wall_time"] >= 2


def test_python_tasks_and_function_calls_with_monitoring(manager, workers):
    m = manager
    m.enable_monitoring()
    workers.start(m, cores=2, memory=2000, disk=2000)
    wait_connected(m, 1)
    t = vine.PythonTask(pow, 2, 10)
    t.set_cores(1)
    t.set_memory(1000)
    m.submit(t)
    (t,) = wait_tasks(m, 1)
    assert t.successful() and t.output == 1024
    assert t.resources_measured.memory >= 5 and t.resources_measured.cpu_time >= 0
    lib = m.create_library_from_functions("mon", pow, add_env=False)
    m.install_library(lib)
    call = vine.FunctionCall("mon", "pow", 3, 3)
    m.submit(call)
    (call,) = wait_tasks(m, 1)
    assert call.successful() and call.output == 27  # calls run unmeasured in their library


@pytest.mark.slow
def test_max_throughput_sizes_two_hundred_mixed_tasks_from_what_they_use(manager, workers):
    """200 tasks of three sizes in an automatic category: once measured, later tasks get
    allocations close to what they use, and none is lost (those that outgrow a guess are
    retried at the category maximum)."""
    m = manager
    m.enable_monitoring()
    m.tune("force-proportional-resources", 0)
    m.tune("category-steady-n-tasks", 10)
    workers.start(m, cores=4, memory=4000, disk=4000)
    wait_connected(m, 1)
    m.set_category_mode("mixed", "max throughput")
    m.set_category_resources_max("mixed", {"cores": 1, "memory": 1000, "disk": 500})
    rng = random.Random(5)
    sizes = [rng.choice((40, 80, 120)) for _ in range(200)]
    for mb in sizes:
        t = vine.Task(f"{PY} -c \"b = bytearray({mb} << 20); b[::4096] = b'x' * "
                      f"len(b[::4096])\"")
        t.set_category("mixed")
        m.submit(t)
    done = wait_tasks(m, 200, timeout=240)
    assert all(t.successful() for t in done), [
        (t.id, t.result_string) for t in done if not t.successful()]
    measured = [t.resources_measured.memory for t in done]
    assert max(measured) < 200 and min(measured) >= 40
    late = sorted(done, key=lambda t: t.id)[-50:]
    allocated = [t.resources_allocated.memory for t in late]
    # the category max is 1000 MB: measured tasks shrink it to their size
    assert max(allocated) <= 2 * max(measured), allocated
    s = m.stats_category("mixed")
    assert s.tasks_done == 200 and s.max_seen["memory"] == max(measured)
    assert 0 < s.first_allocation["memory"] < 1000
