"""Benchmark (not a test): moving data through the cluster.

Part 1: a --size byte input declared ``cache=True`` used by 10 tasks (``wc -c``) on 2 workers:
the first copy goes manager → worker, the second worker → worker. Reports the MB/s of each
copy (from the CACHE_UPDATE records of the transactions log) and the wall time of the 10 tasks.
Part 2: a 3-stage pipeline of --chains chains (``3 × chains`` tasks) linked by temp files;
tasks/s, and the bytes of temps the manager sent (should be 0).
Prints one JSON line per result. Usage: ``python benchmarks/data_plane.py [--size BYTES]``.
"""

import argparse
import json
import os
import sys
import tempfile
import time

from common import start_workers, stop_workers

import ndcctools.taskvine as vine


def wait_all(m: vine.Manager, n: int) -> list[vine.Task]:
    done = []
    while len(done) < n:
        t = m.wait(10)
        if t is not None:
            if not t.successful():
                raise RuntimeError(f"task {t.id} failed: {t.result} {t.std_output!r}")
            done.append(t)
    return done


def transactions(m: vine.Manager) -> list[list[str]]:
    with open(os.path.join(m.logging_directory, "transactions")) as f:
        return [line.split() for line in f if not line.startswith("#")]


def cached_input(work: str, size: int) -> None:
    path = os.path.join(work, "input.bin")
    with open(path, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(size // len(block)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    with vine.Manager(port=0, run_info_path=os.path.join(work, "ri1")) as m:
        procs = start_workers(m, work, 2)
        t0 = time.perf_counter()
        f = m.declare_file(path, cache=True)
        for _ in range(10):
            t = vine.Task("wc -c < data")
            t.set_cores(1)
            t.add_input(f, "data")
            m.submit(t)
        wait_all(m, 10)
        wall = time.perf_counter() - t0
        m.wait(0)
        copies = [r for r in transactions(m) if r[4:6] == ["CACHE_UPDATE", f.cachename]]
        for kind, r in zip(("manager->worker", "worker->worker"), copies, strict=False):
            seconds = int(r[7]) / 1e6  # receive time measured by the worker
            print(json.dumps({"bench": f"cached-input {kind}", "bytes": size,
                              "MB/s": round(size / 1e6 / seconds, 1) if seconds else None}))
        print(json.dumps({"bench": "cached-input 10 tasks", "wall_s": round(wall, 3),
                          "copies": len(copies)}))
    stop_workers(procs)


def temp_pipeline(work: str, chains: int) -> None:
    with vine.Manager(port=0, run_info_path=os.path.join(work, "ri2")) as m:
        procs = start_workers(m, work, 2)
        t0 = time.perf_counter()
        temps = set()
        for i in range(chains):
            a, b = m.declare_temp(), m.declare_temp()
            temps |= {a.cachename, b.cachename}
            first = vine.Task(f"echo {i} > out")
            first.add_output(a, "out")
            second = vine.Task("cat in in > out")
            second.add_input(a, "in")
            second.add_output(b, "out")
            third = vine.Task("wc -l < in")
            third.add_input(b, "in")
            for t in (first, second, third):
                t.set_cores(1)
                m.submit(t)
        wait_all(m, 3 * chains)
        wall = time.perf_counter() - t0
        m.wait(0)
        sent = sum(1 for r in transactions(m) if r[4:6] == ["TRANSFER", "INPUT"]
                   and r[6] in temps)
        print(json.dumps({"bench": "temp pipeline", "tasks": 3 * chains,
                          "tasks/s": round(3 * chains / wall, 1), "temps_sent_by_manager": sent}))
    stop_workers(procs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1 << 30)
    ap.add_argument("--chains", type=int, default=67)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vine-bench-", ignore_cleanup_errors=True) as work:
        cached_input(work, args.size)
        temp_pipeline(work, args.chains)
    return 0


if __name__ == "__main__":
    sys.exit(main())
