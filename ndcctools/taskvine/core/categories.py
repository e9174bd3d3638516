"""Categories: the one owner of per-category state (api.md §9.2, §12.2–12.3).

Theory of operation. Every task belongs to a category (``"default"`` unless set). A
``Category`` holds what the user configured (mode, max, min, first-allocation guess,
autolabel per resource, max concurrent tasks), what its tasks used (peaks of cores, memory,
disk and gpus per completed task, with their wall times) and its counts. ``Categories``
keeps them all and answers the engine::

    user ──set_*──► Categories ◄── on_change(rec, old, new)   every task state change
                       │       ◄── record(cat, values, wall)  a monitored task's peaks
                       │       ◄── exhausted(rec)             retry bigger, or give up?
                       ├──► limits(rec) → (max, min)    fed to allocation.allocate()
                       └──► full(cat)                   max concurrent reached?

Allocation. In *fixed* mode a task's limits are the category max (api.md §9.1). In an
automatic mode, the first attempt's limits are the *first allocation*: until
``category-steady-n-tasks`` tasks were measured, the guess (``set_category_first_allocation
_guess``) merged over the max; then, per resource with autolabel on, what ``autoalloc``
predicts from the measurements (rounded up to whole units; at least 1 core, 1 MB). A task
that ends with resource exhaustion in an automatic mode is retried with the category max
(unset resources: the whole worker); exhausted again at the max, or in fixed mode, it ends.
Bucketing modes start, before the steady state, with 1 core/1000 MB/1000 MB/0 gpus (or the
guess) as a category *minimum*, as upstream does. Predictions are recomputed when the
measurements grew by 5% (at least one) since the last computation.

Measurements come from the monitor: when a task reaches WAITING_RETRIEVAL with result
success and its record carries ``measured`` (a dict or an object with cores/memory/disk/gpus;
values < 0 are unknown), its peaks are recorded. Without monitoring this costs one attribute
look-up per task. ``record()`` is the same door for ``initialize_categories`` and for tests.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import cvine
from ..resources import Resources
from . import autoalloc
from .allocation import can_ever_fit
from .status import Stats
from .tasks import DONE, READY, RETRIEVED, RUNNING, WAITING_RETRIEVAL

if TYPE_CHECKING:
    from .tasks import TaskRecord
    from .tuning import Tuning
    from .txnlog import TransactionLog
    from .workers import WorkerRecord

RESOURCES = ("cores", "memory", "disk", "gpus")
FIXED = cvine.VINE_ALLOCATION_MODE_FIXED
BUCKETING_GUESS = {"cores": 1, "memory": 1000, "disk": 1000, "gpus": 0}
MODE_NAMES = {
    "fixed": cvine.VINE_ALLOCATION_MODE_FIXED,
    "max": cvine.VINE_ALLOCATION_MODE_MAX,
    "min waste": cvine.VINE_ALLOCATION_MODE_MIN_WASTE,
    "max throughput": cvine.VINE_ALLOCATION_MODE_MAX_THROUGHPUT,
    "greedy bucketing": cvine.VINE_ALLOCATION_MODE_GREEDY_BUCKETING,
    "exhaustive bucketing": cvine.VINE_ALLOCATION_MODE_EXHAUSTIVE_BUCKETING,
    "det greedy bucketing": cvine.VINE_ALLOCATION_MODE_DET_GREEDY_BUCKETING,
    "det exhaustive bucketing": cvine.VINE_ALLOCATION_MODE_DET_EXHAUSTIVE_BUCKETING,
    "quantized bucketing": cvine.VINE_ALLOCATION_MODE_QUANTIZED_BUCKETING,
}
_MODE_TEXT = {value: name for name, value in MODE_NAMES.items()}
_BUCKETING = {cvine.VINE_ALLOCATION_MODE_GREEDY_BUCKETING,
              cvine.VINE_ALLOCATION_MODE_EXHAUSTIVE_BUCKETING,
              cvine.VINE_ALLOCATION_MODE_DET_GREEDY_BUCKETING,
              cvine.VINE_ALLOCATION_MODE_DET_EXHAUSTIVE_BUCKETING,
              cvine.VINE_ALLOCATION_MODE_QUANTIZED_BUCKETING}


def parse_mode(mode: str | int) -> int:
    """A ``VINE_ALLOCATION_MODE_*`` value from a name (spaces, underscores or dashes, any
    case, with or without the ``VINE_ALLOCATION_MODE_`` prefix) or the constant itself."""
    if isinstance(mode, int) and not isinstance(mode, bool):
        if mode in _MODE_TEXT:
            return mode
    elif isinstance(mode, str):
        name = mode.strip().lower().replace("_", " ").replace("-", " ")
        name = " ".join(name.split())
        name = name.removeprefix("vine allocation mode ")
        if name in MODE_NAMES:
            return MODE_NAMES[name]
    raise ValueError(f"unknown category mode {mode!r}; use one of "
                     f"{', '.join(repr(n) for n in MODE_NAMES)} or a VINE_ALLOCATION_MODE_* "
                     "constant")


def mode_name(mode: int) -> str:
    return _MODE_TEXT[mode]


class CategoryStats(Stats):
    """``stats_category(cat)``: the ``Stats`` fields counted for one category, plus its
    allocation state."""

    __slots__ = ("category", "mode", "first_allocation", "max_allocation", "max_seen",
                 "first_allocation_count", "max_allocation_count", "measured_tasks")


class Category:
    """One category: configuration, measurements, counts."""

    __slots__ = ("name", "mode", "max", "min", "guess", "autolabel", "max_concurrent",
                 "ceiling", "seen", "walls", "prediction", "predicted_at", "states",
                 "submitted", "dispatched", "done", "failed", "successful", "cancelled",
                 "exhausted", "first_count", "max_count", "time_execute", "time_good",
                 "time_exhaustion", "exhausted_at", "slow_multiplier", "good_count")

    def __init__(self, name: str, mode: int):
        self.name = name
        self.mode = mode
        self.max: dict[str, float] = {}
        self.min: dict[str, float] = {}
        self.guess: dict[str, float] = {}
        self.autolabel = dict.fromkeys(RESOURCES, True)
        self.max_concurrent = -1
        self.ceiling: dict[str, float] = {}  # initialize_categories' rm: top when max unset
        self.seen: dict[str, list[float]] = {r: [] for r in RESOURCES}  # peaks per resource
        self.walls: dict[str, list[float]] = {r: [] for r in RESOURCES}  # their wall times
        self.prediction: dict[str, autoalloc.Prediction] = {}
        self.predicted_at = -1  # measured tasks when ``prediction`` was computed
        self.states = [0] * 6  # tasks of this category in each state now
        self.submitted = self.dispatched = self.done = self.failed = 0
        self.successful = self.cancelled = self.exhausted = 0
        self.first_count = self.max_count = 0
        self.time_execute = self.time_good = self.time_exhaustion = 0
        self.exhausted_at: dict[str, float] = {}  # largest allocation a task went over
        self.slow_multiplier = -1.0  # enable_disconnect_slow_workers_category (<0: default's)
        self.good_count = 0  # successful executions, whose wall times are in time_good

    @property
    def automatic(self) -> bool:
        return self.mode != FIXED

    def measured_tasks(self) -> int:
        return max(len(values) for values in self.seen.values())

    def max_seen(self) -> dict[str, float]:
        return {r: max(v) for r, v in self.seen.items() if v}


class Categories:
    """Every category the manager knows, by name."""

    def __init__(self, tuning: Tuning, rng: random.Random | None = None,
                 txn: TransactionLog | None = None):
        self.tuning = tuning
        self.txn = txn  # CATEGORY records: on changes of configuration or first allocation
        self._logged: dict[str, tuple] = {}  # category -> what its last records said
        self.rng = rng or random.Random()
        self.by_name: dict[str, Category] = {}
        self.default_mode = FIXED
        self.limited: dict[str, Category] = {}  # categories with a max concurrent limit
        self.at_max: set[int] = set()  # task ids whose next attempt gets the category max
        self.watch_slow = False  # some category has a slow-worker multiplier

    def get(self, name: str) -> Category:
        c = self.by_name.get(name)
        if c is None:
            c = self.by_name[name] = Category(name, self.default_mode)
        return c

    # ------------------------------------------------------------------ configuration
    def set_max(self, name: str, resources: dict) -> None:
        self.get(name).max = _resources(resources)
        self.log_state(name)

    def set_min(self, name: str, resources: dict) -> None:
        self.get(name).min = _resources(resources)
        self.log_state(name)

    def set_guess(self, name: str, resources: dict) -> None:
        self.get(name).guess = _resources(resources)
        self.log_state(name)

    def set_mode(self, name: str | None, mode: str | int) -> None:
        """Set a category's mode; ``name=None`` sets the mode of categories created later."""
        value = parse_mode(mode)
        if name is None:
            self.default_mode = value
        else:
            c = self.get(name)
            c.mode, c.predicted_at = value, -1
            self.log_state(name)

    def set_autolabel(self, name: str, resource: str, on: bool) -> None:
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}; one of {', '.join(RESOURCES)}")
        c = self.get(name)
        c.autolabel[resource] = bool(on)
        c.predicted_at = -1

    def set_max_concurrent(self, name: str, n: int) -> None:
        c = self.get(name)
        c.max_concurrent = int(n)
        if c.max_concurrent >= 0:
            self.limited[name] = c
        else:
            self.limited.pop(name, None)

    def set_slow_multiplier(self, name: str, multiplier: float) -> None:
        """Tasks of ``name`` running longer than ``multiplier`` × the category's average are
        slow (api.md §10.4); for ``"default"`` this also covers categories without their own
        setting (< 0). 0 (or < 1 for the default) turns it off."""
        self.get(name).slow_multiplier = float(multiplier)
        self.watch_slow = any(c.slow_multiplier >= 1 for c in self.by_name.values())

    def slow_after_us(self, name: str) -> float | None:
        """Microseconds after which a running task of ``name`` is slow (None: never)."""
        c = self.by_name.get(name)
        if c is None or not c.good_count:
            return None
        mult = c.slow_multiplier
        if mult < 0:
            default = self.by_name.get("default")
            mult = default.slow_multiplier if default is not None else -1
        return mult * c.time_good / c.good_count if mult >= 1 else None

    def seed(self, path: str, ceiling: dict | None) -> int:
        """Record the resource summaries in file ``path`` (one JSON object per line:
        ``category`` and resource values, numbers or ``[value, "unit"]`` pairs, as the
        resource monitor writes them; ``wall_time`` in seconds weighs them); ``ceiling`` is the
        largest allocation for categories without a max. Returns the summaries read."""
        n = 0
        with open(path) as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    summary = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not a JSON object: {e}") from None
                if not isinstance(summary, dict):
                    raise ValueError(f"{path}:{number}: not a JSON object")
                name = str(summary.get("category") or "default")
                wall = _number(summary.get("wall_time"))
                self.record(name, summary, wall if wall and wall > 0 else 1.0)
                n += 1
        for c in self.by_name.values():
            c.ceiling = _resources(ceiling or {})
        return n

    # ------------------------------------------------------------------ measurements
    def record(self, name: str, values: Any, wall: float = 1.0) -> None:
        """Record the peaks one task of category ``name`` reached (a dict or an object with
        resource attributes; missing or negative values are not recorded)."""
        c = self.get(name)
        get = values.get if isinstance(values, dict) else lambda k: getattr(values, k, None)
        for r in RESOURCES:
            v = _number(get(r))
            if v is not None and v >= 0:
                c.seen[r].append(v)
                c.walls[r].append(wall)

    # ------------------------------------------------------------------ engine hooks
    def limits(self, rec: TaskRecord) -> tuple[dict | None, dict | None]:
        """(max, min) of the next attempt of ``rec``, as ``allocation.allocate`` takes them."""
        c = self.by_name.get(rec.task._category)
        if c is None:
            return None, None
        if c.mode == FIXED or rec.task_id in self.at_max:
            return c.max, c.min
        return self._first_allocation(c)

    def full(self, name: str) -> bool:
        """Whether category ``name`` runs as many tasks as it may."""
        c = self.limited.get(name)
        return c is not None and c.states[RUNNING] >= c.max_concurrent

    def on_change(self, rec: TaskRecord, old: int, new: int) -> None:
        """A task changed state: keep the counts (library instances are not counted)."""
        if rec.library is not None:
            return
        name = rec.task._category
        c = self.by_name.get(name) or self.get(name)
        states = c.states
        states[old] -= 1
        states[new] += 1
        if new == RUNNING:
            c.dispatched += 1
            if rec.task_id in self.at_max:
                c.max_count += 1
            else:
                c.first_count += 1
        elif new == WAITING_RETRIEVAL:
            self._completed(c, rec)
        elif new == READY and old == 0:
            c.submitted += 1
        elif new == RETRIEVED:
            self.at_max.discard(rec.task_id)
            if c.mode != FIXED:  # a fixed category's records change only when it is set
                self.log_state(c.name)
        elif new == DONE:
            self._returned(c, rec)

    def _completed(self, c: Category, rec: TaskRecord) -> None:
        wall = rec.time_worker_end - rec.time_worker_start
        c.time_execute += wall
        if rec.result == cvine.VINE_RESULT_SUCCESS:
            c.time_good += wall
            c.good_count += 1
            if rec.measured is not None:
                self.record(c.name, rec.measured, max(wall / 1e6, 1e-6))

    @staticmethod
    def _returned(c: Category, rec: TaskRecord) -> None:
        c.states[DONE] -= 1  # gone from the table
        c.done += 1
        if rec.result == cvine.VINE_RESULT_SUCCESS and rec.exit_code == 0:
            c.successful += 1
        else:
            c.failed += 1
        if rec.result == cvine.VINE_RESULT_CANCELLED:
            c.cancelled += 1

    def exhausted(self, rec: TaskRecord) -> bool:
        """``rec`` went over its allocation: True if it is to be retried with the category
        max (automatic modes, first attempt), False if it ends."""
        c = self.get(rec.task._category)
        c.exhausted += 1
        c.time_exhaustion += rec.time_worker_end - rec.time_worker_start
        alloc = rec.allocation
        if alloc is not None:
            for r in RESOURCES:
                c.exhausted_at[r] = max(c.exhausted_at.get(r, 0), getattr(alloc, r))
        if c.mode == FIXED or rec.task_id in self.at_max:
            return False
        self.at_max.add(rec.task_id)
        return True

    # ------------------------------------------------------------------ first allocation
    def _first_allocation(self, c: Category) -> tuple[dict, dict]:
        n = c.measured_tasks()
        if n < max(1, int(self.tuning.category_steady_n_tasks)):
            if c.mode in _BUCKETING:
                return c.max, {**BUCKETING_GUESS, **c.guess, **c.min}
            return {**c.max, **c.guess}, c.min
        if c.predicted_at < 0 or n - c.predicted_at >= max(1, c.predicted_at // 20):
            self._predict(c)
            c.predicted_at = n
        first = dict(c.max)
        for r, prediction in c.prediction.items():
            value = autoalloc.choose(prediction, self.rng)
            if value is not None:
                first[r] = _whole(r, value)
        return first, c.min

    def _predict(self, c: Category) -> None:
        c.prediction = {}
        for r in RESOURCES:
            if c.autolabel[r] and c.seen[r]:
                top = c.max.get(r, -1)
                top = top if top > 0 else c.ceiling.get(r)
                c.prediction[r] = autoalloc.predict(c.mode, c.seen[r], c.walls[r], top)

    def log_state(self, name: str) -> None:
        """Write the ``CATEGORY`` records of ``name`` (max, min, first allocation and mode)
        to the transactions log, if they changed since they were last written."""
        c = self.by_name.get(name)
        if self.txn is None or c is None:
            return
        first = self.first_allocation(name)
        state = (c.mode, *(tuple(sorted(d.items())) for d in (c.max, c.min, first)))
        if self._logged.get(name) == state:
            return
        self._logged[name] = state
        self.txn.category(name, "MAX", c.max)
        self.txn.category(name, "MIN", c.min)
        self.txn.category(name, f"FIRST {mode_name(c.mode).upper().replace(' ', '_')}", first)

    def first_allocation(self, name: str) -> dict:
        """What the next first attempt of category ``name`` would be limited to (a draw,
        for random modes)."""
        c = self.by_name.get(name)
        if c is None:
            return {}
        if c.mode == FIXED:
            return dict(c.max)
        return self._first_allocation(c)[0]

    # ------------------------------------------------------------------ reports
    def stats(self, name: str, workers_able: int) -> CategoryStats:
        s = CategoryStats()
        s.category = name
        c = self.by_name.get(name) or Category(name, self.default_mode)
        states = c.states
        s.tasks_waiting = states[READY]
        s.tasks_running = states[RUNNING]
        s.tasks_on_workers = states[RUNNING] + states[WAITING_RETRIEVAL]
        s.tasks_with_results = states[WAITING_RETRIEVAL] + states[RETRIEVED]
        s.tasks_submitted, s.tasks_dispatched = c.submitted, c.dispatched
        s.tasks_done, s.tasks_failed, s.tasks_successful = c.done, c.failed, c.successful
        s.tasks_cancelled, s.tasks_exhausted_attempts = c.cancelled, c.exhausted
        s.time_workers_execute = c.time_execute
        s.time_workers_execute_good = c.time_good
        s.time_workers_execute_exhaustion = c.time_exhaustion
        s.workers_able = workers_able
        s.mode = mode_name(c.mode)
        s.first_allocation = self.first_allocation(name) if name in self.by_name else {}
        s.max_allocation = dict(c.max)
        s.max_seen = c.max_seen()
        s.first_allocation_count, s.max_allocation_count = c.first_count, c.max_count
        s.measured_tasks = c.measured_tasks()
        return s

    def row(self, name: str, workers_able: int) -> dict:
        """The ``status("categories")`` record of one category (api.md §12.2)."""
        c = self.by_name[name]
        s = self.stats(name, workers_able)
        row = {"category": name}
        for key in ("tasks_waiting", "tasks_running", "tasks_on_workers", "tasks_dispatched",
                    "tasks_done", "tasks_failed", "tasks_successful", "tasks_cancelled",
                    "workers_able"):
            row[key] = getattr(s, key)
        seen = s.max_seen
        for r in RESOURCES:
            row[f"max_{r}"] = _max_text(c.max.get(r), seen.get(r), c.exhausted_at.get(r))
        row["first_allocation"] = {r: s.first_allocation.get(r, -1) for r in RESOURCES}
        row["max_allocation"] = {r: c.max.get(r, -1) for r in RESOURCES}
        if seen:
            row["max_seen"] = {r: seen.get(r, -1) for r in RESOURCES}
        row["first_allocation_count"] = c.first_count
        row["max_allocation_count"] = c.max_count
        row["mode"] = mode_name(c.mode)
        return row

    def names_with_tasks(self) -> list[str]:
        return [name for name, c in self.by_name.items() if c.submitted]

    def workers_able(self, name: str, workers: Iterable[WorkerRecord]) -> int:
        """Ready workers big enough for the category's max."""
        c = self.by_name.get(name)
        cmax = c.max if c is not None else {}
        need = Resources(*(cmax.get(r, -1) for r in RESOURCES))
        return sum(1 for w in workers if w.ready and can_ever_fit(need, w.total))


def _max_text(declared: float | None, seen: float | None, exhausted: float | None) -> str:
    """``max_<resource>`` of a status record: the declared max; else ``>N`` when tasks went
    over an allocation of N larger than any peak seen, ``~N`` for the largest peak seen;
    ``na`` when nothing is known."""
    if declared is not None and declared >= 0:
        return _text(declared)
    if exhausted is not None and exhausted > 0 and (seen is None or exhausted >= seen):
        return ">" + _text(exhausted)
    if seen is not None:
        return "~" + _text(seen)
    return "na"


def _text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _whole(resource: str, value: float) -> float:
    """An allocation in whole units: at least 1 core / 1 MB (GPUs may be 0)."""
    low = 0 if resource == "gpus" else 1
    return max(low, math.ceil(value - 1e-9))


def _number(value: Any) -> float | None:
    """A resource value: a number, or the first element of a ``[value, "unit"]`` pair."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _resources(resources: dict) -> dict:
    return {k: v for k, v in resources.items() if k in RESOURCES}
