"""``ndcctools.taskvine.futures`` (api.md §17): futures over tasks.

Only the module surface exists yet; the executor and its futures arrive with a later issue,
and until then ``wait``/``as_completed`` raise ``NotImplementedError`` saying so.
"""

from __future__ import annotations

from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from typing import Any

from ._pending import FutureFunctionCall, FuturePythonTask, FuturesExecutor, VineFuture

RESULT_PENDING = "result_pending"

__all__ = [
    "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "RESULT_PENDING", "FuturesExecutor",
    "FuturePythonTask", "FutureFunctionCall", "VineFuture", "wait", "as_completed",
]

_LATER = "futures are not available yet: they arrive with a later issue (futures)"


def wait(fs: Any, timeout: float | None = None, return_when: str = ALL_COMPLETED) -> Any:
    raise NotImplementedError(_LATER)


def as_completed(fs: Any, timeout: float | None = None) -> Any:
    raise NotImplementedError(_LATER)
