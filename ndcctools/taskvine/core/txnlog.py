"""The transactions log, ``vine-logs/transactions`` (protocol spec §11.4).

One record per event, ``<time_us> <manager_pid> <KIND> …``, in exactly upstream's shapes
(including its double and trailing spaces), after a 16-line header that documents them.
Resource values are written as compact JSON, ``{"cores":[1,"cores"],…}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .logfile import LogFile

HEADER = """\
# time manager_pid MANAGER manager_pid START|END time_from_origin
# time manager_pid WORKER worker_id CONNECTION host:port
# time manager_pid WORKER worker_id DISCONNECTION (UNKNOWN|IDLE_OUT|FAST_ABORT|FAILURE|STATUS_WORKER|EXPLICIT)
# time manager_pid WORKER worker_id RESOURCES {resources}
# time manager_pid WORKER worker_id CACHE_UPDATE filename size_in_mb wall_time_us start_time_us
# time manager_pid WORKER worker_id TRANSFER (INPUT|OUTPUT) filename size_in_mb wall_time_us start_time_us
# time manager_pid CATEGORY name MAX {resources_max_per_task}
# time manager_pid CATEGORY name MIN {resources_min_per_task_per_worker}
# time manager_pid CATEGORY name FIRST (FIXED|MAX|MIN_WASTE|MAX_THROUGHPUT) {resources_requested}
# time manager_pid TASK task_id WAITING category_name (FIRST_RESOURCES|MAX_RESOURCES) attempt_number {resources_requested}
# time manager_pid TASK task_id RUNNING worker_id (FIRST_RESOURCES|MAX_RESOURCES) {resources_allocated}
# time manager_pid TASK task_id WAITING_RETRIEVAL worker_id
# time manager_pid TASK task_id (RETRIEVED|DONE) (SUCCESS|SIGNAL|END_TIME|FORSAKEN|MAX_RETRIES|MAX_WALLTIME|UNKNOWN|RESOURCE_EXHAUSTION) exit_code {limits_exceeded} {resources_measured}
# time manager_pid LIBRARY library_id (WAITING|SENT|STARTED|FAILURE) worker_id
# time manager_pid APPLICATION text
#
"""

UNITS = {
    "start": "s", "end": "s", "wall_time": "s", "cpu_time": "s", "memory": "MB",
    "virtual_memory": "MB", "swap_memory": "MB", "disk": "MB", "bytes_read": "MB",
    "bytes_written": "MB", "bytes_received": "MB", "bytes_sent": "MB", "bandwidth": "Mbps",
    "gpus": "gpus", "cores": "cores", "cores_avg": "cores", "machine_cpus": "cores",
    "machine_load": "procs", "context_switches": "switches",
    "max_concurrent_processes": "procs", "total_processes": "procs", "total_files": "files",
    "fs_nodes": "files", "workers": "workers",
}
EXTRAS = {"time_worker_start": "s", "time_worker_end": "s", "time_output_mgr": "s",
          "size_output_mgr": "MB", "time_commit_start": "s", "time_commit_end": "s",
          "time_input_mgr": "s", "size_input_mgr": "MB"}
ALL_UNITS = {**EXTRAS, **UNITS}
RANK = {key: i for i, key in enumerate(ALL_UNITS)}
_INTEGER_UNITS = {"MB", "gpus"}
_DECIMALS = {"cores": 3}


def _number(value: float, unit: str, key: str) -> str:
    if type(value) is int or (unit in _INTEGER_UNITS and key not in EXTRAS):
        return str(int(value))
    if value.is_integer():
        return str(int(value))
    text = f"{value:.{_DECIMALS.get(unit, 6)}f}".rstrip("0").rstrip(".")
    return text


_JSON_MEMO: dict[tuple, str] = {}


def resources_json(values: dict) -> str:
    """Compact JSON of resource values in upstream's key order, ``[number,"unit"]`` each.

    Requested and allocated resources repeat from task to task, so their texts are memoised.
    """
    key = tuple(values.items())
    text = _JSON_MEMO.get(key)
    if text is None:
        if len(_JSON_MEMO) >= 4096:
            _JSON_MEMO.clear()
        text = _JSON_MEMO[key] = _resources_json(values)
    return text


def _resources_json(values: dict) -> str:
    """(Keys without a unit, such as a measurement's ``exit_status``, are left out.)"""
    parts = []
    for k in sorted((k for k in values if k in RANK), key=RANK.__getitem__):
        unit = ALL_UNITS[k]
        parts.append(f'"{k}":[{_number(values[k], unit, k)},"{unit}"]')
    return "{" + ",".join(parts) + "}"


class TransactionLog:
    def __init__(self, path: str, pid: int, clock: Callable[[], float] = time.time):
        self._file = LogFile(path)
        self._pid = pid
        self._clock = clock
        self._start_us = 0
        self._last_flush = 0.0
        self._file.write(HEADER)

    def _record(self, text: str) -> None:
        now = self._clock()
        self._file.write(f"{int(now * 1e6)} {self._pid} {text}\n")
        if now - self._last_flush >= 1.0:
            self._last_flush = now
            self._file.flush()

    def manager_start(self) -> None:
        self._start_us = int(self._clock() * 1e6)
        self._record(f"MANAGER {self._pid} START 0")

    def manager_end(self) -> None:
        self._record(f"MANAGER {self._pid} END {int(self._clock() * 1e6) - self._start_us}")

    def worker_connection(self, worker_id: str, addrport: str) -> None:
        self._record(f"WORKER {worker_id} CONNECTION {addrport}")

    def worker_disconnection(self, worker_id: str | None, reason: str) -> None:
        self._record(f"WORKER {worker_id or '(null)'} DISCONNECTION {reason}")

    def worker_resources(self, worker_id: str | None, cores: float, memory: int,
                         disk: int) -> None:
        self._record(f'WORKER {worker_id or "(null)"} RESOURCES {{"memory":[{int(memory)},"MB"],'
                     f'"disk":[{int(disk)},"MB"],"cores":[{_number(cores, "cores", "cores")},'
                     '"cores"]}')

    def cache_update(self, worker_id: str | None, cachename: str, size: int, duration_us: int,
                     start_us: int) -> None:
        self._record(f"WORKER {worker_id or '(null)'} CACHE_UPDATE {cachename} {size} "
                     f"{duration_us} {start_us}")

    def transfer(self, worker_id: str | None, direction: str, cachename: str, size: int,
                 duration_us: int, start_us: int) -> None:
        self._record(f"WORKER {worker_id or '(null)'} TRANSFER {direction} {cachename} {size} "
                     f"{duration_us} {start_us}")

    def task_ready(self, task_id: int, category: str, attempt: int, resources: dict) -> None:
        self._record(f"TASK {task_id} READY {category} FIRST_RESOURCES {attempt} "
                     f"{resources_json(resources)}")

    def task_running(self, task_id: int, worker_id: str | None, resources: dict) -> None:
        self._record(f"TASK {task_id} RUNNING {worker_id or '(null)'}  FIRST_RESOURCES "
                     f"{resources_json(resources)}")

    def task_waiting_retrieval(self, task_id: int, worker_id: str | None) -> None:
        self._record(f"TASK {task_id} WAITING_RETRIEVAL {worker_id or '(null)'} ")

    def task_retrieved(self, task_id: int, result: str, exit_code: int, limits: dict | None,
                       measured: dict) -> None:
        lim = resources_json(limits) if limits else "{}"
        self._record(f"TASK {task_id} RETRIEVED {result}  {exit_code}  {lim} "
                     f"{_resources_json(measured)}")  # unique per task: not memoised

    def task_done(self, task_id: int, result: str, exit_code: int) -> None:
        self._record(f"TASK {task_id} DONE {result}  {exit_code} ")

    def category(self, name: str, kind: str, resources: dict) -> None:
        """``kind``: ``MAX``, ``MIN`` or ``FIRST <MODE>``."""
        self._record(f"CATEGORY {name} {kind} {resources_json(resources)}")

    def library(self, library_id: int, state: str, worker_id: str | None) -> None:
        self._record(f"LIBRARY {library_id} {state} {worker_id or '(null)'}")

    def application(self, text: str) -> None:
        self._record(f"APPLICATION {text}")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

