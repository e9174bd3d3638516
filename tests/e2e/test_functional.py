"""Functional helpers: map, pair and tree_reduce run on workers, results in input order."""

import functools
import os
import sys

import cloudpickle

import ndcctools.taskvine as vine

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square_where(x):
    return x * x, os.getpid()


def test_map_pair_and_tree_reduce_match_the_sequential_computation(manager, workers):
    m = manager
    workers.start(m)
    results = m.map(square_where, range(13), chunksize=4)
    assert [r[0] for r in results] == [x * x for x in range(13)]
    assert os.getpid() not in {r[1] for r in results}  # computed on the worker
    assert m.pair(lambda p: p[0] * 10 + p[1], [1, 2, 3], [4, 5], chunksize=4) == \
        [x * 10 + y for x in [1, 2, 3] for y in [4, 5]]
    assert m.tree_reduce(sum, range(100), chunksize=7) == sum(range(100))
    assert m.tree_reduce(lambda xs: functools.reduce(max, xs), [3, 9, 2, 7]) == 9


def test_a_failing_chunk_gives_no_results_in_place(manager, workers):
    m = manager
    workers.start(m)
    out = m.map(lambda x: 10 // x, [5, 2, 0, 1], chunksize=2)
    assert out[:2] == [2, 5]
    assert all(isinstance(r, vine.PythonTaskNoResult) for r in out[2:])


def test_remote_helpers_call_a_library(manager, workers):
    m = manager

    def squares(values):
        return [v * v for v in values]

    def total(values):
        return sum(values)

    def products(pairs):
        return [a * b for a, b in pairs]
    workers.start(m)
    lib = m.create_library_from_functions("helpers", squares, total, products, add_env=False)
    m.install_library(lib)
    assert m.remote_map("squares", range(10), "helpers", "values", chunksize=3) == \
        [v * v for v in range(10)]
    assert m.remote_tree_reduce("total", range(50), "helpers", "values", chunksize=4) == \
        sum(range(50))
    assert m.remote_pair("products", [1, 2], [3, 4], "helpers", "pairs", chunksize=3) == \
        [3, 4, 6, 8]
