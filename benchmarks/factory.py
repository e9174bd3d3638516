"""Benchmark (not a test): how fast a factory's pool follows demand.

Part 1 (local): ``Factory("local", min_workers=0, max_workers=8)`` started with 200 tasks
waiting: seconds from ``start()`` to 8 connected workers, the largest pool seen (it must
never pass max), seconds to run the tasks, and seconds from the queue emptying until the
pool is back at min (the workers' idle timeout, ``--timeout``, default 8 s for local).
Part 2 (``--slurm``): 100 tasks of ``sleep 1`` through a Slurm factory with at most 4 workers
(Slurm must be running: ``tests/systems/slurm.sh start``); total seconds and tasks/s.
Prints one JSON line per result. Usage: ``python benchmarks/factory.py [--slurm]``.
"""

import argparse
import json
import os
import tempfile
import time

import ndcctools.taskvine as vine


def serve_until(m: vine.Manager, predicate, limit: float, seen: list[int]) -> float:
    """Seconds until ``predicate()``, serving the manager meanwhile; ``seen`` gathers the
    pool sizes observed."""
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > limit:
            raise SystemExit(f"not reached within {limit}s")
        m.wait(0.05)
        seen.append(m.stats.workers_connected)
    return time.perf_counter() - t0


def pool(batch: str, m: vine.Manager, work: str, n_max: int, timeout: int | None):
    f = vine.Factory(batch, manager_host_port=f"127.0.0.1:{m.port}",
                     log_file=os.path.join(work, f"{batch}-factory.log"))
    f.min_workers, f.max_workers, f.scratch_dir = 0, n_max, work
    f.cores, f.memory, f.disk = 1, 500, 1000
    if timeout is not None:
        f.timeout = timeout
    return f


def local_part(work: str, tasks: int, n_max: int, sleep: float) -> None:
    with vine.Manager(port=0, run_info_path=os.path.join(work, "runs")) as m:
        for _ in range(tasks):
            m.submit(vine.Task(f"sleep {sleep}"))
        seen: list[int] = []
        f = pool("local", m, work, n_max, None)
        t0 = time.perf_counter()
        with f:
            serve_until(m, lambda: m.stats.workers_connected >= n_max, 60, seen)
            grow = time.perf_counter() - t0  # from start(), which the with statement calls
            run = serve_until(m, lambda: m.empty(), 600, seen)
            drain = serve_until(m, lambda: m.stats.workers_connected == 0, 120, seen)
        print(json.dumps({"bench": "factory_local", "tasks": tasks, "max_workers": n_max,
                          "grow_to_max_s": round(grow, 2), "run_s": round(run, 2),
                          "drain_to_min_s": round(drain, 2), "largest_pool": max(seen),
                          "load1": os.getloadavg()[0]}), flush=True)


def slurm_part(work: str, tasks: int, n_max: int) -> None:
    with vine.Manager(port=0, run_info_path=os.path.join(work, "runs")) as m:
        for _ in range(tasks):
            m.submit(vine.Task("sleep 1"))
        seen: list[int] = []
        t0 = time.perf_counter()
        with pool("slurm", m, work, n_max, 10):
            serve_until(m, lambda: m.empty(), 900, seen)
            total = time.perf_counter() - t0
        print(json.dumps({"bench": "factory_slurm", "tasks": tasks, "max_workers": n_max,
                          "total_s": round(total, 2), "tasks_per_s": round(tasks / total, 2),
                          "largest_pool": max(seen), "load1": os.getloadavg()[0]}),
              flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--max-workers", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=0.2, help="seconds per local task")
    ap.add_argument("--slurm", action="store_true", help="also run the Slurm part")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        local_part(work, args.tasks, args.max_workers, args.sleep)
        if args.slurm:
            slurm_part(work, 100, 4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
