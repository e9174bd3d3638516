"""Every Manager method api.md names exists and is real; the smaller ones behave as written."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine.core import runinfo
from tests.conftest import wait_connected

API = Path(__file__).resolve().parents[3] / "shared" / "spec" / "api.md"
MANAGER_SECTIONS = ("## 3.", "### 3.", "### 4.2", "## 6.", "### 6.", "### 8.1", "### 8.2",
                    "### 9.2", "### 9.3", "## 10.", "### 10.", "## 11.", "## 12.", "### 12.",
                    "## 14.", "## 15.")
NOT_METHODS = {"ceil", "max", "fn", "completed", "successful", "submit_finalize"}  # prose, Task
NOT_YET = {"enable_monitoring"}  # issue 13: monitoring on the worker comes next


def manager_methods_in_api() -> set[str]:
    text = API.read_text()
    names: set[str] = set()
    for section in re.split(r"\n(?=##+ )", text):
        if section.startswith(MANAGER_SECTIONS):
            names |= set(re.findall(r"`(?:m\.)?([a-z_]+)\(", section))
    return names - NOT_METHODS


def test_every_manager_method_in_the_api_exists_and_is_not_a_placeholder():
    names = manager_methods_in_api()
    assert len(names) > 70  # the parse found the tables
    missing = sorted(n for n in names - NOT_YET if not hasattr(vine.Manager, n))
    assert missing == []
    placeholders = sorted(n for n in names - NOT_YET if callable(getattr(vine.Manager, n))
                          and "NotImplementedError" in inspect.getsource(getattr(vine.Manager, n)))
    assert placeholders == []


def test_set_runtime_info_path_places_later_managers(tmp_path, monkeypatch):
    monkeypatch.setattr(runinfo, "default_path", runinfo.default_path)  # restored after
    with vine.Manager(port=0, run_info_path=str(tmp_path / "first")) as m:
        m.set_runtime_info_path(str(tmp_path / "elsewhere"))
        assert m.runtime_directory.startswith(str(tmp_path / "first"))
        with pytest.raises(ValueError, match="non-empty"):
            m.set_runtime_info_path("")
    with vine.Manager(port=0) as later:
        assert later.runtime_directory.startswith(str(tmp_path / "elsewhere"))
        assert later.application_info() is None


def test_slow_tasks_move_to_another_worker_and_a_slow_worker_is_dropped(manager, workers,
                                                                        tmp_path):
    m = manager
    m.enable_disconnect_slow_workers(3)
    m.tune("option-blocklist-slow-workers-timeout", 1)  # all workers here share one host
    fast = workers.start(m, cores=1)
    wait_connected(m, 1)
    for _ in range(4):  # the category's average: 0.3 s
        m.submit(vine.Task("sleep 0.3"))
    while not m.empty():
        m.wait(5)
    slow = workers.start(m, cores=2)  # the workspace name tells the task where it runs
    wait_connected(m, 2)
    marker = str(slow.workspace)
    for i in range(3):
        t = vine.Task(f'case "$PWD" in {marker}*) sleep 60;; esac; echo done {i}')
        t.set_cores(1)
        t.set_scheduler("worst")  # the bigger (slow) worker first
        m.submit(t)
    done = []
    while len(done) < 3:
        t = m.wait(30)
        assert t is not None, "a slow task never came back"
        done.append(t)
    assert all(t.successful() for t in done)
    assert sorted(t.std_output for t in done) == ["done 0\n", "done 1\n", "done 2\n"]
    assert m.stats.workers_slow == 1
    assert m.stats.workers_connected == 1 and fast.poll() is None
    m._debug.flush()
    with open(f"{m.logging_directory}/debug") as f:
        assert "was slow twice: disconnected, host blocked for 1s" in f.read()
    with pytest.raises(TypeError, match="multiplier"):
        m.enable_disconnect_slow_workers("3")
