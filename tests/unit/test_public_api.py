"""The import surface of api.md §1, the constants of §2 and the utils of §19."""

import socket

import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine import cvine, futures, utils
from ndcctools.taskvine.results import result_string

RESULTS = {
    "SUCCESS": (0, "success"), "INPUT_MISSING": (1, "input missing"),
    "OUTPUT_MISSING": (2, "output missing"), "STDOUT_MISSING": (4, "stdout missing"),
    "SIGNAL": (8, "signal"), "RESOURCE_EXHAUSTION": (16, "resource exhaustion"),
    "MAX_END_TIME": (24, "max end time"), "UNKNOWN": (32, "unknown"),
    "FORSAKEN": (40, "forsaken"), "MAX_RETRIES": (48, "max retries"),
    "MAX_WALL_TIME": (56, "max wall time"), "RMONITOR_ERROR": (64, "monitor error"),
    "OUTPUT_TRANSFER_ERROR": (72, "output transfer error"),
    "FIXED_LOCATION_MISSING": (80, "fixed location missing"), "CANCELLED": (88, "cancelled"),
    "LIBRARY_EXIT": (96, "library exit"), "SANDBOX_EXHAUSTION": (104, "sandbox exhaustion"),
    "MISSING_LIBRARY": (112, "missing library"),
}

CONSTANTS = {
    "DEFAULT_PORT": 9123, "RANDOM_PORT": 0, "WAIT_FOREVER": -1,
    "TRANSFER_ALWAYS": 0, "FIXED_LOCATION": 1, "WATCH": 2, "FAILURE_ONLY": 4,
    "SUCCESS_ONLY": 8, "RETRACT_ON_RESET": 16, "MOUNT_SYMLINK": 32, "MOUNT_MKDIR": 64,
    "CACHE_LEVEL_TASK": 0, "CACHE_LEVEL_WORKFLOW": 1, "CACHE_LEVEL_WORKER": 2,
    "CACHE_LEVEL_FOREVER": 3, "PEER_NOSHARE": 1, "UNLINK_WHEN_DONE": 2,
    "SCHEDULE_UNSET": 0, "SCHEDULE_FCFS": 1, "SCHEDULE_FILES": 2, "SCHEDULE_TIME": 3,
    "SCHEDULE_RAND": 4, "SCHEDULE_WORST": 5, "SCHEDULE_DISK": 6,
    "ALLOCATION_MODE_FIXED": 0, "ALLOCATION_MODE_MAX": 1, "ALLOCATION_MODE_MIN_WASTE": 2,
    "ALLOCATION_MODE_MAX_THROUGHPUT": 3, "ALLOCATION_MODE_GREEDY_BUCKETING": 4,
    "ALLOCATION_MODE_EXHAUSTIVE_BUCKETING": 5, "ALLOCATION_MODE_DET_GREEDY_BUCKETING": 6,
    "ALLOCATION_MODE_DET_EXHAUSTIVE_BUCKETING": 7, "ALLOCATION_MODE_QUANTIZED_BUCKETING": 8,
    "FILE": 1, "URL": 2, "TEMP": 3, "BUFFER": 4, "MINI_TASK": 5,
    "TASK_INITIAL": 0, "TASK_READY": 1, "TASK_RUNNING": 2, "TASK_WAITING_RETRIEVAL": 3,
    "TASK_RETRIEVED": 4, "TASK_DONE": 5,
}


def test_all_lists_exactly_the_public_names():
    assert sorted(vine.__all__) == sorted([
        "Manager", "File", "Factory", "LibraryTask", "FunctionCall", "FuturesExecutor",
        "FuturePythonTask", "FutureFunctionCall", "VineFuture", "Task", "PythonTask",
        "PythonTaskNoResult", "DaskVine", "DaskVineDag"])
    for name in vine.__all__:
        assert getattr(vine, name).__name__ == name
    assert isinstance(vine.__version__, str) and vine.__version__
    assert issubclass(vine.DaskVineWarning, UserWarning)
    assert vine.futures is futures and vine.utils is utils and vine.cvine is cvine


