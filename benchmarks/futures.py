"""Benchmark (not a test): futures through ``FuturesExecutor``.

N trivial futures (``submit(inc, i)``) on one local worker with 2 cores, from the first
submit to the last result; futures/s, with the CPU time per future of the manager process
and of the worker (with its fork server and tasks). Also
a chain of 200 dependent futures (each the argument of the next: values move worker to
worker). One JSON line per result. Usage: ``python benchmarks/futures.py [--n 20000]``.
"""

import argparse
import json
import os
import tempfile
import time

import psutil
from common import cpu, start_workers, stop_workers

import ndcctools.taskvine as vine


def inc(x):
    return x + 1


def workers_cpu(procs) -> float:
    """CPU seconds of the workers and everything under them (tasks reaped included)."""
    total = 0.0
    for proc in procs:
        try:
            top = psutil.Process(proc.pid)
            for p in [top, *top.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def _task(ex: vine.FuturesExecutor, args: argparse.Namespace, i: int):
    task = ex.future_task(inc, i)
    task.set_cores(args.cores)
    return task


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--chain", type=int, default=200)
    ap.add_argument("--task-mode", default="tasks", choices=("tasks", "function-calls"))
    ap.add_argument("--cores", type=int, default=1,
                    help="tasks mode: cores per future, as B2 gives its PythonTasks (0: none "
                         "set, so each future takes a whole worker, upstream's default)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        ex = vine.FuturesExecutor(port=0, factory=False, task_mode=args.task_mode)
        procs = start_workers(ex.manager, work)
        warm = ex.submit(inc, 0)
        warm.result(60)
        t0, c0, w0 = time.perf_counter(), cpu(), workers_cpu(procs)
        futures = [ex.submit(_task(ex, args, i)) if args.task_mode == "tasks" and args.cores
                   else ex.submit(inc, i) for i in range(args.n)]
        total = sum(f.result() for f in futures)
        took, used = time.perf_counter() - t0, cpu() - c0
        worker_used = workers_cpu(procs) - w0
        assert total == args.n * (args.n + 1) // 2
        print(json.dumps({"bench": f"futures_{args.task_mode}", "n": args.n,
                          "cores_per_future": args.cores if args.task_mode == "tasks" else 0,
                          "per_s": round(args.n / took, 1),
                          "manager_cpu_ms_per_future": round(used / args.n * 1000, 3),
                          "worker_cpu_ms_per_future": round(worker_used / args.n * 1000, 3),
                          "load1": os.getloadavg()[0]}), flush=True)
        t0 = time.perf_counter()
        f = ex.submit(inc, 0)
        for _ in range(args.chain - 1):
            f = ex.submit(inc, f)
        assert f.result() == args.chain
        took = time.perf_counter() - t0
        print(json.dumps({"bench": f"futures_chain_{args.task_mode}", "n": args.chain,
                          "ms_per_link": round(took / args.chain * 1000, 3),
                          "load1": os.getloadavg()[0]}), flush=True)
        ex.shutdown()
        stop_workers(procs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
