"""What the manager keeps of a worker's ``measured`` message (pure logic, no network)."""

from types import SimpleNamespace

import pytest

from ndcctools.taskvine import protocol as p
from ndcctools.taskvine.core.monitoring import Monitoring


class Lines:
    def __init__(self):
        self.lines = []

    def write(self, flag, text):
        self.lines.append(text)


def record():
    task = SimpleNamespace(_monitor_output=None, _category="default")
    return SimpleNamespace(task_id=7, task=task, measured=None, limits_exceeded=None)


def worker(monitors=True):
    return SimpleNamespace(monitors=monitors, told_unmonitored=False, label=lambda: "w1")


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b"\xff\xfe", b'"text"'])
def test_an_unreadable_measurement_is_logged_and_ignored(payload):
    debug, rec = Lines(), record()
    Monitoring(debug).received(worker(), rec, p.Measured(7, payload))
    assert rec.measured is None and rec.limits_exceeded is None
    assert "unreadable measurement of task 7" in debug.lines[0]


def test_only_known_names_with_finite_numbers_are_kept():
    debug, rec = Lines(), record()
    summary = (b'{"memory": 30, "cores": 1.5, "disk": NaN, "bogus": 1, "wall_time": "2",'
               b' "cpu_time": true, "limits_exceeded": {"memory": 300, "x": 1}}')
    Monitoring(debug).received(worker(), rec, p.Measured(7, summary))
    assert rec.measured == {"memory": 30, "cores": 1.5}
    assert rec.limits_exceeded == {"memory": 300}
    assert "exhausted resources on w1: memory 300" in debug.lines[0]


def test_monitor_lines_go_only_to_workers_that_measure():
    debug = Lines()
    mon = Monitoring(debug)
    assert mon.for_worker(worker(), 5) is None  # off
    mon.enable(watchdog=False, time_series=True, logs_dir=None)
    assert mon.for_worker(worker(), 2.0) == p.Monitor(2.0, False, True)
    upstream = worker(monitors=False)
    assert mon.for_worker(upstream, 2.0) is None
    assert mon.for_worker(upstream, 2.0) is None
    assert len(debug.lines) == 1 and "cannot measure tasks" in debug.lines[0]
