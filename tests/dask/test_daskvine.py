"""DaskVine end to end: dask collections computed on real workers, in both task modes, each
compared with the answer of dask's own synchronous scheduler."""

from __future__ import annotations

import operator
import os
import signal
import sys
import time

import cloudpickle
import pytest

dask = pytest.importorskip("dask")
np = pytest.importorskip("numpy")

import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402

from ndcctools.taskvine.dask_executor import (  # noqa: E402
    DaskVine,
    DaskVineDag,
    DaskVineError,
    daskvine_merge,
)
from tests.conftest import Workers, wait_connected  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MODES = ["tasks", "function-calls"]
OPTS = {"resources": {"cores": 1}, "progress_disable": True}


def inc(x):
    return x + 1


def getenv(name):
    return os.environ.get(name)


def boom(x):
    raise ValueError(f"boom {x}")


def slow_square(block):
    time.sleep(0.05)
    return block * block


@daskvine_merge
def total(values):
    return sum(values)


def compute(m, *collections, mode, **options):
    return dask.compute(*collections, scheduler=m.get, task_mode=mode, **OPTS, **options)


@pytest.mark.parametrize("mode", MODES)
def test_array_reductions(dask_manager, mode):
    x = da.arange(800, chunks=200).reshape((20, 40)).rechunk((10, 20))
    exprs = ((x ** 2).sum(), x.mean(axis=0), (x + x.T[:, :20].sum()).std())
    got = compute(dask_manager, *exprs, mode=mode)
    want = dask.compute(*exprs, scheduler="sync")
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w)


@pytest.mark.parametrize("mode", MODES)
def test_dataframe_groupby(dask_manager, mode):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"k": rng.integers(0, 5, 400), "v": rng.random(400)})
    ddf = dd.from_pandas(df, npartitions=4)
    exprs = (ddf.groupby("k").v.sum(), ddf.groupby("k").v.mean(), ddf.v.max())
    got = compute(dask_manager, *exprs, mode=mode)
    want = dask.compute(*exprs, scheduler="sync")
    pd.testing.assert_series_equal(got[0].sort_index(), want[0].sort_index())
    pd.testing.assert_series_equal(got[1].sort_index(), want[1].sort_index())
    assert got[2] == want[2]


@pytest.mark.parametrize("mode", MODES)
def test_bag(dask_manager, mode):
    b = db.from_sequence(range(200), npartitions=8)
    exprs = (b.map(lambda v: v * 3).filter(lambda v: v % 2).sum(),
             b.map(lambda v: v % 7).frequencies(), b.map(inc))
    got = compute(dask_manager, *exprs, mode=mode)
    want = dask.compute(*exprs, scheduler="sync")
    assert got[0] == want[0]
    assert sorted(got[1]) == sorted(want[1])
    assert list(got[2]) == list(want[2])


@pytest.mark.parametrize("mode", MODES)
def test_delayed_chain(dask_manager, mode):
    v = dask.delayed(1)
    chain = []
    for _ in range(8):
        v = dask.delayed(inc)(v)
        chain.append(v)
    s = dask.delayed(sum)(chain)
    (got,) = compute(dask_manager, s, mode=mode)
    assert got == dask.compute(s, scheduler="sync")[0] == sum(range(2, 10))


@pytest.mark.parametrize("mode", MODES)
def test_tuple_graph_and_nested_keys(dask_manager, mode):
    dsk = {"x": 1, "y": (inc, "x"), "z": (operator.add, "x", "y"), "w": (sum, ["x", "y", "z"]),
           "a": "z", "big": np.arange(100_000), "n": (np.sum, "big")}
    m = dask_manager
    assert m.get(dsk, [["w", "z"], "y", ["a"]], task_mode=mode, **OPTS) == [[6, 3], 2, [3]]
    assert m.get(dsk, "w", task_mode=mode, **OPTS) == 6
    assert m(dsk, ["n", "x"], task_mode=mode, **OPTS) == [np.arange(100_000).sum(), 1]


