"""What measuring tasks costs the worker when they live long enough to be sampled.

    python benchmarks/monitoring.py [--tasks 200] [--seconds 1.0] [--interval 1]

Runs ``--tasks`` tasks of ``sleep --seconds`` on one local worker of 2 cores (two at a time),
once without and once with ``enable_monitoring()``, and prints one JSON line per run: the
worker's CPU seconds per task (psutil, the worker process and its fork servers) and the wall
time. The difference is the sampling cost (B1 covers tasks too short to be sampled).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import psutil
from common import start_workers, stop_workers

import ndcctools.taskvine as vine


def worker_cpu(proc: psutil.Process) -> float:
    """CPU seconds of the worker and its helper processes (not of the tasks)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            if p.pid == proc.pid or "python" in p.name():
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run(monitoring: bool, tasks: int, seconds: float, interval: float) -> dict:
    with tempfile.TemporaryDirectory() as work, \
            vine.Manager(port=0, run_info_path=f"{work}/info") as m:
        if monitoring:
            m.enable_monitoring()
            m.tune("monitor-interval", interval)
        (proc,) = start_workers(m, work)
        worker = psutil.Process(proc.pid)
        for _ in range(tasks):
            t = vine.Task(f"sleep {seconds}")
            t.set_cores(1)
            m.submit(t)
        start, cpu0, done = time.perf_counter(), worker_cpu(worker), 0
        while done < tasks:
            t = m.wait(30)
            if t is None or not t.successful():
                raise SystemExit(f"a task failed: {t and t.result}")
            done += 1
        cpu = worker_cpu(worker) - cpu0
        wall = time.perf_counter() - start
    stop_workers([proc])
    return {"bench": "monitoring-cost", "monitoring": monitoring, "tasks": tasks,
            "task_seconds": seconds, "interval": interval, "wall_s": round(wall, 2),
            "worker_cpu_ms_per_task": round(cpu / tasks * 1000, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--interval", type=float, default=1.0)
    a = ap.parse_args()
    for monitoring in (False, True):
        print(json.dumps(run(monitoring, a.tasks, a.seconds, a.interval)), flush=True)


if __name__ == "__main__":
    main()
