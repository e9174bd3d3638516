"""Prometheus metrics end to end: real workers, scrapes of ``/metrics`` over HTTP, numbers
checked against ``Manager.stats``. The test thread is the manager's only thread, so between
two ``wait`` calls the manager stands still and a scrape must agree with ``m.stats`` exactly."""

import gc
import socket
import sys
import urllib.request
import weakref

import cloudpickle
import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine import prometheus
from ndcctools.taskvine.core.status import STAT_FIELDS
from tests.conftest import wait_connected, wait_tasks

parser = pytest.importorskip("prometheus_client.parser")
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def triple(x):
    return 3 * x


def scrape_text(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def scrape(port):
    """Every sample served, keyed by (sample name, frozenset of its labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parser.text_string_to_metric_families(scrape_text(port))
            for s in family.samples}


def assert_stats_match(m, samples):
    stats = m.stats
    for field in STAT_FIELDS:
        assert samples[(f"vine_{field}", frozenset())] == getattr(stats, field), field


def sample(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def new_manager(tmp_path, name):
    return vine.Manager(port=0, prometheus_port=0, run_info_path=str(tmp_path / name))


def test_scrapes_agree_with_stats_during_and_after_a_run(tmp_path, workers):
    m = new_manager(tmp_path, "run")
    port = m.prometheus_port
    assert isinstance(port, int) and port > 0
    text = scrape_text(port)
    assert "# TYPE vine_tasks_waiting gauge" in text and "# HELP vine_workers_connected" in text
    workers.start(m, cores=2, memory=1000)
    wait_connected(m, 1)
    s = scrape(port)
    assert_stats_match(m, s)
    assert sample(s, "vine_workers_connected") == 1
    assert sample(s, "vine_cores", use="total") == 2
    assert sample(s, "vine_memory_megabytes", use="total") == 1000
    (worker,) = [labels for name, labels in s if name == "vine_worker_cores"
                 and ("use", "total") in labels]
    assert sample(s, "vine_worker_cores", **dict(worker)) == 2

    lib = m.create_library_from_functions("maths", triple, add_env=False)
    m.install_library(lib)
    tasks = [vine.Task("echo ok") for _ in range(20)] + [vine.Task("exit 3") for _ in range(5)]
    tasks[0] = vine.Task("echo some bytes to bring back > out")
    tasks[0].add_output(m.declare_file(str(tmp_path / "out")), "out")
    tasks += [vine.PythonTask(triple, 4), vine.FunctionCall("maths", "triple", 5)]
    for t in tasks:
        m.submit(t)
    s = scrape(port)
    assert_stats_match(m, s)
    assert sample(s, "vine_tasks_submitted") == len(tasks)
    assert sample(s, "vine_tasks_in_state", state="waiting") == len(tasks)

    done = wait_tasks(m, 10)
    s = scrape(port)
    assert_stats_match(m, s)
    assert sample(s, "vine_tasks_done") == 10
    # the histogram counts tasks once retrieved from a worker, maybe before wait returns them
    assert sample(s, "vine_task_execution_seconds_count") == 10 + sample(
        s, "vine_tasks_in_state", state="retrieved")
    done += wait_tasks(m, len(tasks) - 10)
    assert tasks[-2].output == 12 and tasks[-1].output == 15
    assert sorted(t.exit_code for t in done) == [0] * 22 + [3] * 5

    s = scrape(port)
    assert_stats_match(m, s)
    assert sample(s, "vine_tasks_done") == len(tasks)
    assert sample(s, "vine_tasks_finished_total", result="success") == len(tasks)
    assert sample(s, "vine_library_instances") == 1
    received = sample(s, "vine_transferred_bytes_total", direction="received")
    assert received == m.stats.bytes_received >= len("some bytes to bring back\n")
    assert sample(s, "vine_transferred_bytes_total", direction="sent") == m.stats.bytes_sent
    assert sample(s, "vine_worker_tasks_done_total", **{
        k: v for k, v in worker if k != "use"}) == len(tasks)
    assert_histogram_counts(s, len(tasks))

    m.close()
    assert m.prometheus_port is None
    with pytest.raises(OSError):  # the port is closed, not just idle
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def assert_histogram_counts(samples, n):
    buckets = sorted((float(dict(labels)["le"]), value) for (name, labels), value
                     in samples.items() if name == "vine_task_execution_seconds_bucket")
    counts = [value for _, value in buckets]
    assert counts == sorted(counts) and len(counts) > 5  # cumulative, as Prometheus wants
    assert buckets[-1] == (float("inf"), n)
    assert sample(samples, "vine_task_execution_seconds_count") == n
    assert 0 < sample(samples, "vine_task_execution_seconds_sum") < 60 * n


def test_two_managers_serve_their_own_numbers(tmp_path, workers):
    busy, idle = new_manager(tmp_path, "busy"), new_manager(tmp_path, "idle")
    try:
        assert busy.prometheus_port != idle.prometheus_port
        workers.start(busy)
        for _ in range(3):
            busy.submit(vine.Task("true"))
        wait_tasks(busy, 3)
        idle.submit(vine.Task("true"))
        for m, done, connected in ((busy, 3, 1), (idle, 0, 0)):
            s = scrape(m.prometheus_port)
            assert_stats_match(m, s)
            assert sample(s, "vine_tasks_done") == done
            assert sample(s, "vine_workers_connected") == connected
            assert sample(s, "vine_task_execution_seconds_count") == done
        assert sample(scrape(idle.prometheus_port), "vine_tasks_submitted") == 1
    finally:
        busy.close()
        idle.close()


@pytest.mark.parametrize("port", [-1, 65536, True, "9100", 1.5])
def test_invalid_ports_are_refused(tmp_path, port):
    with pytest.raises(ValueError, match="prometheus_port"):
        vine.Manager(port=0, prometheus_port=port, run_info_path=str(tmp_path))


def test_a_port_in_use_is_a_runtime_error_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=str(port)):
            vine.Manager(port=0, prometheus_port=port, run_info_path=str(tmp_path))


def test_without_prometheus_client_the_error_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(prometheus, "_MISSING", ImportError("No module named 'prometheus_client'"))
    with pytest.raises(ImportError, match="prometheus_client"):
        vine.Manager(port=0, prometheus_port=0, run_info_path=str(tmp_path))


def test_close_is_idempotent_and_a_collected_manager_serves_nothing(tmp_path):
    m = vine.Manager(port=0, run_info_path=str(tmp_path))
    server = prometheus.start(weakref.proxy(m), 0, "127.0.0.1")
    try:
        assert sample(scrape(server.port), "vine_tasks_done") == 0
        m.close()
        del m
        gc.collect()
        assert scrape(server.port) == {}
    finally:
        port = server.port
        server.close()
        server.close()
    assert server.port is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