@pytest.mark.parametrize("mode", MODES)
def test_node_exception_reaches_the_caller(dask_manager, mode):
    bad = dask.delayed(boom)(dask.delayed(inc)(41))
    with pytest.raises(DaskVineError, match="failed permanently: ValueError: boom 42") as info:
        compute(dask_manager, bad, mode=mode, retries=2)
    err = info.value
    assert isinstance(err.exception, ValueError) and isinstance(err.__cause__, ValueError)
    assert "boom 42" in err.traceback and "Traceback" in err.traceback
    assert err.key == bad.key
    good = dask.delayed(inc)(1)  # the manager still runs graphs afterwards
    assert compute(dask_manager, good, mode=mode) == (2,)


@pytest.mark.parametrize("options", [
    {"worker_transfers": False},
    {"lazy_transfers": False, "task_priority_mode": "depth-first"},
    {"checkpoint_fn": lambda dag, key: dag.depth_of(key) == 1, "task_priority_mode": "FIFO"},
    {"prune_depth": 1, "task_priority_mode": "breadth-first"},
    {"max_pending": 2, "submit_per_cycle": 1, "task_priority_mode": "random"},
    {"env_vars": {"DASK_TEST_VAR": lambda m, t: "seen"}, "task_priority_mode": "LIFO"},
    {"task_priority_mode": "longest-category-first", "retries": 1},
    {"task_priority_mode": "shortest-category-first"},
], ids=lambda o: ",".join(o))
def test_options_keep_results_right(dask_manager, options):
    x = da.arange(1000, chunks=100)
    expr = (x * 2 + 1).sum()
    want = dask.compute(expr, scheduler="sync")[0]
    mode = "tasks" if options.get("worker_transfers") is False else "function-calls"
    assert compute(dask_manager, expr, mode=mode, **options) == (want,)


def test_env_vars_reach_tasks_and_the_library(dask_manager):
    read = dask.delayed(getenv)("DASK_TEST_VAR")
    for mode in MODES:
        assert compute(dask_manager, read, mode=mode, env_vars={"DASK_TEST_VAR": "on"}) == (
            "on",)


def read_text(name):
    with open(name) as f:
        return f.read()


def test_extra_files_reach_every_node(dask_manager):
    extra = {dask_manager.declare_buffer("extra contents", cache=True): "extra.txt"}
    read = dask.delayed(read_text)("extra.txt")
    for mode in MODES:
        assert compute(dask_manager, read, mode=mode, extra_files=extra) == ("extra contents",)


def imported(name):
    return name in sys.modules


def test_library_options(dask_manager):
    """lib_modules (modules, or names) are imported by the libraries before calls run."""
    import math
    v = dask.delayed(imported)("colorsys")
    got = compute(dask_manager, v, mode="function-calls", lib_modules=[math, "colorsys"],
                  lib_extra_functions=[read_text], lib_resources={"cores": 2, "slots": 2})
    assert got == (True,)


def test_wrapper_sees_every_node(dask_manager):
    seen = []

    def timed(node, values):
        return node.key, node(values)

    x = da.arange(100, chunks=25)
    (got,) = compute(dask_manager, x.sum(), mode="function-calls", wrapper=timed,
                     wrapper_proc=seen.append)
    assert got == sum(range(100))
    assert len(seen) >= 5 and all(DaskVineDag.keyp(k) for k in seen)


@pytest.mark.parametrize("mode", MODES)
def test_reconstruct_splits_merges(dask_manager, mode):
    parts = [dask.delayed(inc)(i) for i in range(9)]
    dsk = {"total": (total, [p.key for p in parts])}
    for p in parts:
        dsk.update(p.__dask_graph__())
    got = dask_manager.get(dsk, "total", task_mode=mode, reconstruct=True, merge_size=3, **OPTS)
    assert got == sum(range(1, 10))


