"""Functional helpers on the manager (api.md §14): map, pair and tree_reduce run as
PythonTasks (or, ``remote_*``, as FunctionCalls into a library), one per chunk of the input,
and return their results in input order. A chunk whose task failed contributes one
``PythonTaskNoResult`` (``FunctionCallNoResult`` for calls) per element.

The code that runs on workers is built by ``_chunk_runners`` as nested functions, which
cloudpickle ships by value: a worker needs no import of this package to run them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .python_task import PythonTask, PythonTaskNoResult
from .serverless import FunctionCall
from .task import FunctionCallNoResult

if TYPE_CHECKING:
    from .manager import Manager
    from .task import Task


def _chunk_runners() -> tuple[Callable, Callable]:
    def map_chunk(fn: Callable, chunk: list) -> list:
        return [fn(x) for x in chunk]

    def reduce_chunk(fn: Callable, chunk: list) -> Any:
        return fn(chunk)
    return map_chunk, reduce_chunk


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    if size < 1:
        raise ValueError(f"chunksize must be at least 1, not {size}")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _run_all(m: Manager, tasks: list[Task]) -> list[Task]:
    """Submit ``tasks`` (tagged by position) and wait for every one of them."""
    for i, t in enumerate(tasks):
        t.set_tag(str(i))
        m.submit(t)
    for t in tasks:
        while m.wait_for_task_id(t.id, 5) is None:
            pass
    return tasks


def _flatten(tasks: list[Task], chunks: list[list[Any]], missing: type) -> list[Any]:
    out: list[Any] = []
    for t, chunk in zip(tasks, chunks, strict=True):
        result = t.output
        if isinstance(result, list) and t.successful():
            out.extend(result)
        else:
            out.extend(missing() for _ in chunk)
    return out


def map(m: Manager, fn: Callable, seq: Iterable[Any], chunksize: int = 1) -> list[Any]:
    """``[fn(x) for x in seq]``, computed on workers."""
    map_chunk, _ = _chunk_runners()
    chunks = _chunks(list(seq), chunksize)
    tasks = _run_all(m, [PythonTask(map_chunk, fn, c) for c in chunks])
    return _flatten(tasks, chunks, PythonTaskNoResult)


def pair(m: Manager, fn: Callable, seq1: Iterable[Any], seq2: Iterable[Any],
         chunksize: int = 1, env: Any = None) -> list[Any]:
    """``fn((x, y))`` for every pair of ``itertools.product(seq1, seq2)``, in that order."""
    map_chunk, _ = _chunk_runners()
    chunks = _chunks(list(itertools.product(seq1, seq2)), chunksize)
    tasks = [PythonTask(map_chunk, fn, c) for c in chunks]
    if env is not None:
        for t in tasks:
            t.add_environment(env)
    return _flatten(_run_all(m, tasks), chunks, PythonTaskNoResult)


def tree_reduce(m: Manager, fn: Callable, seq: Iterable[Any], chunksize: int = 2) -> Any:
    """Reduce ``seq`` with ``fn(list)`` over chunks, level by level, to one value."""
    _, reduce_chunk = _chunk_runners()
    return _reduce(m, list(seq), max(2, chunksize),
                   lambda chunk: PythonTask(reduce_chunk, fn, chunk))


def _reduce(m: Manager, values: list[Any], size: int, make: Callable[[list], Task]) -> Any:
    if not values:
        raise ValueError("tree_reduce() of an empty sequence")
    while len(values) > 1:
        tasks = _run_all(m, [make(c) for c in _chunks(values, size)])
        values = [t.output for t in tasks]
    return values[0]


def remote_map(m: Manager, fn: str, seq: Iterable[Any], library: str, name: str,
               chunksize: int = 1) -> list[Any]:
    """Like ``map``, through library function ``fn`` called with ``{name: chunk}``, which
    returns the list of results of its chunk."""
    chunks = _chunks(list(seq), chunksize)
    tasks = _run_all(m, [FunctionCall(library, fn, **{name: c}) for c in chunks])
    return _flatten(tasks, chunks, FunctionCallNoResult)


def remote_pair(m: Manager, fn: str, seq1: Iterable[Any], seq2: Iterable[Any], library: str,
                name: str, chunksize: int = 1) -> list[Any]:
    """Like ``pair``, through library function ``fn`` (a chunk of pairs as ``{name: …}``)."""
    chunks = _chunks(list(itertools.product(seq1, seq2)), chunksize)
    tasks = _run_all(m, [FunctionCall(library, fn, **{name: c}) for c in chunks])
    return _flatten(tasks, chunks, FunctionCallNoResult)


def remote_tree_reduce(m: Manager, fn: str, seq: Iterable[Any], library: str, name: str,
                       chunksize: int = 2) -> Any:
    """Like ``tree_reduce``, through library function ``fn`` called with ``{name: chunk}``."""
    return _reduce(m, list(seq), max(2, chunksize),
                   lambda chunk: FunctionCall(library, fn, **{name: chunk}))
