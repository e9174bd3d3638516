"""``ResultTask``: a task whose ``output`` is a Python value that it leaves in a file.

``PythonTask`` and ``FunctionCall`` share this: the result goes to an output buffer (or,
with ``enable_temp_output``, a temp file that stays on the worker for later tasks), at the
cache level of ``set_output_cache``, and is decoded once, the first time ``output`` is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import cvine
from .file import cache_level
from .task import Task

if TYPE_CHECKING:
    from .file import File
    from .manager import Manager


class ResultTask(Task):
    def __init__(self, command: str):
        super().__init__(command)
        self._temp_output = False
        self._output_level = cvine.VINE_CACHE_LEVEL_TASK
        self._output_file: File | None = None
        self._output_value: Any = _NOT_LOADED

    def enable_temp_output(self) -> None:
        """Keep the result on the worker as a temp file, for later tasks to read."""
        self._temp_output = True

    def disable_temp_output(self) -> None:
        self._temp_output = False

    def set_output_cache(self, cache: Any = False) -> None:
        self._output_level = cache_level(cache)

    @property
    def output_file(self) -> File | None:
        """The file holding the result (set at submit)."""
        return self._output_file

    def _attach_result_file(self, m: Manager, remote_name: str) -> None:
        """Make the file the result goes to, as output ``remote_name`` (at submit)."""
        if self._temp_output:
            self._output_file = m.declare_temp()
        else:
            self._output_file = m._internal_buffer(None, self._output_level)
        self.add_output(self._output_file, remote_name)
        self._output_value = _NOT_LOADED

    @property
    def output(self) -> Any:
        if self._temp_output:
            raise ValueError("the output of this task is a temp file on a worker: read it "
                             "from another task, or with Manager.fetch_file(task.output_file)")
        if self._output_value is _NOT_LOADED:
            self._output_value = self._load_output()
        return self._output_value

    def _load_output(self) -> Any:  # pragma: no cover - each subclass decodes its own
        raise NotImplementedError


class _NotLoaded:
    pass


_NOT_LOADED = _NotLoaded()
