#!/usr/bin/env python3
"""Scale benchmark: the manager's CPU per task as workers and queued tasks grow (issue 15).

Runs against any implementation that provides ``import ndcctools.taskvine as vine`` and a
``vine_worker`` on PATH; it uses the public API and ``m.stats`` only. Three parts, each
printing one JSON line per point (manager = this process):

- ``real``: 1, 16, 64, 256 real ``vine_worker`` processes of 1 core; trivial ``true``
  tasks kept ``depth`` deep for ``--seconds``; tasks/s, manager CPU per task, manager RSS
  per connected worker.
- ``queue``: submit N (1k..1M) tasks, then time the completion of a fixed window of them on a
  small simulated pool; manager CPU per dispatched task, RSS per queued task.
- ``sim``: 2,000 and 10,000 simulated workers (``scale_sim.py``, one separate process, run
  as ``python scale.py --simulate HOST PORT COUNT``); tasks/s, manager CPU per task, RSS
  per connected worker, failed tasks and lost workers.

``--profile DIR`` runs cProfile over each timed window (slower: take figures without it),
saves ``DIR/<bench>-<n>.prof`` and prints the top functions with their share of the
window's profiled time as one more JSON line. Usage::

    python benchmarks/scale.py --parts sim,queue,real [--seconds 12] [--profile /tmp/prof]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import scale_sim
from common import cpu

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------- measuring
def rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def emit(bench: str, n: int, value: float | None, unit: str, **extra) -> None:
    rec = {"bench": bench, "n": n, "value": value, "unit": unit,
           "load1": round(os.getloadavg()[0], 2), **extra}
    print(json.dumps(rec), flush=True)


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


class Profiler:
    """cProfile over the timed windows when ``--profile DIR`` is given; else nothing."""

    def __init__(self, out_dir: str | None, top: int):
        self.dir, self.top, self.prof = out_dir, top, None

    def start(self) -> None:
        if self.dir:
            self.prof = cProfile.Profile()
            self.prof.enable()

    def stop(self, bench: str, n: int) -> None:
        if self.prof is None:
            return
        self.prof.disable()
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, f"{bench}-{n}.prof")
        self.prof.dump_stats(path)
        st = pstats.Stats(self.prof, stream=io.StringIO())
        total = st.total_tt or 1e-9
        rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:self.top]
        top = [{"fn": f"{os.path.basename(f)}:{line}:{name}", "calls": nc,
                "self_pct": round(100 * tt / total, 1), "cum_pct": round(100 * ct / total, 1)}
               for (f, line, name), (_cc, nc, tt, ct, _callers) in rows]
        emit(f"{bench}-profile", n, round(total, 3), "profiled_s", file=path, top=top)
        self.prof = None


# ----------------------------------------------------------------------- the window
class Run:
    """One manager, its workers (real processes or one simulator process) and scratch dir."""

    def __init__(self, vine, args, bench: str):
        self.vine, self.args, self.bench = vine, args, bench
        self.dir = tempfile.mkdtemp(prefix=f"vine-scale-{bench}-", dir=args.tmp)
        self.procs: list[subprocess.Popen] = []
        self.sim: subprocess.Popen | None = None
        self.m = vine.Manager(port=0, run_info_path=os.path.join(self.dir, "run-info"))
        self.m.__enter__()
        self.rss0 = rss_mb()  # before any worker connects

    def task(self):
        t = self.vine.Task("true")
        t.set_cores(1)
        return t

    def start_real(self, n: int) -> None:
        """``n`` vine_workers of 1 core, small memory/disk, workspaces under one directory."""
        ws = os.path.join(self.dir, "ws")
        os.makedirs(ws)
        for i in range(n):
            self.procs.append(subprocess.Popen(
                [self.args.worker, "127.0.0.1", str(self.m.port), "--cores", "1",
                 "--memory", "100", "--disk", "100", "--single-shot", "--parent-death",
                 "--timeout", "120", "--workspace", os.path.join(ws, f"w{i}")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(self.dir, f"w{i}.log"), "wb"),
                start_new_session=True))

    def start_sim(self, n: int, cores: int = 1) -> None:
        self.sim = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "scale.py"), "--simulate", "127.0.0.1",
             str(self.m.port), str(n), "--sim-cores", str(cores)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    def wait_connected(self, n: int, timeout: float) -> float:
        """Serve the manager until ``n`` workers are connected; seconds it took."""
        t0 = next_look = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_look:  # m.stats walks every worker: look 5 times a second only
                if self.m.stats.workers_connected >= n:
                    return now - t0
                next_look = now + 0.2
            if now - t0 > timeout:
                raise RuntimeError(f"only {self.m.stats.workers_connected} of {n} workers "
                                   f"connected after {timeout:.0f} s")
            self.m.wait(0.2)  # returns at once while no task is queued

    def steady(self, seconds: float, depth: int, prof: Profiler, n: int) -> dict:
        """Keep ``depth`` tasks submitted for ``seconds``; figures of that window."""
        for _ in range(depth):
            self.m.submit(self.task())
        got = None
        while got is None:  # warm-up: the pipeline is flowing
            got = self.m.wait(5)
        self.m.submit(self.task())
        done = failed = stalls = 0
        prof.start()
        t0, c0 = time.perf_counter(), cpu()
        while time.perf_counter() - t0 < seconds:
            t = self.m.wait(1)
            if t is None:
                stalls += 1
                continue
            done += 1
            failed += not t.successful()
            self.m.submit(self.task())
        wall, mcpu = time.perf_counter() - t0, cpu() - c0
        prof.stop(self.bench, n)
        return {"done": done, "failed": failed, "stalls_1s": stalls, "wall_s": round(wall, 3),
                "mgr_cpu_s": round(mcpu, 3), "tasks_per_s": round(done / wall, 1),
                "mgr_cpu_ms_per_task": round(1000 * mcpu / max(done, 1), 4)}

    def close(self) -> dict | None:
        """Release the workers, stop the processes; the simulator's summary if any."""
        try:
            self.m.__exit__(None, None, None)
        except Exception as e:  # noqa: BLE001 - report and go on with the teardown
            log(f"manager teardown: {e!r}")
        summary = None
        if self.sim is not None:
            try:
                out, _ = self.sim.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.sim.send_signal(signal.SIGTERM)
                out, _ = self.sim.communicate(timeout=30)
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            summary = json.loads(lines[-1])["simulator"] if lines else None
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        return summary


