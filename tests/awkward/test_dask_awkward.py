"""DaskVine running dask-awkward graphs, the path coffea uses: a generated array of records
(jagged lists and scalars) in several partitions, reduced per record, filtered, flattened
and histogrammed, in both task modes, each compared with dask's synchronous scheduler."""

from __future__ import annotations

import sys

import awkward as ak
import cloudpickle
import dask
import dask_awkward as dak
import numpy as np
import pytest

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MODES = ["tasks", "function-calls"]
OPTS = {"resources": {"cores": 1}, "progress_disable": True}
BINS = np.linspace(0.0, 100.0, 11)


def events(n: int = 400, seed: int = 3) -> ak.Array:
    """Records of a jagged ``pt`` list (0 to 5 entries) and scalar ``weight`` and ``run``."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, n)
    pt = ak.unflatten(rng.uniform(0.0, 100.0, int(counts.sum())), counts)
    return ak.zip({"pt": pt, "weight": rng.uniform(0.5, 1.5, n),
                   "run": rng.integers(1, 4, n)}, depth_limit=1)


def histogram(values: ak.Array) -> np.ndarray:
    return np.histogram(ak.to_numpy(values), bins=BINS)[0]


def coffea_like(d: dak.Array) -> tuple:
    """Per-record counts and sums, a selection, and a histogram filled per partition and
    summed, as coffea's processors and dask-histogram do."""
    selected = d[(d.weight > 0.8) & (dak.num(d.pt, axis=1) > 1)]
    partial = [dask.delayed(histogram)(part) for part in dak.flatten(d.pt).to_delayed()]
    return (dak.num(d.pt, axis=1), dak.sum(d.pt * 2.0, axis=1), selected.run,
            dak.flatten(selected.pt), dak.sum(d.weight), dask.delayed(sum)(partial))


def as_python(value):
    return value.tolist() if isinstance(value, np.ndarray) else ak.to_list(value)


@pytest.mark.parametrize("mode", MODES)
def test_coffea_like_analysis_matches_the_sync_scheduler(dask_manager, mode):
    d = dak.from_awkward(events(), npartitions=5)
    exprs = coffea_like(d)
    want = dask.compute(*exprs, scheduler="sync")
    got = dask.compute(*exprs, scheduler=dask_manager.get, task_mode=mode, **OPTS)
    assert [as_python(g) for g in got] == [as_python(w) for w in want]
    assert sum(got[-1]) == len(ak.flatten(events().pt))  # every value in one bin
    assert len(got[0]) == 400 and 0 < len(got[2]) < 400


@pytest.mark.parametrize("mode", MODES)
def test_column_projection_and_a_failing_partition(dask_manager, mode):
    """dask-awkward's optimisation keeps only the columns used; a partition whose function
    raises fails the whole computation with that exception."""
    d = dak.from_awkward(events(120), npartitions=3)
    only_run = d.run + 1
    assert set(dak.report_necessary_columns(only_run).values()) == {frozenset({"run"})}
    want = only_run.compute(scheduler="sync")
    got = only_run.compute(scheduler=dask_manager.get, task_mode=mode, **OPTS)
    assert ak.to_list(got) == ak.to_list(want)

    def explode(part):
        raise ValueError("bad partition")
    bad = d.pt.map_partitions(explode, meta=d.pt._meta)
    with pytest.raises(Exception, match="bad partition"):
        bad.compute(scheduler=dask_manager.get, task_mode=mode, retries=1, **OPTS)