def test_bad_options(dask_manager):
    dsk, m = {"x": (inc, 1)}, dask_manager
    with pytest.raises(ValueError, match="retries"):
        m.get(dsk, "x", retries=0)
    with pytest.raises(ValueError, match="task_mode"):
        m.get(dsk, "x", task_mode="threads")
    with pytest.raises(ValueError, match="task_priority_mode"):
        m.get(dsk, "x", task_priority_mode="smallest")
    with pytest.raises(ValueError, match="low_memory_mode"):
        m.get(dsk, "x", low_memory_mode=True)
    with pytest.raises(KeyError, match="nope"):
        m.get(dsk, "nope")
    with pytest.raises(ValueError, match="unknown scheduler"):
        m.get(dsk, "x", scheduling_mode="fastest")
    with pytest.raises(ValueError, match="unknown category mode"):
        m.get(dsk, "x", resources_mode="largest")


def test_resources_and_scheduling_modes_size_nodes_from_measurements(tmp_path):
    """``resources_mode`` puts each node's category in that allocation mode, with
    monitoring on: the nodes are measured and the category's statistics show it."""
    pool = Workers(tmp_path)
    try:
        with DaskVine(port=0, run_info_path=str(tmp_path / "vine-run-info")) as m:
            pool.start(m, cores=2, memory=2000, disk=4000)
            wait_connected(m, 1)
            dsk = {"a": (sum, [1, 2]), "b": (sum, ["a", 3]), "c": (max, ["a", "b"])}
            assert m.get(dsk, "c", resources_mode="max", scheduling_mode="time",
                         task_mode="tasks") == 6
            (category,) = {c for c in m._engine.categories.by_name if "sum" in c}
            s = m.stats_category(category)
            assert s.mode == "max" and s.tasks_done == 2
            assert s.max_seen["memory"] >= 1  # measured by the worker
    finally:
        pool.stop_all()


@pytest.mark.parametrize("mode", MODES)
def test_worker_killed_mid_graph(tmp_path, mode):
    pool = Workers(tmp_path)
    try:
        with DaskVine(port=0, run_info_path=str(tmp_path / "vine-run-info")) as m:
            victim = pool.start(m, cores=2)
            pool.start(m, cores=2)
            wait_connected(m, 2)
            x = da.arange(3200, chunks=100)
            expr = x.map_blocks(slow_square).sum()
            done = []

            def kill_after_some(_result):
                done.append(1)
                if len(done) == 8:
                    os.killpg(victim.pid, signal.SIGKILL)

            (got,) = dask.compute(expr, scheduler=m.get, task_mode=mode, retries=5,
                                  wrapper=lambda node, values: (None, node(values)),
                                  wrapper_proc=kill_after_some, **OPTS)
            assert got == dask.compute(expr, scheduler="sync")[0]
            assert victim.poll() is not None and m.stats.workers_removed >= 1
    finally:
        pool.stop_all()


def test_progress_bar_and_verbose(dask_manager, capsys):
    pytest.importorskip("rich")
    x = da.arange(100, chunks=25)
    got = dask.compute(x.sum(), scheduler=dask_manager.get, task_mode="function-calls",
                       progress_label="summing", verbose=True)
    assert got == (sum(range(100)),)
    out = capsys.readouterr().out
    assert "summing" in out and "DaskVine:" in out


def test_many_temp_inputs_from_one_peer(dask_manager):
    """A node whose inputs outnumber the transfers a peer may serve at once still gets them
    all (core/delivery.py sends the rest past the limit once the task is dispatched)."""
    m = dask_manager
    parts = [dask.delayed(inc)(i) for i in range(24)]
    total_ = dask.delayed(sum)(parts)
    m.tune("worker-source-max-transfers", 1)
    try:
        assert compute(m, total_, mode="tasks", retries=1) == (sum(range(1, 25)),)
    finally:
        m.tune("worker-source-max-transfers", 10)
