"""What the benchmarks share: local ``vine_worker`` processes, latency summaries."""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import ndcctools.taskvine as vine


def cpu() -> float:
    """CPU seconds (user + system) this process has used so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_workers(m: vine.Manager, work: str, n: int = 1) -> list[subprocess.Popen]:
    """``n`` workers of 2 cores connecting to ``m`` on 127.0.0.1, workspaces under ``work``;
    each exits when the manager releases it."""
    return [subprocess.Popen(
        [sys.executable, "-m", "ndcctools.taskvine.tools.vine_worker", "--single-shot",
         "--cores", "2", "--memory", "4000", "--disk", "40000", "--workspace",
         os.path.join(work, f"w{i}"), "127.0.0.1", str(m.port)]) for i in range(n)]


def stop_workers(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    """Wait for released workers to exit; kill those that never connected (they would keep
    looking for the manager until their own timeout)."""
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def round_trips(m: vine.Manager, label: str, rounds: int, make: Callable[[int], vine.Task],
                expected: Callable[[int], Any] | None = None) -> None:
    """Time ``rounds`` tasks ``make(i)`` submitted and waited for one at a time (each must
    come back, with output ``expected(i)`` when given) and report the latencies."""
    times = []
    for i in range(rounds):
        t0 = time.perf_counter()
        m.submit(make(i))
        t = m.wait(60)
        if t is None or (expected is not None and t.output != expected(i)):
            raise SystemExit(f"{label} {i} failed: {t and t.result}")
        times.append((time.perf_counter() - t0) * 1000)
    report_latency(label, times)


def report_latency(label: str, times_ms: list[float]) -> None:
    """One JSON line: median and p95 of ``times_ms``."""
    times = sorted(times_ms)
    print(json.dumps({"bench": label, "n": len(times),
                      "median_ms": round(statistics.median(times), 3),
                      "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 3),
                      "load1": os.getloadavg()[0]}), flush=True)
