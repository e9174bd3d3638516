"""DaskVine and DaskVineDag for tuple graphs (``{"z": (add, "x", "y")}``), api.md §18.4.

For dask releases before 2024.12, which have no ``dask._task_spec``. They run the same way
as the modern classes (``ndcctools.taskvine.dask_executor``), with the graph's tuples as
nodes. With a newer dask, importing this package only warns: the modern classes run tuple
graphs too.
"""

from __future__ import annotations

import warnings

from .dask_dag import DaskVineDag
from .dask_executor import DaskVine

try:
    from dask._task_spec import Task as _Task  # noqa: F401 - only probed
except ImportError:
    pass
else:
    warnings.warn("ndcctools.taskvine.compat is for dask releases before 2024.12; this dask "
                  "has dask._task_spec: ndcctools.taskvine.DaskVine runs its graphs",
                  stacklevel=2)

__all__ = ["DaskVine", "DaskVineDag"]
