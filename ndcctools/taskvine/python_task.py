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
from typing import Any

import cloudpickle

from .result_task import ResultTask

_serial = itertools.count(1)
_WRAPPER_SOURCE = os.path.join(os.path.dirname(__file__), "pytask_wrapper.py")


class PythonTaskNoResult(Exception):
    """The output of a PythonTask whose function did not return a value."""


class PythonTask(ResultTask):
    """Runs ``func(*args, **kwargs)`` on a worker; ``output`` is the return value."""

    def __init__(self, func: Any, *args: Any, **kwargs: Any):
        if not callable(func):
            raise TypeError(f"PythonTask needs a callable, not {type(func).__name__}")
        super().__init__("")
        self._func, self._fn_args, self._fn_kwargs = func, args, kwargs
        self._serialize_output = True

    def disable_output_serialization(self) -> None:
        """The function returns ``bytes``; they are kept as they are."""
        self._serialize_output = False

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
        self._attach_result_file(m, self._out_name)
        raw = "" if self._serialize_output else " raw"
        self._command = (f"${{PONCHO_PREFIX:+${{PONCHO_PREFIX}}/bin/}}python3 w_{tag} f_{tag} "
                         f"a_{tag} {self._out_name}{raw}")

    def _load_output(self) -> Any:
        """The return value; a ``PythonTaskNoResult`` when the function did not return."""
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


_PREFIXES = ("w_", "f_", "a_")


def wrapper_source() -> bytes:
    with open(_WRAPPER_SOURCE, "rb") as f:
        return f.read()
