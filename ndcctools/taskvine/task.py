"""Task: the user's description of one command to run on a worker (api.md §5).

A ``Task`` owns what the user set (command, files, resources, limits, labels). What
happened to it once submitted (id, state, result, exit code, output, where it ran) is owned
by the manager's task record (``core.tasks.TaskRecord``); the properties below only read it.
Resubmitting a finished task gives it a fresh record and a new id.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from . import cvine
from .file import File
from .results import result_string

if TYPE_CHECKING:
    from .core.tasks import TaskRecord
    from .manager import Manager

RESOURCE_FIELDS = (
    "start", "end", "wall_time", "cpu_time", "cores", "cores_avg", "gpus",
    "max_concurrent_processes", "total_processes", "virtual_memory", "memory", "swap_memory",
    "bytes_read", "bytes_written", "bytes_received", "bytes_sent", "bandwidth", "total_files",
    "disk", "exit_status",
)

_METRICS = (
    "time_when_submitted", "time_when_done", "time_when_commit_start", "time_when_commit_end",
    "time_when_retrieval", "time_workers_execute_last", "time_workers_execute_all",
    "time_workers_execute_exhaustion", "time_workers_execute_failure", "bytes_received",
    "bytes_sent", "bytes_transferred",
)

_SCHEDULERS = {"fcfs": cvine.VINE_SCHEDULE_FCFS, "files": cvine.VINE_SCHEDULE_FILES,
               "time": cvine.VINE_SCHEDULE_TIME, "rand": cvine.VINE_SCHEDULE_RAND,
               "worst": cvine.VINE_SCHEDULE_WORST, "disk": cvine.VINE_SCHEDULE_DISK}


class FunctionCallNoResult(Exception):
    """The output of a FunctionCall that did not complete."""


class ResourceSummary:
    """Resource values of a task (requested, allocated or measured); unset fields are -1."""

    __slots__ = RESOURCE_FIELDS + ("snapshots",)

    def __init__(self, **values: float):
        for name in RESOURCE_FIELDS:
            setattr(self, name, values.get(name, -1))
        self.snapshots: list = []

    def __repr__(self) -> str:
        shown = {k: getattr(self, k) for k in RESOURCE_FIELDS if getattr(self, k) != -1}
        return f"ResourceSummary({shown})"


class Mounting:
    """One file attached to a task under a sandbox name, with mount flags."""

    __slots__ = ("file", "remote_name", "flags")

    def __init__(self, file: File, remote_name: str, flags: int):
        self.file = file
        self.remote_name = remote_name
        self.flags = flags


def _check_remote_name(remote_name: Any) -> str:
    if not isinstance(remote_name, str):
        raise TypeError(f"remote_name must be a str, not {type(remote_name).__name__}")
    if not remote_name or remote_name.startswith("/"):
        raise ValueError(f"invalid file description: remote name {remote_name!r} must be a "
                         "relative path inside the task sandbox")
    return remote_name


def _check_file(file: Any) -> File:
    if not isinstance(file, File):
        raise TypeError(f"expected a File declared on the manager, not {type(file).__name__}")
    return file


class Task:
    """A shell command to run in a sandbox on a worker."""

    def __init__(self, command: str, **task_info: Any):
        if isinstance(command, dict):
            raise TypeError("Task() takes the command first; pass task options as keyword "
                            "arguments, e.g. Task(cmd, **options)")
        self._command = command
        self._tag: str | None = None
        self._category = "default"
        self._priority = 0.0
        self._retries = -1
        self._max_forsaken = -1
        self._cores = -1.0
        self._memory = -1
        self._disk = -1
        self._gpus = -1
        self._time_max = 0.0
        self._time_min = 0.0
        self._time_start = 0
        self._time_end = 0
        self._env: dict[str, str | None] = {}
        self._features: list[str] = []
        self._inputs: list[Mounting] = []
        self._outputs: list[Mounting] = []
        self._contexts: list[str] = []  # sandbox names of execution contexts, outermost first
        self._scheduler = cvine.VINE_SCHEDULE_UNSET
        self._library_required: str | None = None
        self._library_provided: str | None = None
        self._function_slots = 0
        self._exec_mode = 0
        self._monitor_output: str | None = None
        self._snapshot_file: Any = None
        self._record: TaskRecord | None = None
        self._manager: Manager | None = None
        if task_info:
            self._apply_options(task_info)

    # ------------------------------------------------------------------ keyword options
    _OPTION_SETTERS = ("library_required", "library_provided", "scheduler", "tag", "category",
                       "snapshot_file", "retries", "cores", "memory", "disk", "gpus", "priority",
                       "time_end", "time_start", "time_max", "time_min", "monitor_output")

    def _apply_options(self, info: dict[str, Any]) -> None:
        for name in self._OPTION_SETTERS:
            if name in info:
                getattr(self, f"set_{name}")(info[name])
        features = info.get("features")
        if features is not None:
            if isinstance(features, str):
                features = [features]
            elif not isinstance(features, (list, tuple)):
                raise TypeError("features must be a string or a list of strings")
            for f in features:
                self.add_feature(f)
        for file, spec in (info.get("inputs") or {}).items():
            self._attach(self.add_input, file, spec, ("strict_input", "mount_symlink"))
        for file, spec in (info.get("outputs") or {}).items():
            self._attach(self.add_output, file, spec, ("watch", "failure_only", "success_only"))
        for name, value in (info.get("env") or {}).items():
            self.set_env_var(name, value)

    @staticmethod
    def _attach(method: Any, file: Any, spec: Any, flags: tuple[str, ...]) -> None:
        if not isinstance(file, File):
            raise TypeError(f"keys of inputs/outputs must be File objects, not {type(file)}")
        if isinstance(spec, str):
            method(file, spec)
        elif isinstance(spec, dict):
            method(file, spec["remote_name"], **{k: spec[k] for k in flags if k in spec})
        else:
            raise TypeError("values of inputs/outputs must be a remote name or a dict")

    # ------------------------------------------------------------------ files
    def add_input(self, file: File, remote_name: str, strict_input: bool = False,
                  mount_symlink: bool = False) -> None:
        """Make ``file`` appear as ``remote_name`` in the sandbox before the command runs."""
        flags = (cvine.VINE_FIXED_LOCATION if strict_input else 0) | (
            cvine.VINE_MOUNT_SYMLINK if mount_symlink else 0)
        self._inputs.append(Mounting(_check_file(file), _check_remote_name(remote_name), flags))

    def add_output(self, file: File, remote_name: str, watch: bool = False,
                   failure_only: bool | None = None, success_only: bool | None = None) -> None:
        """Bring ``remote_name`` back from the sandbox into ``file`` after the command."""
        if failure_only and success_only:
            raise ValueError(f"output {remote_name}: failure_only and success_only exclude "
                             "each other")
        if _check_file(file).type() not in (cvine.VINE_FILE, cvine.VINE_BUFFER, cvine.VINE_TEMP):
            raise ValueError(f"invalid output file description for {remote_name}")
        if watch and file.type() != cvine.VINE_FILE:
            raise ValueError(f"invalid output file description for {remote_name}: only local "
                             "files can be watched")
        flags = (cvine.VINE_FAILURE_ONLY if failure_only else 0) | (
            cvine.VINE_SUCCESS_ONLY if success_only else 0) | (cvine.VINE_WATCH if watch else 0)
        self._outputs.append(Mounting(file, _check_remote_name(remote_name), flags))

    def add_execution_context(self, file: File) -> None:
        """Run the command inside ``file``, a directory with ``bin/run_in_env`` (a poncho or
        starch package, say): the command becomes ``<dir>/bin/run_in_env <command>``;
        contexts added later run inside earlier ones."""
        remote = f"__vine_env_{_check_file(file)._cachename}"
        self.add_input(file, remote)
        self._contexts.append(remote)

    add_environment = add_execution_context
    add_poncho_package = add_execution_context
    add_starch_package = add_execution_context

    def _full_command(self) -> str:
        """The command as the worker runs it: wrapped in the execution contexts."""
        if not self._contexts:
            return self._command
        return " ".join(f"./{c}/bin/run_in_env" for c in self._contexts) + " " + self._command

    @property
    def _strict(self) -> bool:
        """Whether an input was added with ``strict_input=True``."""
        return any(m.flags & cvine.VINE_FIXED_LOCATION for m in self._inputs)

    # ------------------------------------------------------------------ resources and limits
    def set_cores(self, cores: float) -> None:
        self._cores = float(cores)

    def set_memory(self, memory: int) -> None:
        self._memory = int(memory)

    def set_disk(self, disk: int) -> None:
        self._disk = int(disk)

    def set_gpus(self, gpus: int) -> None:
        self._gpus = int(gpus)

    def set_time_max(self, seconds: float) -> None:
        """Wall-time limit in seconds from the start on the worker (< 1: no limit)."""
        self._time_max = float(seconds) if seconds >= 1 else 0.0

    def set_time_min(self, seconds: float) -> None:
        self._time_min = float(seconds) if seconds >= 1 else 0.0

    def set_time_start(self, useconds: int) -> None:
        """Do not dispatch before this absolute time (µs since the epoch)."""
        self._time_start = int(useconds)

    def set_time_end(self, useconds: int) -> None:
        """Absolute deadline (µs since the epoch)."""
        self._time_end = int(useconds)

    def set_priority(self, priority: float) -> None:
        self._priority = float(priority)

    def set_retries(self, retries: int) -> None:
        self._retries = int(retries) if retries >= 1 else -1

    def set_max_forsaken(self, n: int) -> None:
        self._max_forsaken = int(n)

    def set_env_var(self, name: str, value: str | None = None) -> None:
        if not isinstance(name, str) or not name or "=" in name:
            raise ValueError(f"invalid environment variable name {name!r}")
        self._env[name] = None if value is None else str(value)

    def set_tag(self, tag: str) -> None:
        self._tag = tag

    def set_category(self, name: str) -> None:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ValueError(f"invalid category name {name!r}: a category is one word")
        self._category = name

    def add_feature(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"invalid feature {name!r}")
        self._features.append(name)

    def set_scheduler(self, scheduler: str | int) -> None:
        if isinstance(scheduler, str):
            if scheduler not in _SCHEDULERS:
                raise ValueError(f"unknown scheduler {scheduler!r}; use one of "
                                 f"{', '.join(_SCHEDULERS)}")
            scheduler = _SCHEDULERS[scheduler]
        self._scheduler = int(scheduler)

    def set_monitor_output(self, directory: str) -> None:
        self._monitor_output = directory

    def set_snapshot_file(self, snapshot: Any) -> None:
        self._snapshot_file = snapshot

    # library-related setters (used by serverless, issue 4)
    def set_library_required(self, name: str) -> None:
        if self._library_provided is not None:
            raise ValueError("a task cannot both provide and require a library")
        self._library_required = getattr(name, "library_name", name)

    def get_library_required(self) -> str | None:
        return self._library_required

    def set_library_provided(self, name: str) -> None:
        if self._library_required is not None:
            raise ValueError("a task cannot both provide and require a library")
        self._library_provided = name

    def get_libray_provided(self) -> str | None:  # sic: upstream's public spelling
        return self._library_provided

    needs_library = set_library_required
    provides_library = set_library_provided

    def set_function_slots(self, slots: int) -> None:
        self._function_slots = int(slots)

    # ------------------------------------------------------------------ hooks
    def submit_finalize(self) -> None:
        """Called by the manager right before the task is registered (subclasses extend)."""

    def _unsubmitted_copy(self) -> Task:
        """A copy with its own lists of files, environment and features, not submitted yet:
        what the manager submits itself (recovery tasks, library instances)."""
        clone = copy.copy(self)
        clone._inputs, clone._outputs = list(self._inputs), list(self._outputs)
        clone._env, clone._features = dict(self._env), list(self._features)
        clone._record = None
        return clone

    def addref(self) -> Task:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    # ------------------------------------------------------------------ what happened
    @property
    def manager(self) -> Manager | None:
        return self._manager

    @property
    def id(self) -> int:
        return self._record.task_id if self._record else 0

    @property
    def command(self) -> str:
        return self._command

    @property
    def tag(self) -> str | None:
        return self._tag

    @property
    def category(self) -> str:
        return self._category

    @property
    def priority(self) -> float:
        return self._priority

    @property
    def state(self) -> str:
        return self._record.state_name if self._record else "INITIAL"

    @property
    def result(self) -> str:
        return result_string(self._record.result if self._record else cvine.VINE_RESULT_UNKNOWN)

    @property
    def exit_code(self) -> int:
        return self._record.exit_code if self._record else -1

    @property
    def std_output(self) -> str | None:
        raw = self._record.stdout if self._record else None
        return None if raw is None else raw.decode("utf-8", "replace")

    @property
    def output(self) -> str | None:
        return self.std_output

    @property
    def hostname(self) -> str | None:
        return self._record.hostname if self._record else None

    @property
    def addrport(self) -> str | None:
        return self._record.addrport if self._record else None

    def completed(self) -> bool:
        return self.result == "success"

    def successful(self) -> bool:
        return self.completed() and self.exit_code == 0

    @property
    def resources_requested(self) -> ResourceSummary:
        return ResourceSummary(cores=self._cores, memory=self._memory, disk=self._disk,
                               gpus=self._gpus, wall_time=self._time_max or -1)

    @property
    def resources_allocated(self) -> ResourceSummary:
        alloc = self._record.allocation if self._record else None
        if alloc is None:
            return ResourceSummary()
        return ResourceSummary(cores=alloc.cores, memory=alloc.memory, disk=alloc.disk,
                               gpus=alloc.gpus)

    @property
    def resources_measured(self) -> ResourceSummary:
        """What the worker measured (monitoring on); else start, end and wall time with the
        allocation in place of what was used."""
        rec = self._record
        if rec is None or not rec.time_worker_end:
            return ResourceSummary()
        times = {"start": rec.time_worker_start, "end": rec.time_worker_end,
                 "wall_time": (rec.time_worker_end - rec.time_worker_start) / 1e6}
        if rec.measured is not None:
            return ResourceSummary(**{**rec.measured, **times})
        alloc = rec.allocation
        return ResourceSummary(
            **times, cores=alloc.cores if alloc else -1, memory=alloc.memory if alloc else -1,
            disk=rec.sandbox_mb, gpus=alloc.gpus if alloc else -1)

    @property
    def limits_exceeded(self) -> ResourceSummary | None:
        """The resources that went over the allocation (their measured values), or None."""
        rec = self._record
        if rec is None or not rec.limits_exceeded:
            return None
        return ResourceSummary(**rec.limits_exceeded)

    def get_metric(self, name: str) -> int:
        if self._record is None or name not in _METRICS:
            return 0
        return int(self._record.metrics.get(name, 0))

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.state} {self._command[:40]!r}>"

