"""DaskVineDag on its own: plain graphs in, ready keys out (no workers)."""

from __future__ import annotations

import operator

import pytest

pytest.importorskip("dask")

from dask._task_spec import Alias, DataNode, List, Task, TaskRef  # noqa: E402

from ndcctools.taskvine.dask_dag import (  # noqa: E402
    DaskVineDag,
    DaskVineNoResult,
    daskvine_merge,
)


def inc(x):
    return x + 1


@daskvine_merge
def merge(values):
    return sum(values)


def test_ready_keys_follow_results():
    dag = DaskVineDag({"x": 1, "y": (inc, "x"), "z": (operator.add, "x", "y"),
                       "unused": (inc, "z")})
    assert dag.set_targets(["z"]) == ["x"]
    assert dag.left_to_compute() == 3
    assert dag.get_dependencies("z") == {"x", "y"}
    assert dag.get_needed_by("x") == {"y", "z"}
    assert dag.depth_of("x") == 0 and dag.depth_of("z") == 2
    with pytest.raises(DaskVineNoResult):
        dag.get_result("x")
    assert dag.set_result("x", 1) == ["y"]
    assert dag.get_missing_dependencies("z") == {"y"}
    assert dag.get_pending_needed_by("x") == {"y", "z"}
    assert dag.set_result("y", 2) == ["z"]
    assert dag.set_result("z", 3) == []
    assert dag.left_to_compute() == 0 and dag.has_result("z")
    assert dag.replace_targets([["z"], "x"]) == [[3], 1]
    assert dag.get_targets() == {"z"}


def test_modern_nodes_and_predicates():
    dsk = {"a": DataNode("a", 5), "b": Task("b", inc, TaskRef("a")), "c": Alias("c", "b")}
    dag = DaskVineDag(dsk)
    assert dag.set_targets(["c"]) == ["a"]
    assert dag.taskp(dsk["b"]) and dag.aliasp(dsk["c"]) and dag.symbolp(dsk["a"])
    assert dag.taskrefp(TaskRef("a")) and dag.containerp(List(1, 2))
    assert dag.keyp(("x", 1, 2)) and dag.keyp("x") and not dag.keyp([1])
    assert dag.hashable("x") and not dag.hashable([1])


def test_missing_key_and_dependency():
    with pytest.raises(KeyError, match="nope"):
        DaskVineDag({"x": 1}).set_targets(["nope"])


def test_reconstruct_builds_a_tree_of_merges():
    dsk = {f"p{i}": (inc, i) for i in range(7)}
    dsk["m"] = (merge, [f"p{i}" for i in range(7)])
    dag = DaskVineDag(dsk, reconstruct=True, merge_size=2)
    dag.set_targets(["m"])
    assert len(dag.get_dependencies("m")) == 2
    merges = [k for k in dag._nodes if isinstance(k, tuple) and k[0].startswith("merge-")]
    assert len(merges) == 5  # 7 inputs -> 4 -> 2 -> the root
    results = {}
    for key in dag._closure(["m"]):  # run it here, dependencies first
        node = dag.node(key)
        results[key] = node({d: results[d] for d in node.dependencies})
    assert results["m"] == sum(range(1, 8))
    with pytest.raises(ValueError):
        DaskVineDag(dsk, reconstruct=True, merge_size=1)


def test_prunable_after_consumers():
    dag = DaskVineDag({"x": 1, "y": (inc, "x"), "z": (inc, "y")}, prune_depth=1)
    dag.set_targets(["z"])
    dag.set_result("x", 1)
    assert not dag.prunable("x")
    dag.set_result("y", 2)
    assert dag.prunable("x") and not dag.prunable("y")
    dag.set_result("z", 3)
    assert dag.prunable("y") and not dag.prunable("z")
