"""TaskVine in pure Python: ``import ndcctools.taskvine as vine``.

A ``Manager`` accepts ``vine_worker`` connections, sends them ``Task``s with their ``File``s
and returns the finished tasks from ``wait()``. See ``docs/architecture.md``.
"""

__version__ = "0.1.0"  # first: submodules read it

from . import cvine, futures, utils  # noqa: E402, F401 - public submodules
from ._pending import (
    DaskVine,
    DaskVineDag,
    FutureFunctionCall,
    FuturePythonTask,
    FuturesExecutor,
    VineFuture,
)
from .cvine import *  # noqa: F403 - upstream programs use vine.VINE_* too
from .factory import Factory
from .file import File
from .manager import Manager
from .python_task import PythonTask, PythonTaskNoResult
from .serverless import FunctionCall, LibraryTask
from .task import Task


class DaskVineWarning(UserWarning):
    """Warnings of the Dask integration."""


__all__ = [
    "Manager", "File", "Factory", "LibraryTask", "FunctionCall", "FuturesExecutor",
    "FuturePythonTask", "FutureFunctionCall", "VineFuture", "Task", "PythonTask",
    "PythonTaskNoResult", "DaskVine", "DaskVineDag",
]
