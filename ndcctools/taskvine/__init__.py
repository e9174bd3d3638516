"""TaskVine in pure Python: ``import ndcctools.taskvine as vine``.

A ``Manager`` accepts ``vine_worker`` connections, sends them ``Task``s with their ``File``s
and returns the finished tasks from ``wait()``. See ``docs/architecture.md``.
"""

__version__ = "0.1.0"  # first: submodules read it

from . import cvine, futures, utils  # noqa: E402, F401 - public submodules
from .cvine import *  # noqa: F403 - upstream programs use vine.VINE_* too
from .factory import Factory
from .file import File
from .futures import FutureFunctionCall, FuturePythonTask, FuturesExecutor, VineFuture
from .manager import Manager
from .python_task import PythonTask, PythonTaskNoResult
from .serverless import FunctionCall, LibraryTask
from .task import Task


def __getattr__(name: str) -> type:
    """``DaskVine`` and ``DaskVineDag``, imported on first use (importing dask costs time
    that programs and workers without it should not pay): the modern classes with dask
    2024.12 or newer, else the tuple-graph ones of ``compat`` (api.md §18.3)."""
    if name not in ("DaskVine", "DaskVineDag"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .dask_dag import MODERN_DASK
    if MODERN_DASK:
        from . import dask_dag, dask_executor
        found = {"DaskVine": dask_executor.DaskVine, "DaskVineDag": dask_dag.DaskVineDag}
    else:
        from .compat import dask_dag as compat_dag
        from .compat import dask_executor as compat_executor
        found = {"DaskVine": compat_executor.DaskVine, "DaskVineDag": compat_dag.DaskVineDag}
    globals().update(found)
    return found[name]


class DaskVineWarning(UserWarning):
    """Warnings of the Dask integration."""


__all__ = [
    "Manager", "File", "Factory", "LibraryTask", "FunctionCall", "FuturesExecutor",
    "FuturePythonTask", "FutureFunctionCall", "VineFuture", "Task", "PythonTask",
    "PythonTaskNoResult", "DaskVine", "DaskVineDag",  # noqa: F405 - made by __getattr__
]
