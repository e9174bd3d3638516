"""Helpers that upstream programs import from ``ndcctools.taskvine.utils`` (api.md §19)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from . import cvine


def get_c_constant(name: str) -> int:
    """The value of ``VINE_<NAME>``: ``get_c_constant("result_success") == 0``.

    Unknown names raise ``AttributeError``.
    """
    return getattr(cvine, f"VINE_{name.upper()}")


def set_port_range(port: int | Sequence[int]) -> None:
    """Restrict the ports managers choose with ``port=0`` to ``port`` or ``(low, high)``.

    Like upstream, this writes ``TCP_LOW_PORT``/``TCP_HIGH_PORT`` into the process
    environment (so child processes inherit it).
    """
    if isinstance(port, bool):
        raise TypeError(f"invalid port {port!r}")
    if isinstance(port, int):
        low = high = port
    elif isinstance(port, Sequence) and not isinstance(port, str) and len(port) == 2:
        low, high = int(port[0]), int(port[1])
    else:
        raise TypeError(f"port must be an int or a (low, high) pair, not {port!r}")
    if low > high:
        raise TypeError(f"port range {low}..{high}: low is above high")
    if not 0 <= low <= high <= 65535:
        raise ValueError(f"port range {low}..{high} is outside 0..65535")
    os.environ["TCP_LOW_PORT"] = str(low)
    os.environ["TCP_HIGH_PORT"] = str(high)


def port_range_from_environment() -> tuple[int, int] | None:
    """``(TCP_LOW_PORT, TCP_HIGH_PORT)`` (``VINE_LOW_PORT``/``VINE_HIGH_PORT`` stand in for
    unset ones), or ``None`` when either bound is missing."""
    env = os.environ
    low = env.get("TCP_LOW_PORT") or env.get("VINE_LOW_PORT")
    high = env.get("TCP_HIGH_PORT") or env.get("VINE_HIGH_PORT")
    if not low or not high:
        return None
    try:
        bounds = int(low), int(high)
    except ValueError:
        raise ValueError(
            f"TCP_LOW_PORT/TCP_HIGH_PORT must be numbers, not {low!r}/{high!r}") from None
    if bounds[0] > bounds[1]:
        raise ValueError(f"TCP_LOW_PORT {bounds[0]} is above TCP_HIGH_PORT {bounds[1]}")
    return bounds


def load_variable_from_library(name: str) -> Any:
    """Inside a library function: a variable the library's context function produced.

    The library host (issue 4) stores the context's variables in this module's globals.
    """
    try:
        return globals()[name]
    except KeyError:
        raise KeyError(f"no variable {name!r} was loaded by this library's context "
                       "(library_context_info)") from None
