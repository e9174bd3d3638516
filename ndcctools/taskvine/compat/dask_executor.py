"""DaskVine for tuple graphs: the modern ``DaskVine`` with tuple nodes (api.md §18.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..dask_executor import DaskVine as _ModernDaskVine
from .dask_dag import DaskVineDag


class DaskVine(_ModernDaskVine):
    """``get(dsk, keys, **options)`` for tuple graphs: the options of the modern class but
    ``reconstruct``/``merge_size``, plus ``low_memory_mode`` and ``init_command``; the
    priority mode ``largest-storage-footprint-first`` is ``largest-input-first``."""

    _dag_class = DaskVineDag

    def get(self, dsk: Mapping, keys: Any, *, low_memory_mode: bool = False,
            task_priority_mode: str = "largest-input-first", **options: Any) -> Any:
        for name in ("reconstruct", "merge_size"):
            if name in options:
                raise TypeError(f"compat.DaskVine.get() has no option {name!r}")
        if low_memory_mode:
            raise NotImplementedError("low_memory_mode is not supported yet")
        if task_priority_mode == "largest-storage-footprint-first":
            task_priority_mode = "largest-input-first"
        return super().get(dsk, keys, task_priority_mode=task_priority_mode, **options)
