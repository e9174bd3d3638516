"""compat.DaskVine and compat.DaskVineDag: tuple graphs, with their own node classes."""

from __future__ import annotations

import importlib
import operator
import sys
import warnings

import cloudpickle
import pytest

from tests.conftest import Workers, wait_connected

cloudpickle.register_pickle_by_value(sys.modules[__name__])

GRAPH = {"x": 1, "y": (operator.add, "x", 10), "z": (operator.mul, "y", (operator.neg, "x")),
         "l": ["x", "y", (operator.add, "z", 1)], "s": (sum, "l"), "a": "s", "t": "text"}


def compat():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("ndcctools.taskvine.compat")


def test_import_warns_with_a_modern_dask():
    pytest.importorskip("dask._task_spec")
    for name in [n for n in sys.modules if n.startswith("ndcctools.taskvine.compat")]:
        del sys.modules[name]
    with pytest.warns(UserWarning, match="before 2024.12"):
        importlib.import_module("ndcctools.taskvine.compat")


def test_tuple_dag_relations():
    dag = compat().DaskVineDag(GRAPH)
    assert sorted(dag.set_targets(["a", "t"])) == ["t", "x"]
    assert dag.get_children("z") == {"x", "y"} and dag.get_parents("x") == {"y", "z", "l"}
    assert type(dag.node("a")).__name__ == "Alias" and dag.symbolp(dag.node("t"))
    assert dag.taskp(dag.node("l")) and dag.node("l")({"x": 1, "y": 11, "z": -11}) == [
        1, 11, -10]
    assert dag.get_missing_children("s") == {"l"}
    with pytest.raises(ValueError):
        compat().DaskVineDag(GRAPH, reconstruct=True)


@pytest.mark.parametrize("mode", ["tasks", "function-calls"])
def test_compat_daskvine_runs_tuple_graphs(tmp_path, mode):
    pool = Workers(tmp_path)
    try:
        with compat().DaskVine(port=0, run_info_path=str(tmp_path / "ri")) as m:
            pool.start(m, cores=2)
            wait_connected(m, 1)
            opts = {"task_mode": mode, "progress_disable": True, "resources": {"cores": 1}}
            got = m.get(GRAPH, [["a", "z"], "t"], **opts,
                        task_priority_mode="largest-storage-footprint-first")
            assert got == [[1 + 11 - 10, -11], "text"]
            with pytest.raises(TypeError, match="reconstruct"):
                m.get(GRAPH, "a", reconstruct=True)
            with pytest.raises(NotImplementedError, match="low_memory_mode"):
                m.get(GRAPH, "a", low_memory_mode=True)
    finally:
        pool.stop_all()
