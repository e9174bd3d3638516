"""Measuring tasks on the worker: what a task body's ``monitor`` line asks for.

A measured task gets a ``TaskMeter``. While it runs, the session samples it now and then
(``Meters.sample_due``): one pass over the machine's processes with psutil finds each task's
process tree (from its first process down, by parent pid), and every process in it is read
once (resident and virtual memory, CPU time including its reaped children, characters read
and written). The first sample comes a quarter second after the start and the gap doubles up
to the manager's interval, so a long task is seen early and a task of a few milliseconds is
never sampled at all. When the task ends, ``TaskMeter.summary`` adds what the kernel kept
for the whole tree (``wait4``'s resource usage: CPU time of every process that was waited
for, the largest resident set, blocks read and written), so short tasks are measured too.

With the watchdog on, a sample whose memory is over the task's allocation stops the task
(the session kills its process group) and the task ends with resource exhaustion, naming
memory in ``limits_exceeded``; a task found over its memory only at the end (by ``wait4``)
ends the same way. Disk is watched by the session's sandbox check whether or not the task is
measured (it ends with sandbox exhaustion), and is reported here as the sandbox's peak.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import psutil

from .. import protocol as p
from .resources import MB

FIRST_SAMPLE = 0.25  # seconds from the start to the first sample; the gap then doubles
SCAN_ALL_FROM = 3  # tasks due at once from which one pass over all processes is cheaper
SERIES_COLUMNS = ("wall_clock", "cpu_time", "cores", "memory", "virtual_memory", "disk",
                  "bytes_read", "bytes_written", "max_concurrent_processes")


@dataclass(frozen=True, slots=True)
class Usage:
    """What ``wait4`` says about a finished process and the descendants it waited for."""

    cpu_time: float  # seconds, user + system
    max_rss_kb: int  # the largest resident set of any one of them
    blocks_read: int  # 512-byte blocks
    blocks_written: int

    @classmethod
    def of(cls, ru: os.struct_rusage | None) -> Usage | None:
        if ru is None:
            return None
        return cls(ru.ru_utime + ru.ru_stime, ru.ru_maxrss, ru.ru_inblock, ru.ru_oublock)


class TaskMeter:
    """The peaks one task reached so far."""

    def __init__(self, task_id: int, settings: p.Monitor, memory_limit_mb: int, start: float):
        self.task_id = task_id
        self.settings = settings
        self.memory_limit_mb = memory_limit_mb if settings.watchdog else 0
        self.start = start  # time.time() at launch
        self.gap = FIRST_SAMPLE
        self.next_at = start + FIRST_SAMPLE
        self.memory = self.virtual_memory = 0  # bytes, whole tree
        self.disk = 0  # bytes of the sandbox less its inputs
        self.processes = 0  # most at once
        self.seen: set[int] = set()
        self.io: dict[int, tuple[int, int]] = {}  # pid -> characters read, written
        self.cpu = 0.0  # seconds, the tree's as last sampled
        self.cores = 0.0  # most CPU seconds per second between two samples
        self.last = (start, 0.0)  # (time, cpu) of the previous sample
        self.rows: list[list[float]] = []
        self.exceeded: dict[str, float] = {}

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def take(self, now: float, tree: list[psutil.Process], disk: int | None) -> bool:
        """Fold in one sample of the task's processes (``disk``: the sandbox's bytes, if
        measured); True if the watchdog says the task must stop."""
        self.gap = min(self.gap * 2, self.settings.interval)
        self.next_at = now + self.gap
        rss = vms = 0
        cpu = 0.0
        alive = 0
        for proc in tree:
            try:
                with proc.oneshot():
                    mem = proc.memory_info()
                    times = proc.cpu_times()
                    io = proc.io_counters()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            alive += 1
            rss += mem.rss
            vms += mem.vms
            cpu += times.user + times.system + times.children_user + times.children_system
            self.io[proc.pid] = (io.read_chars, io.write_chars)
            self.seen.add(proc.pid)
        self.memory = max(self.memory, rss)
        self.virtual_memory = max(self.virtual_memory, vms)
        self.processes = max(self.processes, alive)
        if disk is not None:
            self.disk = max(self.disk, disk)
        then, cpu_then = self.last
        if cpu >= cpu_then and now > then:
            self.cores = max(self.cores, (cpu - cpu_then) / (now - then))
        self.cpu = max(self.cpu, cpu)
        self.last = (now, cpu)
        if self.settings.series:
            read, written = self._io()
            self.rows.append([int(now * 1e6), round(cpu, 3), round(self.cores, 3),
                              _mb(rss), _mb(vms), _mb(self.disk), round(read / MB, 3),
                              round(written / MB, 3), alive])
        return self._check_memory(rss)

    def _check_memory(self, rss: int) -> bool:
        if self.memory_limit_mb > 0 and rss > self.memory_limit_mb * MB:
            self.exceeded["memory"] = _mb(rss)
            return True
        return False

    def _io(self) -> tuple[int, int]:
        return (sum(r for r, _ in self.io.values()), sum(w for _, w in self.io.values()))

    def summary(self, usage: Usage | None, end: float, disk: int | None,
                exit_status: int) -> dict:
        """Everything measured, once the task ended at ``end`` (time.time())."""
        wall = max(end - self.start, 1e-6)
        cpu = max(self.cpu, usage.cpu_time if usage else 0.0)
        memory = max(self.memory, usage.max_rss_kb * 1024 if usage else 0)
        if disk is not None:
            self.disk = max(self.disk, disk)
        read, written = self._io()
        if usage is not None:
            read = max(read, usage.blocks_read * 512)
            written = max(written, usage.blocks_written * 512)
        if not self.exceeded:
            self._check_memory(memory)
        out = {
            "start": int(self.start * 1e6), "end": int(end * 1e6),
            "wall_time": round(wall, 6), "cpu_time": round(cpu, 6),
            "cores": round(max(self.cores, cpu / wall), 3), "cores_avg": round(cpu / wall, 3),
            "memory": _mb(memory), "virtual_memory": _mb(self.virtual_memory),
            "swap_memory": 0, "disk": _mb(self.disk),
            "bytes_read": round(read / MB, 6), "bytes_written": round(written / MB, 6),
            "max_concurrent_processes": max(self.processes, 1),
            "total_processes": max(len(self.seen), 1), "exit_status": exit_status,
        }
        if self.exceeded:
            out["limits_exceeded"] = dict(self.exceeded)
        if self.settings.series:
            out["series"] = {"columns": list(SERIES_COLUMNS), "rows": self.rows}
        return out


class Meters:
    """Every running task's meter, by the pid of its first process; one psutil pass over the
    machine's processes serves all those due for a sample."""

    def __init__(self) -> None:
        self.by_pid: dict[int, TaskMeter] = {}

    def __bool__(self) -> bool:
        return bool(self.by_pid)

    def add(self, pid: int, meter: TaskMeter) -> None:
        self.by_pid[pid] = meter

    def remove(self, pid: int) -> None:
        self.by_pid.pop(pid, None)

    def next_at(self) -> float:
        return min(m.next_at for m in self.by_pid.values())

    def due(self, now: float) -> list[tuple[int, TaskMeter]]:
        return [(pid, m) for pid, m in self.by_pid.items() if m.due(now)]

    @staticmethod
    def trees(roots: list[int]) -> dict[int, list[psutil.Process]]:
        """The processes under each root pid (the root first). psutil finds one root's
        descendants from a table of parents it reads fast (about 1 ms here); for more roots
        one pass that reads every process's parent (about 2 ms for 70 processes) serves all."""
        if len(roots) <= SCAN_ALL_FROM:
            out = {}
            for root in roots:
                try:
                    top = psutil.Process(root)
                    out[root] = [top, *top.children(recursive=True)]
                except psutil.Error:
                    out[root] = []
            return out
        children: dict[int, list[psutil.Process]] = {}
        procs: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["ppid"]):
            procs[proc.pid] = proc
            children.setdefault(proc.info["ppid"], []).append(proc)
        out = {}
        for root in roots:
            top = procs.get(root)
            tree = [top] if top is not None else []
            i = 0
            while i < len(tree):
                tree.extend(children.get(tree[i].pid, ()))
                i += 1
            out[root] = tree
        return out

def _mb(nbytes: float) -> int:
    return math.ceil(nbytes / MB)
