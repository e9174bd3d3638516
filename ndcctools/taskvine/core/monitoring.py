"""Resource monitoring, the manager's side (``Manager.enable_monitoring``).

Our workers measure tasks themselves (``worker/monitor.py``): a worker that can says so with
``info monitor 1`` when it connects, the manager then adds a ``monitor`` line to the body of
each task it sends there, and the worker answers with a ``measured`` message (a JSON object)
just before the task's ``complete``. This module owns the settings, turns a ``measured``
message into the record's ``measured``/``limits_exceeded`` (whatever a peer sent: only known
resource names with finite numbers are kept), and writes what is kept on disk: the summary
of a task with ``set_monitor_output`` and, with ``time_series``, the samples under the run's
``vine-logs/time-series/``. A worker that does not announce itself (upstream's C worker) gets
no ``monitor`` line; its tasks report the fallback measurement (start, end, wall time and the
allocation), and the debug log says so once per worker.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from typing import TYPE_CHECKING, Any

from .. import protocol as p
from ..task import RESOURCE_FIELDS

if TYPE_CHECKING:
    from .debuglog import DebugLog
    from .tasks import TaskRecord
    from .workers import WorkerRecord

SERIES_ROWS_MAX = 1 << 20  # samples of one task kept (a day at 0.1 s)


class Monitoring:
    def __init__(self, debug: DebugLog):
        self.debug = debug
        self.logs_dir: str | None = None  # the run's vine-logs (time series go below it)
        self.watchdog = True
        self.time_series = False
        self.on = False
        self._line: p.Monitor | None = None

    def enable(self, watchdog: bool, time_series: bool, logs_dir: str | None) -> None:
        self.on, self.watchdog, self.time_series = True, bool(watchdog), bool(time_series)
        self.logs_dir = logs_dir
        self._line = None

    def for_worker(self, w: WorkerRecord, interval: float) -> p.Monitor | None:
        """The ``monitor`` line for a task sent to ``w`` (None: monitoring is off, or ``w``
        cannot measure)."""
        if not self.on:
            return None
        if not w.monitors:
            if not w.told_unmonitored:
                w.told_unmonitored = True
                self.debug.write("vine", f"{w.label()} cannot measure tasks (it did not "
                                 f"announce 'info {p.MONITOR_INFO}'): its tasks report only "
                                 "their wall time and allocation, and no watchdog stops them")
            return None
        line = self._line
        if line is None or line.interval != interval:
            line = self._line = p.Monitor(max(0.1, interval), self.watchdog, self.time_series)
        return line

    def received(self, w: WorkerRecord, rec: TaskRecord, msg: p.Measured) -> None:
        """The measurement of ``rec`` arrived from ``w``."""
        try:
            summary = json.loads(msg.summary)
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            self.debug.write("vine", f"{w.label()} sent an unreadable measurement of task "
                             f"{rec.task_id}: {e}: ignored")
            return
        rec.measured = _numbers(summary)
        limits = summary.get("limits_exceeded")
        rec.limits_exceeded = (_numbers(limits) or None) if isinstance(limits, dict) else None
        if rec.limits_exceeded:
            self.debug.write("vine", f"Task {rec.task_id} exhausted resources on {w.label()}: "
                             f"{_compact(rec.limits_exceeded)} over its allocation")
        directory = rec.task._monitor_output
        if directory:
            self._write_summary(rec, directory)
        series = summary.get("series")
        if self.time_series and self.logs_dir and isinstance(series, dict):
            self._write_series(rec, series)

    def _write_summary(self, rec: TaskRecord, directory: str) -> None:
        kept = dict(rec.measured, task_id=rec.task_id, category=rec.task._category)
        if rec.limits_exceeded:
            kept["limits_exceeded"] = rec.limits_exceeded
        try:
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, f"vine-task-{rec.task_id}.summary"), "w") as f:
                json.dump(kept, f, indent=1, sort_keys=True)
                f.write("\n")
        except OSError as e:
            self.debug.write("vine", f"cannot write the summary of task {rec.task_id} into "
                             f"{directory}: {e}")

    def _write_series(self, rec: TaskRecord, series: dict) -> None:
        columns, rows = series.get("columns"), series.get("rows")
        if not (isinstance(columns, list) and isinstance(rows, list)
                and all(isinstance(c, str) and c.isidentifier() for c in columns)):
            return
        directory = os.path.join(self.logs_dir, "time-series")
        lines = ["# " + " ".join(columns) + "\n"]
        for row in rows[:SERIES_ROWS_MAX]:
            if isinstance(row, list) and len(row) == len(columns) and all(map(_finite, row)):
                lines.append(" ".join(_text(v) for v in row) + "\n")
        try:
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, f"vine-task-{rec.task_id}.series.gz")
            with gzip.open(path, "wt", compresslevel=5) as f:
                f.writelines(lines)
        except OSError as e:
            self.debug.write("vine", f"cannot write the time series of task {rec.task_id}: {e}")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(values: dict) -> dict[str, float]:
    return {k: v for k, v in values.items() if k in RESOURCE_FIELDS and _finite(v)}


def _text(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:.6g}"


def _compact(values: dict) -> str:
    return ", ".join(f"{k} {_text(v)}" for k, v in sorted(values.items()))