def lost(stats) -> dict:
    return {k: getattr(stats, k) for k in ("workers_connected", "workers_joined",
                                          "workers_removed", "workers_lost", "tasks_failed")}


# ----------------------------------------------------------------------- the parts
def part_real(vine, args, prof: Profiler) -> None:
    for n in args.workers:
        run = Run(vine, args, "scale-real")
        try:
            run.start_real(n)
            connect_s = run.wait_connected(n, timeout=60 + 0.5 * n)
            rss = rss_mb()
            w = run.steady(args.seconds, max(2 * n, 50), prof, n)
            emit("scale-real", n, w["tasks_per_s"], "tasks/s", workers=n,
                 connect_s=round(connect_s, 2),
                 rss_kb_per_worker=round(1000 * (rss - run.rss0) / n, 1),
                 rss_mb=round(rss_mb(), 1), **w, **lost(run.m.stats))
        finally:
            run.close()


def part_sim(vine, args, prof: Profiler) -> None:
    for n in args.pool:
        run = Run(vine, args, "scale-sim")
        try:
            prof.start()
            run.start_sim(n)
            connect_s = run.wait_connected(n, timeout=120)
            prof.stop("scale-sim-connect", n)
            rss = rss_mb()
            w = run.steady(args.seconds, 2 * n, prof, n)
            stats = lost(run.m.stats)
        finally:
            summary = run.close()
        emit("scale-sim", n, w["tasks_per_s"], "tasks/s", workers=n,
             connect_s=round(connect_s, 2),
             rss_kb_per_worker=round(1000 * (rss - run.rss0) / n, 1), **w, **stats,
             simulator=summary)


