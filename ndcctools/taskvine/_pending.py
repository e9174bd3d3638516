"""Public names whose implementation arrives with a later issue.

Each is a class that raises ``NotImplementedError`` naming what brings it, so a program that
uses one fails at once with a clear message instead of misbehaving later.
"""

from __future__ import annotations

from typing import Any

PENDING = {
    "FuturesExecutor": "a later issue (futures)",
    "FuturePythonTask": "a later issue (futures)",
    "FutureFunctionCall": "a later issue (futures)",
    "VineFuture": "a later issue (futures)",
    "DaskVine": "a later issue (Dask integration)",
    "DaskVineDag": "a later issue (Dask integration)",
}


def _placeholder(name: str, arrives: str) -> type:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{name} is not available yet: it arrives with {arrives}")
    return type(name, (), {"__init__": __init__, "__doc__": f"Not yet built: {arrives}."})


globals().update({name: _placeholder(name, arrives) for name, arrives in PENDING.items()})
