"""Benchmark (not a test): a chunked dask.array reduction of about N tasks, on 2 cores.

The graph is ``((x + 1) ** 2).sum(split_every=8)`` over ``x = da.arange(...)`` cut into
chunks of 10 elements, as many chunks as make about ``--tasks`` tasks after dask's own
optimisation. It runs through:

* ``DaskVine`` in ``function-calls`` mode (one worker of 2 cores, one library of 2 slots);
* ``DaskVine`` in ``tasks`` mode (same worker; a PythonTask per node, forked from the
  worker's fork server, which imports dask and numpy once the first tasks name them; give
  it fewer tasks with ``--tasks-mode-tasks``);
* ``distributed.LocalCluster`` with 2 single-threaded worker processes (same cores).

Each run is timed from ``dask.compute`` to its result (workers already connected and warm:
a small graph runs first) and checked against the synchronous scheduler's answer. Prints
one JSON line per run. Usage: ``python benchmarks/dask_graph.py [--tasks 10000]
[--tasks-mode-tasks 1000] [--skip tasks,distributed]``.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import dask
import dask.array as da
from common import cpu, start_workers, stop_workers
from dask._task_spec import Task

from ndcctools.taskvine.dask_executor import DaskVine


def graph(tasks: int):
    """The reduction, with about ``tasks`` tasks (its exact count is returned too: the nodes
    of the optimised graph that run a function, not its aliases)."""
    chunks = max(2, int(tasks * 7 / 8))
    x = da.arange(chunks * 10, chunks=10)
    expr = ((x + 1) ** 2).sum(split_every=8)
    dsk = dask.base.collections_to_expr([expr]).optimize().__dask_graph__()
    return expr, sum(1 for node in dsk.values() if isinstance(node, Task))


def report(label: str, n: int, wall: float, manager_cpu: float | None = None) -> None:
    line = {"bench": "dask_graph", "scheduler": label, "tasks": n, "seconds": round(wall, 2),
            "tasks_per_s": round(n / wall, 1), "load1": os.getloadavg()[0]}
    if manager_cpu is not None:
        line["manager_cpu_ms_per_task"] = round(manager_cpu / n * 1000, 3)
    print(json.dumps(line), flush=True)


def timed(label: str, expr, n: int, want, compute) -> None:
    t0, c0 = time.perf_counter(), cpu()
    (got,) = compute(expr)
    wall, mcpu = time.perf_counter() - t0, cpu() - c0
    if got != want:
        raise SystemExit(f"{label}: wrong answer {got!r}, expected {want!r}")
    report(label, n, wall, mcpu if label.startswith("daskvine") else None)


def run_daskvine(work: str, sizes: dict, skip: set) -> None:
    with DaskVine(port=0, run_info_path=os.path.join(work, "ri")) as m:
        (worker,) = start_workers(m, work)
        for mode in ("function-calls", "tasks"):
            if mode in skip:
                continue
            expr, n = graph(sizes[mode])
            want = expr.compute(scheduler="sync")
            opts = {"task_mode": mode, "progress_disable": True, "resources": {"cores": 1},
                    "lib_resources": {"cores": 2, "slots": 2}}
            small, _ = graph(50)  # warm up: workers connected, library started
            dask.compute(small, scheduler=m.get, **opts)
            timed(f"daskvine-{mode}", expr, n, want,
                  lambda e, o=opts: dask.compute(e, scheduler=m.get, **o))
    stop_workers([worker])


def run_distributed(tasks: int) -> None:
    from distributed import Client, LocalCluster
    expr, n = graph(tasks)
    want = expr.compute(scheduler="sync")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        small, _ = graph(50)
        client.compute(small).result()
        timed("distributed-localcluster", expr, n, want,
              lambda e: dask.compute(e, scheduler=client.get))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--tasks-mode-tasks", type=int, default=1000)
    ap.add_argument("--skip", default="", help="comma-separated: function-calls,tasks,"
                                                "distributed")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    sizes = {"function-calls": args.tasks, "tasks": args.tasks_mode_tasks}
    with tempfile.TemporaryDirectory(prefix="vine-bench-", ignore_cleanup_errors=True) as work:
        run_daskvine(work, sizes, skip)
    if "distributed" not in skip:
        run_distributed(args.tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
