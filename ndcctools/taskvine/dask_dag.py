"""DaskVineDag: the bookkeeping of one dask graph while ``DaskVine`` runs it (api.md §18.2).

Theory of operation. A graph maps keys to ``dask._task_spec`` nodes (``Task``, ``DataNode``,
``Alias``; old tuple graphs are converted first with ``convert_legacy_graph``). The DAG
knows, for each key, the keys it depends on and the keys that need it; ``set_targets`` keeps
the part of the graph the targets need and returns the keys ready to run (nothing missing);
``set_result`` records what a key produced (for ``DaskVine``, a handle on a file on a
worker or a small value) and returns the keys that became ready. It never runs anything.

``reconstruct=True`` splits each ``Task`` whose function is marked with ``daskvine_merge``
and which takes more than ``merge_size`` inputs into a tree of such calls, each over at
most ``merge_size`` inputs (the function must accept its own results as inputs).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

try:
    from dask._task_spec import (
        Alias,
        DataNode,
        GraphNode,
        List,
        NestedContainer,
        Task,
        TaskRef,
        convert_legacy_graph,
    )
    MODERN_DASK = True  # dask 2024.12 or newer: DaskVineDag; else compat's (api.md §18.3)
except ImportError:  # no dask, or one before 2024.12: only the bookkeeping (GraphBook) works
    class _Missing:
        pass

    Alias = DataNode = GraphNode = List = NestedContainer = Task = TaskRef = _Missing
    convert_legacy_graph = None
    MODERN_DASK = False


def hashable(s: Any) -> bool:
    """Whether ``s`` can be a dict key (a graph key, say)."""
    try:
        hash(s)
    except TypeError:
        return False
    return True


class DaskVineNoResult(Exception):
    """The key has no result yet."""


def daskvine_merge(func: Callable) -> Callable:
    """Mark ``func`` (which takes a list of inputs, or its inputs as arguments) as one that
    ``DaskVine.get(..., reconstruct=True)`` may split into a tree of smaller merges."""
    func._daskvine_merge = True
    return func


class GraphBook:
    """The keys of a graph of nodes, their dependencies and their results. A node has
    ``dependencies`` (keys); ``DaskVineDag`` (dask's nodes) and ``compat.DaskVineDag``
    (tuple graphs) make them."""

    def __init__(self, nodes: dict, prune_depth: int = 0):
        self._nodes = nodes
        self.prune_depth = int(prune_depth)
        self._deps = {k: frozenset(n.dependencies) for k, n in self._nodes.items()}
        self._needed_by: dict[Hashable, set] = defaultdict(set)
        self._missing: dict[Hashable, set] = {}
        self._results: dict[Hashable, Any] = {}
        self._targets: set = set()
        self._depth: dict[Hashable, int] = {}
        self._left = 0  # keys the targets need that have no result yet

    # ------------------------------------------------------------------ the graph
    def node(self, key: Hashable) -> GraphNode:
        return self._nodes[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self):
        return iter(self._nodes)

    def set_targets(self, keys: Iterable[Hashable]) -> list:
        """Make ``keys`` (flat) the targets; returns the keys that can run now."""
        keys = list(keys)
        for k in keys:
            if k not in self._nodes:
                raise KeyError(f"key {k!r} is not in the graph")
        self._targets.update(keys)
        closure = self._closure(keys)
        for k in closure:
            for d in self._deps[k]:
                self._needed_by[d].add(k)
            if k not in self._missing:
                self._missing[k] = {d for d in self._deps[k] if d not in self._results}
                self._left += k not in self._results
        self._set_depths(closure)
        return [k for k in closure if not self._missing[k] and k not in self._results]

    def _closure(self, keys: list) -> list:
        """The keys ``keys`` need (themselves included), dependencies first."""
        order, seen = [], set()
        for root in keys:
            if root in seen:
                continue
            seen.add(root)
            stack = [(root, iter(self._deps[root]))]
            while stack:
                key, deps = stack[-1]
                for d in deps:
                    if d not in seen:
                        if d not in self._nodes:
                            raise KeyError(f"key {key!r} depends on {d!r}, which is not in "
                                           "the graph")
                        seen.add(d)
                        stack.append((d, iter(self._deps[d])))
                        break
                else:
                    stack.pop()
                    order.append(key)
        return order

    def _set_depths(self, ordered: list) -> None:
        for k in ordered:  # dependencies come first
            self._depth[k] = 1 + max((self._depth[d] for d in self._deps[k]), default=-1)

    def set_result(self, key: Hashable, value: Any) -> list:
        """Record ``value`` for ``key``; returns the keys that became ready."""
        if key not in self._results and key in self._missing:
            self._left -= 1
        self._results[key] = value
        ready = []
        for k in self._needed_by.get(key, ()):
            missing = self._missing.get(k)
            if missing and key in missing:
                missing.discard(key)
                if not missing and k not in self._results:
                    ready.append(k)
        return ready

    def get_result(self, key: Hashable) -> Any:
        try:
            return self._results[key]
        except KeyError:
            raise DaskVineNoResult(key) from None

    def has_result(self, key: Hashable) -> bool:
        return key in self._results

    def get_dependencies(self, key: Hashable) -> frozenset:
        return self._deps[key]

    def get_needed_by(self, key: Hashable) -> set:
        return set(self._needed_by.get(key, ()))

    def get_pending_needed_by(self, key: Hashable) -> set:
        return {k for k in self._needed_by.get(key, ()) if k not in self._results}

    def get_missing_dependencies(self, key: Hashable) -> set:
        return set(self._missing.get(key, self._deps[key]))

    def depth_of(self, key: Hashable) -> int:
        return self._depth.get(key, 0)

    def left_to_compute(self) -> int:
        return self._left

    def get_targets(self) -> set:
        return set(self._targets)

    def replace_targets(self, keys: Any, results: Mapping | None = None) -> Any:
        """``keys`` (a key or nested lists of keys) with each key replaced by its result."""
        results = self._results if results is None else results
        if isinstance(keys, list):
            return [self.replace_targets(k, results) for k in keys]
        return results[keys]

    def prunable(self, key: Hashable) -> bool:
        """Whether every key up to ``prune_depth`` levels below ``key`` has a result (so the
        result of ``key`` is no longer needed on workers); targets are never prunable."""
        if self.prune_depth < 1 or key in self._targets:
            return False
        level = {key}
        for _ in range(self.prune_depth):
            level = set().union(*(self._needed_by.get(k, ()) for k in level))
            if not level:
                break
            if any(k not in self._results for k in level):
                return False
        return True

    @staticmethod
    def keyp(s: Any) -> bool:
        """Whether ``s`` has the shape of a dask key."""
        if isinstance(s, tuple):
            return bool(s) and isinstance(s[0], str) and all(
                DaskVineDag.keyp(x) or isinstance(x, int) for x in s[1:])
        return isinstance(s, (str, bytes, int, float))

    hashable = staticmethod(hashable)  # the module function, also used by compat


class DaskVineDag(GraphBook):
    """The bookkeeping of a dask graph (``_task_spec`` nodes; tuple graphs are converted)."""

    def __init__(self, dsk: Mapping, reconstruct: bool = False, merge_size: int = 2,
                 prune_depth: int = 0):
        if convert_legacy_graph is None:
            raise ImportError("DaskVineDag needs dask 2024.12 or newer (dask._task_spec); "
                              "for older releases use ndcctools.taskvine.compat")
        if not isinstance(dsk, Mapping):
            dsk = dsk.__dask_graph__()
        super().__init__(convert_legacy_graph(dict(dsk)), prune_depth)
        if reconstruct:
            if merge_size < 2:
                raise ValueError(f"merge_size must be at least 2, not {merge_size}")
            self._reconstruct(merge_size)
            self._deps = {k: frozenset(n.dependencies) for k, n in self._nodes.items()}

    @staticmethod
    def taskp(s: Any) -> bool:
        return isinstance(s, Task)

    @staticmethod
    def taskrefp(s: Any) -> bool:
        return isinstance(s, TaskRef)

    @staticmethod
    def aliasp(s: Any) -> bool:
        return isinstance(s, Alias)

    @staticmethod
    def containerp(s: Any) -> bool:
        return isinstance(s, NestedContainer)

    @staticmethod
    def symbolp(s: Any) -> bool:
        return isinstance(s, DataNode)

    # ------------------------------------------------------------------ reconstruct
    def _reconstruct(self, merge_size: int) -> None:
        for key, node in list(self._nodes.items()):
            parts = _merge_inputs(node)
            if parts is None or len(parts[1]) <= merge_size:
                continue
            as_list, inputs = parts
            level, serial = list(inputs), 0
            while len(level) > merge_size:
                nxt = []
                for i in range(0, len(level), merge_size):
                    chunk = level[i:i + merge_size]
                    if len(chunk) == 1:
                        nxt.append(chunk[0])
                        continue
                    part_key = (f"merge-{_key_name(key)}", serial)
                    serial += 1
                    self._nodes[part_key] = _merge_task(part_key, node.func, chunk, as_list)
                    nxt.append(TaskRef(part_key))
                level = nxt
            self._nodes[key] = _merge_task(key, node.func, level, as_list)


def _merge_inputs(node: GraphNode) -> tuple[bool, list] | None:
    """``(inputs given as one list?, inputs)`` of a Task of a ``daskvine_merge`` function."""
    if not isinstance(node, Task) or not getattr(node.func, "_daskvine_merge", False):
        return None
    if node.kwargs:
        return None
    if len(node.args) == 1 and _is_list(node.args[0]):
        return True, list(node.args[0].args)
    return False, list(node.args)


def _is_list(arg: Any) -> bool:
    """A list of inputs: a ``List``, or a converted tuple-graph list (a keyless ``Task``
    casting its arguments to ``list``)."""
    if isinstance(arg, List):
        return True
    return (isinstance(arg, Task) and arg.key is None and not isinstance(arg, NestedContainer)
            and getattr(arg.func, "__name__", "") == "_identity_cast"
            and arg.kwargs.get("typ") is list)


def _merge_task(key: Hashable, func: Callable, inputs: list, as_list: bool) -> Task:
    return Task(key, func, List(*inputs)) if as_list else Task(key, func, *inputs)


def _key_name(key: Hashable) -> str:
    return key[0] if isinstance(key, tuple) else str(key)
