"""The worker's task meter on real processes (no manager)."""

import subprocess
import sys
import time

from ndcctools.taskvine import protocol as p
from ndcctools.taskvine.worker.monitor import SCAN_ALL_FROM, Meters, TaskMeter, Usage
from tests.conftest import wait_until


def test_trees_are_the_same_found_one_by_one_or_in_one_pass():
    procs = [subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
             for _ in range(SCAN_ALL_FROM)]
    try:
        roots = [proc.pid for proc in procs]
        wait_until(lambda: all(len(Meters.trees([r])[r]) == 3 for r in roots))
        one_pass = Meters.trees(roots)
        for r in roots:
            alone = Meters.trees([r])[r]
            assert alone[0].pid == r and one_pass[r][0].pid == r
            assert {x.pid for x in alone} == {x.pid for x in one_pass[r]}
        assert Meters.trees([2 ** 22 + 7]) == {2 ** 22 + 7: []}  # no such process
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_sample_sees_the_tree_and_the_watchdog_its_memory():
    code = "b = bytearray(120 << 20); b[::4096] = b'x' * len(b[::4096]); import time; " \
           "print('ready', flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        start = time.time()
        meter = TaskMeter(1, p.Monitor(1.0, True, True), 100, start - 1)
        over = meter.take(time.time(), Meters.trees([proc.pid])[proc.pid], 5 << 20)
        assert over and meter.exceeded["memory"] >= 120
        summary = meter.summary(Usage(0.5, 10, 0, 0), time.time(), None, 0)
        assert summary["memory"] >= 120 and summary["disk"] == 5
        assert summary["limits_exceeded"] == {"memory": meter.exceeded["memory"]}
        assert summary["series"]["rows"][0][summary["series"]["columns"].index("memory")] \
            >= 120
        assert summary["cpu_time"] >= 0.5 and summary["max_concurrent_processes"] == 1
    finally:
        proc.kill()
        proc.wait()


def test_a_task_never_sampled_is_judged_by_the_kernels_peak():
    """A task that ends before its first sample: ``wait4``'s largest resident set (in KB)
    is its memory, and the watchdog's verdict."""
    meter = TaskMeter(2, p.Monitor(5.0, True, False), 100, time.time() - 0.1)
    summary = meter.summary(Usage(0.08, 250 * 1024, 0, 8), time.time(), 0, 0)
    assert summary["memory"] == 250 and summary["limits_exceeded"] == {"memory": 250}
    assert summary["bytes_written"] == round(8 * 512 / (1 << 20), 6)  # blocks of 512 bytes, in MB
    unwatched = TaskMeter(3, p.Monitor(5.0, False, False), 100, time.time() - 0.1)
    assert "limits_exceeded" not in unwatched.summary(Usage(0.08, 250 * 1024, 0, 0),
                                                      time.time(), 0, 0)
