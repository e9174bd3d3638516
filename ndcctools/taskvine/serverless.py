"""Serverless: ``LibraryTask`` (a process that keeps functions warm on a worker) and
``FunctionCall`` (one call into it), api.md §8.

A ``FunctionCall`` is a task whose command is the function's name; its arguments travel as a
cloudpickled ``{"fn_args", "fn_kwargs"}`` file ``infile`` in its sandbox, and the library
writes a cloudpickled ``{"Result", "Success", "Reason"}`` to ``outfile``. Libraries built by
``Manager.create_library_from_functions`` run ``library_host.py`` (shipped as
``library_code.py``) with the functions in ``library_info.clpk``.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

from . import library_host
from .result_task import ResultTask
from .task import FunctionCallNoResult, Task

EXEC_MODES = {"direct": 1, "fork": 2}


class LibraryTask(Task):
    """A task that provides library ``library_name`` (started by the manager on workers
    that run calls into it; never returned by ``wait``)."""

    def __init__(self, command: str, library_name: str):
        super().__init__(command)
        if not isinstance(library_name, str) or not library_name:
            raise TypeError("a library needs a name (str)")
        self._library_provided = library_name


class FunctionCall(ResultTask):
    """A call of function ``fn`` of library ``library_name`` with ``args`` and ``kwargs``."""

    def __init__(self, library_name: str, fn: str, *args: Any, **kwargs: Any):
        if not isinstance(library_name, str) or not isinstance(fn, str):
            raise TypeError("FunctionCall(library_name, function_name, *args, **kwargs) takes "
                            "the library and function names as str")
        super().__init__(fn)
        self._library_required = library_name
        self._fn_args, self._fn_kwargs = list(args), dict(kwargs)
        self._exec_method: str | None = None

    def set_fn_args(self, args: Sequence[Any] = (), kwargs: dict | None = None) -> None:
        self._fn_args, self._fn_kwargs = list(args), dict(kwargs or {})

    def set_exec_method(self, method: str) -> None:
        """Accepted for compatibility: the exec mode belongs to the library."""
        self._exec_method = method

    def submit_finalize(self) -> None:
        m = self._manager
        if not m.check_library_exists(self._library_required):
            raise ValueError(f"invalid library name '{self._library_required}'")
        self._inputs = [i for i in self._inputs if i.remote_name != "infile"]
        self._outputs = [o for o in self._outputs if o.remote_name != "outfile"]
        args = cloudpickle.dumps({"fn_args": self._fn_args, "fn_kwargs": self._fn_kwargs})
        self.add_input(m._internal_buffer(args), "infile")
        self._attach_result_file(m, "outfile")

    def _load_output(self) -> Any:
        """The function's return value; its traceback text if it raised; a
        ``FunctionCallNoResult`` if the call did not complete."""
        if not self.successful() or self._output_file is None:
            return FunctionCallNoResult()
        try:
            reply = cloudpickle.loads(self._output_file.contents())
        except Exception as e:
            return FunctionCallNoResult(f"the result of the call could not be read: {e}")
        return reply["Result"] if reply.get("Success") else reply.get("Reason")


def library_files(name: str, functions: Sequence[Callable], exec_mode: str,
                  hoisting_modules: Sequence[Any] | None,
                  context_info: Sequence[Any] | None) -> tuple[bytes, bytes]:
    """``(library_code.py, library_info.clpk)`` contents of a library of ``functions``."""
    if not functions:
        raise ValueError("a library needs at least one function")
    if exec_mode not in EXEC_MODES:
        raise ValueError(f"exec_mode must be 'fork' or 'direct', not {exec_mode!r}")
    names = [f.__name__ for f in functions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"functions of one library need distinct names: {duplicates}")
    with open(library_host.__file__, "rb") as f:
        code = f.read()
    info = library_host.library_info(name, list(functions), exec_mode, context_info,
                                     hoisting_source(hoisting_modules or ()))
    return code, info


def hoisting_source(items: Sequence[Any]) -> str:
    """Python source that makes ``items`` (modules, or functions and classes by their
    source) available at the top of the library process."""
    lines = []
    for item in items:
        if isinstance(item, types.ModuleType):
            lines.append(f"import {item.__name__}")
        elif inspect.isfunction(item) or inspect.isclass(item):
            lines.append(inspect.getsource(item))
        else:
            raise TypeError(f"hoisting_modules takes modules, functions or classes, not "
                            f"{type(item).__name__}")
    return "\n".join(lines) + "\n"
