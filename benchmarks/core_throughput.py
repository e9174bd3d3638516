"""Benchmark (not a test): command-task throughput and single-task round trip.

Part 1: N ``true`` tasks (cores=1) on one worker with 2 cores, all submitted at once;
tasks/s from the first submit to the last ``wait()`` return, with the manager's CPU time
per task. Part 2: R sequential round trips of one task (submit, wait); median and p95 in ms.
Prints one JSON line per result. Usage: ``python benchmarks/core_throughput.py [--n 10000]``.
"""

import argparse
import json
import os
import sys
import tempfile
import time

from common import cpu, round_trips, start_workers, stop_workers

import ndcctools.taskvine as vine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vine-bench-", ignore_cleanup_errors=True) as work:
        with vine.Manager(port=0, run_info_path=os.path.join(work, "ri")) as m:
            (worker,) = start_workers(m, work)

            def one() -> vine.Task:
                t = vine.Task("true")
                t.set_cores(1)
                return t

            m.submit(one())
            while m.wait(5) is None:
                pass
            t0, c0 = time.perf_counter(), cpu()
            for _ in range(args.n):
                m.submit(one())
            for _ in range(args.n):
                t = m.wait(60)
                if t is None or not t.successful():
                    raise SystemExit(f"task failed or timed out: {t}")
            wall, mcpu = time.perf_counter() - t0, cpu() - c0
            print(json.dumps({"bench": "throughput", "n": args.n,
                              "tasks_per_s": round(args.n / wall, 1),
                              "manager_cpu_ms_per_task": round(mcpu / args.n * 1000, 3),
                              "load1": os.getloadavg()[0]}))
            round_trips(m, "round_trip", args.rounds, lambda i: one())
        stop_workers([worker])
    return 0


if __name__ == "__main__":
    sys.exit(main())