def part_queue(vine, args, prof: Profiler) -> None:
    for n in args.queued:
        run = Run(vine, args, "scale-queue")
        try:
            run.start_sim(args.queue_pool)
            run.wait_connected(args.queue_pool, timeout=60)
            rss0, t0 = rss_mb(), time.perf_counter()
            for _ in range(n):
                run.m.submit(run.task())
            submit_s, rss1 = time.perf_counter() - t0, rss_mb()
            w = window(run.m, min(args.window, n), prof, run.bench, n)
            emit("scale-queue", n, w["mgr_cpu_ms_per_task"], "mgr_cpu_ms/task", queued=n,
                 pool=args.queue_pool, submit_per_s=round(n / submit_s),
                 rss_bytes_per_queued_task=round((rss1 - rss0) * 1e6 / n), **w,
                 **lost(run.m.stats))
        finally:
            run.close()


def window(m, count: int, prof: Profiler, bench: str, n: int) -> dict:
    """Time ``count`` completions of tasks already queued."""
    failed = 0
    prof.start()
    t0, c0 = time.perf_counter(), cpu()
    for _ in range(count):
        t = m.wait(60)
        if t is None:
            raise RuntimeError("no task came back in 60 s")
        failed += not t.successful()
    wall, mcpu = time.perf_counter() - t0, cpu() - c0
    prof.stop(bench, n)
    return {"window": count, "failed": failed, "wall_s": round(wall, 3),
            "mgr_cpu_s": round(mcpu, 3), "tasks_per_s": round(count / wall, 1),
            "mgr_cpu_ms_per_task": round(1000 * mcpu / count, 4)}


PARTS: dict[str, Callable] = {"sim": part_sim, "queue": part_queue, "real": part_real}


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="sim,queue,real", help="comma list of sim,queue,real")
    ap.add_argument("--workers", type=ints, default=[1, 16, 64, 256], help="real: worker counts")
    ap.add_argument("--pool", type=ints, default=[2000, 10000], help="sim: pool sizes")
    ap.add_argument("--queued", type=ints, default=[1000, 10000, 100000, 1000000],
                    help="queue: tasks queued before the window")
    ap.add_argument("--window", type=int, default=5000, help="queue: tasks timed")
    ap.add_argument("--queue-pool", type=int, default=16, help="queue: simulated workers")
    ap.add_argument("--seconds", type=float, default=12.0, help="real/sim: timed window")
    ap.add_argument("--worker", default="vine_worker", help="worker executable")
    ap.add_argument("--tmp", default=None, help="parent of the scratch directories")
    ap.add_argument("--profile", metavar="DIR", default=None, help="cProfile each window")
    ap.add_argument("--profile-top", type=int, default=15)
    ap.add_argument("--simulate", nargs=3, metavar=("HOST", "PORT", "COUNT"),
                    help="be the simulated pool (used by the sim and queue parts)")
    ap.add_argument("--sim-cores", type=int, default=1)
    args = ap.parse_args()
    if args.simulate:
        host, port, count = args.simulate
        return scale_sim.main(host, int(port), int(count), args.sim_cores)
    scale_sim.raise_nofile(max(args.pool + args.workers + [args.queue_pool]) * 2 + 1024)
    import ndcctools.taskvine as vine  # late, so that --simulate needs no implementation
    prof = Profiler(args.profile, args.profile_top)
    for part in args.parts.split(","):
        PARTS[part](vine, args, prof)
    return 0


if __name__ == "__main__":
    sys.exit(main())
