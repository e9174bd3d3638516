"""DaskVineDag for tuple graphs: each value of the graph becomes one node.

A value is a *task* ``(callable, *args)``, a key of the graph (an *alias*), or data, which
may hold keys and tasks nested in lists (then it is computed like a task). Arguments of a
task are evaluated as dask always did: a nested task is called, a list is evaluated item by
item, a key is replaced by its value, anything else is itself. The node classes are named
like the ``_task_spec`` ones (``Task``, ``Alias``, ``DataNode``) because ``DaskVine`` runs
both kinds alike.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from ..dask_dag import GraphBook, hashable


def istask(x: Any) -> bool:
    return type(x) is tuple and bool(x) and callable(x[0])


def evaluate(arg: Any, values: Mapping) -> Any:
    """The value of ``arg`` given the values of the keys it names."""
    if istask(arg):
        func, *args = arg
        return func(*(evaluate(a, values) for a in args))
    if isinstance(arg, list):
        return [evaluate(a, values) for a in arg]
    if hashable(arg) and arg in values:
        return values[arg]
    return arg


def _keys_in(arg: Any, keys: Mapping | set, found: set) -> set:
    if istask(arg):
        for a in arg[1:]:
            _keys_in(a, keys, found)
    elif isinstance(arg, list):
        for a in arg:
            _keys_in(a, keys, found)
    elif hashable(arg) and arg in keys:
        found.add(arg)
    return found


class Task:
    """A computed value: a task tuple, or data holding keys or tasks."""

    __slots__ = ("key", "expr", "dependencies")

    def __init__(self, key: Hashable, expr: Any, dependencies: frozenset):
        self.key, self.expr, self.dependencies = key, expr, dependencies

    @property
    def func(self) -> Callable:
        return self.expr[0] if istask(self.expr) else list

    def __call__(self, values: Mapping) -> Any:
        return evaluate(self.expr, values)

    def __repr__(self) -> str:
        return f"<Task {self.key!r}>"


class Alias:
    __slots__ = ("key", "target", "dependencies")

    def __init__(self, key: Hashable, target: Hashable):
        self.key, self.target, self.dependencies = key, target, frozenset([target])


class DataNode:
    __slots__ = ("key", "value", "dependencies")

    def __init__(self, key: Hashable, value: Any):
        self.key, self.value, self.dependencies = key, value, frozenset()


class DaskVineDag(GraphBook):
    """The bookkeeping of a tuple graph. Relations are named as upstream's: a key's
    *children* are the keys it needs, its *parents* the keys that need it."""

    def __init__(self, dsk: Mapping, reconstruct: bool = False, merge_size: int = 2,
                 prune_depth: int = 0, low_memory_mode: bool = False):
        if reconstruct:
            raise ValueError("reconstruct applies to dask._task_spec graphs only")
        if low_memory_mode:
            raise NotImplementedError("low_memory_mode is not supported yet")
        if not isinstance(dsk, Mapping):
            dsk = dsk.__dask_graph__()
        dsk = dict(dsk)
        super().__init__({k: _node(k, v, dsk) for k, v in dsk.items()}, prune_depth)

    @staticmethod
    def taskp(s: Any) -> bool:
        return isinstance(s, Task) or istask(s)

    @staticmethod
    def symbolp(s: Any) -> bool:
        return isinstance(s, DataNode)

    def get_children(self, key: Hashable) -> frozenset:
        return self.get_dependencies(key)

    def get_parents(self, key: Hashable) -> set:
        return self.get_needed_by(key)

    def get_missing_children(self, key: Hashable) -> set:
        return self.get_missing_dependencies(key)


def _node(key: Hashable, value: Any, dsk: dict) -> Any:
    if hashable(value) and value in dsk and value != key and not istask(value):
        return Alias(key, value)
    deps = frozenset(_keys_in(value, dsk, set()) - {key})
    if istask(value) or deps:
        return Task(key, value, deps)
    return DataNode(key, value)
