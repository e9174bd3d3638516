"""Prometheus metrics of a running manager (api.md §12.7): ``Manager(prometheus_port=N)``.

    scraper --GET /metrics--> prometheus_client's HTTP server (its own threads)
                                  |  registry.collect()
                              ManagerCollector --observe.*--> live Manager (read only)

Nothing is kept up to date: each scrape asks ``ManagerCollector.collect`` for the numbers,
which it reads from the manager through ``observe`` (readers safe to call from another
thread) and turns into metric families. The manager's own thread does no work for it.
Each manager has a private ``CollectorRegistry``, so several managers in one process serve
their own numbers and nothing lands in prometheus_client's global registry. The collector
holds the manager through the weak proxy the manager hands it; ``close()`` stops the
server and closes its listening socket.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import observe

try:  # an optional dependency: only Manager(prometheus_port=...) needs it
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    _MISSING: ImportError | None = None
except ImportError as e:
    _MISSING = e

if TYPE_CHECKING:
    from .manager import Manager

#: resource -> (metric name suffix, unit in HELP), as the workers report them
RESOURCES = {"cores": ("cores", "cores"), "memory": ("memory_megabytes", "MB"),
             "disk": ("disk_megabytes", "MB"), "gpus": ("gpus", "GPUs")}
#: per-worker gauges besides resources: observe.workers key -> (metric suffix, HELP)
WORKER_GAUGES = {"tasks_running": ("tasks_running", "tasks running on the worker"),
                 "cache_bytes": ("cache_bytes", "bytes in the worker's cache"),
                 "cache_objects": ("cache_objects", "files in the worker's cache")}


class PrometheusServer:
    """A running ``/metrics`` endpoint: ``port`` while it serves, ``close()`` to stop."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._lock = threading.Lock()
        self.port: int | None = server.server_port

    def close(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        with self._lock:
            server, self._server = self._server, None
            self.port = None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5)


def start(manager: Manager, port: int, host: str = "0.0.0.0") -> PrometheusServer:
    """Serve ``manager``'s metrics on ``host:port`` (port 0: any free port).

    Raises:
        ImportError: prometheus_client is not installed.
        RuntimeError: the port cannot be bound.
    """
    if _MISSING is not None:
        raise ImportError("Manager(prometheus_port=...) needs the prometheus_client package "
                          "(pip install prometheus_client)") from _MISSING
    observe.watch(manager)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ManagerCollector(manager))
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as e:
        raise RuntimeError(f"could not serve Prometheus metrics on port {port}: {e}") from e
    return PrometheusServer(server, thread)


class ManagerCollector:
    """Builds every metric from the live manager at each scrape."""

    def __init__(self, manager: Manager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        m = self._manager
        try:
            stats = observe.consistent(lambda: m.stats)
            overview, workers = observe.overview(m), observe.workers(m)
            finished = observe.finished(m)
        except ReferenceError:  # the manager is gone: nothing to report
            return
        yield from stat_gauges(stats)
        yield from run_metrics(overview, finished)
        yield from resource_gauges(workers)


def stat_gauges(stats: Any) -> Iterator[Metric]:
    """``vine_<field>``: one gauge per numeric field of ``Manager.stats``."""
    for field in stats.__slots__:
        value = getattr(stats, field)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield GaugeMetricFamily(f"vine_{field}", f"Manager.stats.{field} (api.md 12.3)",
                                    value=value)


def run_metrics(overview: dict[str, Any], finished: dict[str, Any]) -> Iterator[Metric]:
    """Tasks by state and by result, bytes moved, libraries, execution times."""
    states = GaugeMetricFamily("vine_tasks_in_state", "tasks the manager holds, by state",
                               labels=["state"])
    for state, n in overview["tasks_by_state"].items():
        if state != "returned":  # cumulative: that is vine_tasks_done
            states.add_metric([state], n)
    yield states
    results = CounterMetricFamily("vine_tasks_finished", "tasks retrieved from workers, by result",
                                  labels=["result"])
    for result, n in sorted(finished["results"].items()):
        results.add_metric([result], n)
    yield results
    moved = CounterMetricFamily("vine_transferred_bytes", "bytes between manager and workers",
                                labels=["direction"])
    moved.add_metric(["sent"], overview["bytes_sent"])
    moved.add_metric(["received"], overview["bytes_received"])
    yield moved
    yield GaugeMetricFamily("vine_library_instances", "library instances on workers",
                            value=overview["library_instances"])
    yield GaugeMetricFamily("vine_transfers_in_flight", "file transfers to workers under way",
                            value=overview["transfers_in_flight"])
    yield execution_histogram(finished)


def execution_histogram(finished: dict[str, Any]) -> Metric:
    """``vine_task_execution_seconds``: time on the worker of the tasks retrieved so far."""
    buckets, running = [], 0
    for bound, n in finished["buckets"]:
        running += n
        buckets.append(("+Inf" if bound is None else repr(float(bound)), running))
    return HistogramMetricFamily("vine_task_execution_seconds",
                                 "execution time on the worker of the tasks retrieved",
                                 buckets=buckets, sum_value=finished["seconds_total"])


def resource_gauges(workers: list[dict[str, Any]]) -> Iterator[Metric]:
    """Cores, memory, disk and GPUs in use and in total, for the run and per worker."""
    labels = ["worker", "hostname"]
    for kind, (suffix, unit) in RESOURCES.items():
        whole = GaugeMetricFamily(f"vine_{suffix}", f"{unit} of connected workers",
                                  labels=["use"])
        each = GaugeMetricFamily(f"vine_worker_{suffix}", f"{unit} of each worker",
                                 labels=[*labels, "use"])
        for use in ("inuse", "total"):
            whole.add_metric([use], sum(w[f"{kind}_{use}"] for w in workers))
            for w in workers:
                each.add_metric([w["addrport"], w["hostname"], use], w[f"{kind}_{use}"])
        yield whole
        yield each
    for key, (suffix, text) in WORKER_GAUGES.items():
        gauge = GaugeMetricFamily(f"vine_worker_{suffix}", text, labels=labels)
        for w in workers:
            gauge.add_metric([w["addrport"], w["hostname"]], w[key])
        yield gauge
    done = CounterMetricFamily("vine_worker_tasks_done", "tasks each worker has finished",
                               labels=labels)
    for w in workers:
        done.add_metric([w["addrport"], w["hostname"]], w["tasks_done"])
    yield done
