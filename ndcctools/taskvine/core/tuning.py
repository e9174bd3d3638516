"""The ``tune()`` parameters (api.md §13): names, defaults, and how values are checked.

``Tuning`` owns the current values; the rest of the core reads them as attributes named
with underscores (``tuning.hungry_minimum``). ``set`` says why it changed nothing for an
unknown name or a refused value, where upstream's ``tune`` returns -1 (upstream's own manual
tunes a misspelt name).
"""

from __future__ import annotations

from collections.abc import Callable

from .allocation import Policy

DEFAULTS: dict[str, float] = {
    "attempt-schedule-depth": 100,
    "category-steady-n-tasks": 25,
    "default-transfer-rate": 1e6,
    "disconnect-slow-worker-factor": 0,
    "hungry-minimum": 10,
    "hungry-minimum-factor": 2,
    "immediate-recovery": 0,
    "keepalive-interval": 120,
    "keepalive-timeout": 900,
    "long-timeout": 3600,
    "short-timeout": 5,
    "max-retrievals": 1,
    "worker-retrievals": 1,
    "min-transfer-timeout": 60,
    "transfer-outlier-factor": 10,
    "monitor-interval": 5,
    "prefer-dispatch": 0,
    "proportional-resources": 1,
    "proportional-whole-tasks": 0,
    "ramp-down-heuristic": 0,
    "resource-submit-multiplier": 1.0,
    "temp-replica-count": 1,
    "transfer-replica-per-cycle": 10,
    "transfer-temps-recovery": 0,
    "clean-redundant-replicas": 0,
    "shift-disk-load": 0,
    "transient-error-interval": 15,
    "wait-for-workers": 0,
    "max-workers": -1,
    "file-source-max-transfers": 1,
    "worker-source-max-transfers": 10,
    "load-from-shared-filesystem": 0,
    "perf-log-interval": 5,
    "update-interval": 60,
    "task-groups": 0,
    "resource-management-interval": 30,
    "max-task-stdout-storage": 1 << 30,
    "max-new-workers": 10,
    "large-task-check-interval": 180000000,
    "option-blocklist-slow-workers-timeout": 900,
    "watch-library-logfiles": 0,
    "sandbox-grow-factor": 2,
    "max-library-retries": 15,
    "disk-proportion-available-to-task": 0.75,
    "enforce-worker-eviction-interval": 0,
}

ALIASES = {
    "force-proportional-resources": "proportional-resources",
    "force-proportional-resources-whole-tasks": "proportional-whole-tasks",
    "asynchrony-multiplier": "resource-submit-multiplier",
    "disconnect-slow-workers-factor": "disconnect-slow-worker-factor",
}


def _at_least(low: float) -> Callable[[float], float]:
    return lambda v: max(low, v)


def _open_unit(v: float) -> float | None:
    return v if 0 < v < 1 else None


def _interval(v: float) -> float:
    return v if v >= 1 else DEFAULTS["transient-error-interval"]


CHECKS: dict[str, Callable[[float], float | None]] = {  # None: a value refused
    "attempt-schedule-depth": _at_least(1),
    "hungry-minimum": _at_least(1),
    "hungry-minimum-factor": _at_least(1),
    "resource-submit-multiplier": _at_least(1),
    "sandbox-grow-factor": _at_least(1.1),
    "disk-proportion-available-to-task": _open_unit,
    "transient-error-interval": _interval,
}


class Tuning:
    """Current values of the tunable parameters."""

    def __init__(self) -> None:
        for name, value in DEFAULTS.items():
            setattr(self, name.replace("-", "_"), value)
        self.policy = self._policy()

    def _policy(self) -> Policy:
        """The allocation policy these values describe (rebuilt when they change)."""
        return Policy(bool(self.proportional_resources), bool(self.proportional_whole_tasks),
                      self.resource_submit_multiplier, self.disk_proportion_available_to_task)

    def set(self, name: str, value: float) -> str | None:
        """Set parameter ``name``; if nothing changed (no such parameter, a value it refuses),
        the reason."""
        if not isinstance(name, str):
            raise TypeError("tune() takes the parameter name as a string")
        canonical = ALIASES.get(name, name)
        if canonical not in DEFAULTS:
            return f"unknown parameter {name!r} ignored; known: {', '.join(sorted(DEFAULTS))}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"tune({name!r}, ...) needs a number, not {value!r}")
        value = CHECKS.get(canonical, float)(value)
        if value is None:
            return f"value refused for {name!r}: see the tune() parameters for its range"
        setattr(self, canonical.replace("-", "_"), value)
        if canonical == "proportional-resources":
            self.proportional_whole_tasks = 1 if value > 0 else 0
        self.policy = self._policy()
        return None