@pytest.mark.parametrize("name,value", sorted(CONSTANTS.items()))
def test_constant_values(name, value):
    assert getattr(cvine, "VINE_" + name) == value
    assert getattr(vine, "VINE_" + name) == value


@pytest.mark.parametrize("name,expected", sorted(RESULTS.items()))
def test_result_constants_and_strings(name, expected):
    value, text = expected
    assert getattr(cvine, "VINE_RESULT_" + name) == value
    assert result_string(value) == text
    assert utils.get_c_constant("result_" + name.lower()) == value


def test_get_c_constant_rejects_unknown_names():
    with pytest.raises(AttributeError):
        utils.get_c_constant("no_such_constant")


def test_set_port_range_writes_the_environment_and_port_zero_honours_it(monkeypatch, tmp_path):
    monkeypatch.delenv("VINE_PORT", raising=False)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    free = probe.getsockname()[1]
    probe.close()
    monkeypatch.setenv("TCP_LOW_PORT", "1")  # restored by monkeypatch afterwards
    monkeypatch.setenv("TCP_HIGH_PORT", "1")
    utils.set_port_range((free, free))
    assert (utils.os.environ["TCP_LOW_PORT"], utils.os.environ["TCP_HIGH_PORT"]) == (
        str(free), str(free))
    with vine.Manager(port=0, run_info_path=str(tmp_path)) as m:
        assert m.port == free


@pytest.mark.parametrize("bad,error", [((5, 4), TypeError), ("9123", TypeError),
                                       (True, TypeError), ((1, 70000), ValueError)])
def test_set_port_range_rejects_bad_ranges(bad, error, monkeypatch):
    monkeypatch.delenv("TCP_LOW_PORT", raising=False)
    with pytest.raises(error):
        utils.set_port_range(bad)
    assert "TCP_LOW_PORT" not in utils.os.environ


def test_vine_port_overrides_the_argument(monkeypatch, tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    free = probe.getsockname()[1]
    probe.close()
    monkeypatch.setenv("VINE_PORT", str(free))
    with vine.Manager(port=[1, 2], run_info_path=str(tmp_path)) as m:
        assert m.port == free


def test_load_variable_from_library_names_the_missing_variable():
    with pytest.raises(KeyError, match="no_such_model"):
        utils.load_variable_from_library("no_such_model")


def test_futures_module_surface():
    assert futures.RESULT_PENDING == "result_pending"
    assert futures.FIRST_COMPLETED == "FIRST_COMPLETED"
    result = futures.wait([])
    assert result.done == set() and result.not_done == set()
    assert list(futures.as_completed([])) == []
    assert issubclass(futures.VineFuture, __import__("concurrent.futures").futures.Future)


def test_category_and_scheduler_methods_check_their_arguments(tmp_path):
    with vine.Manager(port=0, run_info_path=str(tmp_path)) as m:
        assert m.set_category_mode("c", "min_waste") == 1
        assert m.set_category_mode(None, cvine.VINE_ALLOCATION_MODE_MAX) == 1
        with pytest.raises(ValueError, match="unknown category mode 'least'"):
            m.set_category_mode("c", "least")
        m.set_category_first_allocation_guess("c", {"memory": 100})
        m.set_category_autolabel_resource("c", "memory", False)
        with pytest.raises(ValueError, match="unknown resource"):
            m.set_category_autolabel_resource("c", "speed", True)
        m.set_category_max_concurrent("c", 2)
        s = m.stats_category("c")
        assert s.mode == "min waste" and s.tasks_waiting == 0 and s.first_allocation_count == 0
        assert m.stats_category("nothing").tasks_done == 0
        for name in ("files", "time", "rand", "worst", "disk", "fcfs"):
            m.set_scheduler(name)
        m.set_scheduler(cvine.VINE_SCHEDULE_WORST)
        with pytest.raises(ValueError, match="unknown scheduler 'fastest'"):
            m.set_scheduler("fastest")
