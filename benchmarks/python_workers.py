"""Benchmark (not a test): Python on workers, on one worker with 2 cores.

Part 1: N ``PythonTask(inc, i)`` (cores=1), all submitted at once, outputs checked: tasks/s.
Part 2: for each exec mode, a library of ``inc`` (2 cores, 2 slots) and M ``FunctionCall``s,
all submitted at once, outputs checked: calls/s. Part 3: R sequential round trips of one
FunctionCall (submit, wait, read the output) into a warm direct-mode library: median and
p95 in ms. Prints one JSON line per result, with the manager's CPU time per task or call.
Usage: ``python benchmarks/python_workers.py [--tasks 2000] [--calls 20000] [--rounds 200]``.
"""

import argparse
import json
import os
import sys
import tempfile
import time

from common import cpu, round_trips, start_workers, stop_workers

import ndcctools.taskvine as vine


def inc(x: int) -> int:
    return x + 1


def run_all(m: vine.Manager, tasks: list, label: str, **extra) -> None:
    """Submit ``tasks`` (each computing inc(i) for its position i), wait for all, report."""
    t0, c0 = time.perf_counter(), cpu()
    for t in tasks:
        m.submit(t)
    for _ in tasks:
        t = m.wait(60)
        if t is None:
            raise SystemExit(f"{label}: timed out")
    wall, mcpu = time.perf_counter() - t0, cpu() - c0
    wrong = [i for i, t in enumerate(tasks) if t.output != i + 1]
    if wrong:
        raise SystemExit(f"{label}: {len(wrong)} wrong outputs, e.g. #{wrong[0]}: "
                         f"{tasks[wrong[0]].output!r} ({tasks[wrong[0]].result})")
    print(json.dumps({"bench": label, "n": len(tasks), "per_s": round(len(tasks) / wall, 1),
                      "manager_cpu_ms_each": round(mcpu / len(tasks) * 1000, 3),
                      "load1": os.getloadavg()[0], **extra}), flush=True)


def install(m: vine.Manager, name: str, mode: str) -> None:
    lib = m.create_library_from_functions(name, inc, add_env=False, exec_mode=mode)
    lib.set_cores(2)
    lib.set_function_slots(2)
    m.install_library(lib)
    m.submit(vine.FunctionCall(name, "inc", 0))
    if m.wait(60) is None:
        raise SystemExit(f"library {name} did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vine-bench-", ignore_cleanup_errors=True) as work:
        with vine.Manager(port=0, run_info_path=os.path.join(work, "ri")) as m:
            (worker,) = start_workers(m, work)
            warm = vine.PythonTask(inc, 0)
            m.submit(warm)
            if m.wait(60) is None:
                raise SystemExit("no worker")
            tasks = [vine.PythonTask(inc, i) for i in range(args.tasks)]
            for t in tasks:
                t.set_cores(1)
            run_all(m, tasks, "pythontask")
            for mode in ("fork", "direct"):
                install(m, f"lib_{mode}", mode)
                calls = [vine.FunctionCall(f"lib_{mode}", "inc", i) for i in range(args.calls)]
                run_all(m, calls, "functioncall", exec_mode=mode)
                if mode == "fork":
                    m.remove_library("lib_fork")  # give its cores to the next library
            round_trips(m, "call_round_trip", args.rounds,
                        lambda i: vine.FunctionCall("lib_direct", "inc", i), inc)
        stop_workers([worker])
    return 0


if __name__ == "__main__":
    sys.exit(main())
