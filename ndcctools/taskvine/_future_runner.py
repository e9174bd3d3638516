"""What runs on workers for futures (pickled by value, so a worker needs only cloudpickle).

A future passed as a positional argument travels as a ``FutureArg`` naming the sandbox file
its task left (a temp file, moved worker to worker); ``load`` reads it back. A function that
raises returns a ``Raised`` instead, so that the exception object reaches the caller and
futures built on this one raise it too.
"""

from __future__ import annotations

import traceback
from typing import Any

import cloudpickle


class Raised:
    """The exception a future's function raised, with its traceback text."""

    def __init__(self, exception: BaseException, text: str) -> None:
        try:
            cloudpickle.dumps(exception)
        except Exception:  # noqa: BLE001 - an exception that cannot travel becomes one that can
            exception = RuntimeError(repr(exception))
        self.exception, self.text = exception, text


class FutureArg:
    """The value of another future, read from the file ``name`` in the sandbox."""

    def __init__(self, name: str) -> None:
        self.name = name

    def load(self, directory: str = ".") -> Any:
        with open(f"{directory}/{self.name}", "rb") as f:
            value = cloudpickle.load(f)
        if isinstance(value, dict) and "Success" in value and "Result" in value:
            if not value["Success"]:  # written by a function call
                raise RuntimeError(f"a function call this depends on failed:\n"
                                   f"{value.get('Reason')}")
            return value["Result"]
        return value


def run(func: Any, args: tuple, kwargs: dict) -> Any:
    """Call ``func`` with the futures among ``args`` replaced by their values."""
    try:
        values = [a.load() if isinstance(a, FutureArg) else a for a in args]
        raised = next((v for v in values if isinstance(v, Raised)), None)
        if raised is not None:
            return raised
        return func(*values, **kwargs)
    except Exception as e:  # noqa: BLE001 - handed to the caller's future
        return Raised(e, traceback.format_exc())


def call_with(func: Any, kwargs: dict, *args: Any) -> Any:
    """The function of a ``FuturesExecutor``'s own library (``task_mode="function-calls"``):
    the library has already put the values of futures in ``args``."""
    try:
        raised = next((a for a in args if isinstance(a, Raised)), None)
        return raised if raised is not None else func(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - handed to the caller's future
        return Raised(e, traceback.format_exc())


def map_chunk(fn: Any, items: Any) -> list:
    return [fn(x) for x in items]


def concatenate(*parts: list) -> list:
    return [x for part in parts for x in part]


def reduce_chunk(fn: Any, arity: int, *items: Any) -> Any:
    """Apply ``fn`` to lists of up to ``arity`` items until one value is left."""
    values = list(items)
    while len(values) > 1:
        values = [fn(values[i:i + arity]) for i in range(0, len(values), arity)]
    return values[0]


def pair_row(fn: Any, row: Any, cols: Any) -> list:
    return [fn(row, c) for c in cols]


def collect(*rows: Any) -> list:
    return list(rows)
