"""PythonTask: a Python function call shipped to a worker as a command task (api.md §7).

At submit the task gets four sandbox files and a command that runs them::

    w_<id>  the wrapper program (pytask_wrapper.py), one cached buffer per manager
    f_<id>  the cloudpickled function, one cached buffer per function object
    a_<id>  the cloudpickled [args, kwargs], a task-level buffer
    o_<id>  the cloudpickled return value: an output buffer (or a temp file)

    ${PONCHO_PREFIX:+${PONCHO_PREFIX}/bin/}python3 w_<id> f_<id> a_<id> o_<id>

Any worker can run that command; ours recognises it and runs it in a forked, warm Python
instead of starting a new interpreter (``worker/pyfork.py``).
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING, Any

import cloudpickle

from . import cvine
from .file import cache_level
from .task import Task

if TYPE_CHECKING:
    from .file import File

_serial = itertools.count(1)
_WRAPPER_SOURCE = os.path.join(os.path.dirname(__file__), "pytask_wrapper.py")


class PythonTaskNoResult(Exception):
    """The output of a PythonTask whose function did not return a value."""


class PythonTask(Task):
    """Runs ``func(*args, **kwargs)`` on a worker; ``output`` is the return value."""

    def __init__(self, func: Any, *args: Any, **kwargs: Any):
        if not callable(func):
            raise TypeError(f"PythonTask needs a callable, not {type(func).__name__}")
        super().__init__("")
        self._func, self._fn_args, self._fn_kwargs = func, args, kwargs
        self._serialize_output = True
        self._temp_output = False
        self._output_level = cvine.VINE_CACHE_LEVEL_TASK
        self._output_file: File | None = None
        self._output_value: Any = _NOT_LOADED

    # ------------------------------------------------------------------ options
    def enable_temp_output(self) -> None:
        """Keep the result on the worker as a temp file, for later tasks to read."""
        self._temp_output = True

    def disable_temp_output(self) -> None:
        self._temp_output = False

    def disable_output_serialization(self) -> None:
        """The function returns ``bytes``; they are kept as they are."""
        self._serialize_output = False

    def set_output_cache(self, cache: Any = False) -> None:
        self._output_level = cache_level(cache)

    @property
    def output_file(self) -> File | None:
        return self._output_file

    # ------------------------------------------------------------------ submit
    def submit_finalize(self) -> None:
        m = self._manager
        if self._record is not None:  # resubmitted: start again from the user's task
            self._inputs = [i for i in self._inputs if not i.remote_name.startswith(_PREFIXES)]
            self._outputs = [o for o in self._outputs if o.remote_name != self._out_name]
        tag = f"{next(_serial)}"
        self._out_name = f"o_{tag}"
        self.add_input(m._pytask_wrapper(), f"w_{tag}")
        self.add_input(m._function_file(self._func), f"f_{tag}")
        args = cloudpickle.dumps([self._fn_args, self._fn_kwargs])
        self.add_input(m._internal_buffer(args), f"a_{tag}")
        if self._temp_output:
            self._output_file = m.declare_temp()
        else:
            self._output_file = m._internal_buffer(None, self._output_level)
        self.add_output(self._output_file, self._out_name)
        self._output_value = _NOT_LOADED
        raw = "" if self._serialize_output else " raw"
        self._command = (f"${{PONCHO_PREFIX:+${{PONCHO_PREFIX}}/bin/}}python3 w_{tag} f_{tag} "
                         f"a_{tag} {self._out_name}{raw}")

    # ------------------------------------------------------------------ result
    @property
    def output(self) -> Any:
        """The return value; a ``PythonTaskNoResult`` when the function did not return."""
        if self._temp_output:
            raise ValueError("the output of this task is a temp file on a worker: read it "
                             "from another task, or with Manager.fetch_file(task.output_file)")
        if self._output_value is _NOT_LOADED:
            self._output_value = self._load_output()
        return self._output_value

    def _load_output(self) -> Any:
        if not self.successful() or self._output_file is None:
            if self.std_output:
                print(self.std_output)
            return PythonTaskNoResult()
        data = self._output_file.contents()
        if not self._serialize_output:
            return data
        try:
            return cloudpickle.loads(data)
        except Exception as e:
            return e


class _NotLoaded:
    pass


_NOT_LOADED = _NotLoaded()
_PREFIXES = ("w_", "f_", "a_")


def wrapper_source() -> bytes:
    with open(_WRAPPER_SOURCE, "rb") as f:
        return f.read()
