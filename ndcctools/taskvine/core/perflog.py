"""The performance log, ``vine-logs/performance`` (protocol spec §11.3): the manager's
statistics over time, one row per update.

``# timestamp <columns>`` first, then rows of the timestamp (µs) and the values, space
separated (integers, ``bandwidth`` with six decimals). A row costs a statistics snapshot, so
rows are never written per task; ``PerfLog`` writes one

    at creation and at shutdown                       ``row()``
    from the once-a-second timer, when tasks or       ``tick()``: at most every
      workers changed since the last row                perf-log-interval seconds
    at the end of a ``wait`` in which something       ``wait_ended()``: rate-limited like
      happened                                          ``tick`` while waits return tasks;
                                                        a wait that returns nothing (the
                                                        program may now go quiet) writes
                                                        what changed at once

Whether something changed is read from a fingerprint of the engine's counters, not from a
hook on each task state change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .logfile import LogFile

COLUMNS = (
    "workers_connected", "workers_init", "workers_idle", "workers_busy", "workers_able",
    "workers_joined", "workers_removed", "workers_released", "workers_idled_out",
    "workers_blocked", "workers_slow", "workers_lost", "tasks_waiting", "tasks_on_workers",
    "tasks_running", "tasks_with_results", "tasks_submitted", "tasks_dispatched", "tasks_done",
    "tasks_failed", "tasks_successful", "tasks_cancelled", "tasks_exhausted_attempts",
    "tasks_recovery", "time_send", "time_receive", "time_send_good", "time_receive_good",
    "time_status_msgs", "time_internal", "time_polling", "time_application",
    "time_scheduling", "time_execute", "time_execute_good", "time_execute_exhaustion",
    "bytes_sent", "bytes_received", "bandwidth", "capacity_tasks", "capacity_cores",
    "capacity_memory", "capacity_disk", "capacity_instantaneous", "capacity_weighted",
    "total_cores", "total_memory", "total_disk", "committed_cores", "committed_memory",
    "committed_disk", "max_cores", "max_memory", "max_disk", "min_cores", "min_memory",
    "min_disk", "inuse_cache",
)
_STAT_NAMES = {"time_execute": "time_workers_execute",
               "time_execute_good": "time_workers_execute_good",
               "time_execute_exhaustion": "time_workers_execute_exhaustion"}
HEADER = "# timestamp " + " ".join(COLUMNS) + "\n"


def format_row(timestamp_us: int, stats: Any) -> str:
    """One row: ``stats`` is a ``Stats`` snapshot (api.md §12.3)."""
    values = [str(timestamp_us)]
    for column in COLUMNS:
        value = getattr(stats, _STAT_NAMES.get(column, column))
        values.append(f"{value:.6f}" if column == "bandwidth" else str(int(value)))
    return " ".join(values) + "\n"


class PerfLog:
    """Owns ``vine-logs/performance``.

    Args:
        path: the file, truncated at creation (a new run starts a new log).
        snapshot: makes a ``Stats`` of the engine now.
        fingerprint: cheap; changes whenever tasks or workers did.
        interval: perf-log-interval in seconds, read at each use (``tune`` may change it).
    """

    def __init__(self, path: str, snapshot: Callable[[], Any], fingerprint: Callable[[], Any],
                 interval: Callable[[], float], clock: Callable[[], float] = time.time):
        self._file = LogFile(path, truncate=True)
        self._snapshot, self._fingerprint = snapshot, fingerprint
        self._interval, self._clock = interval, clock
        self._last_row = 0.0
        self._last_seen: Any = None
        self._file.write(HEADER)
        self.row()

    def row(self) -> None:
        """Write a row now (creation, shutdown)."""
        now = self._clock()
        self._last_row = now
        self._last_seen = self._fingerprint()
        self._file.write(format_row(int(now * 1e6), self._snapshot()))

    def tick(self) -> None:
        """The timer: a row if something changed and perf-log-interval has passed."""
        if self._clock() - self._last_row >= self._interval():
            self._row_if_changed()

    def wait_ended(self, returned_task: bool) -> None:
        """A ``wait`` returns: rows as ``tick`` while tasks come back, at once otherwise."""
        if returned_task:
            self.tick()
        else:
            self._row_if_changed()

    def _row_if_changed(self) -> None:
        if self._fingerprint() != self._last_seen:
            self.row()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        """The last row, then close (once)."""
        if not self._file.closed:
            self.row()
            self._file.close()
