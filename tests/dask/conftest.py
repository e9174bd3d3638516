"""A DaskVine with two workers of 2 cores, shared by the tests of a module."""

from __future__ import annotations

import pytest

from tests.conftest import Workers, wait_connected

pytest.importorskip("dask")

from ndcctools.taskvine.dask_executor import DaskVine  # noqa: E402 - needs dask


@pytest.fixture(scope="module")
def dask_manager(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("daskvine")
    pool = Workers(tmp)
    with DaskVine(port=0, run_info_path=str(tmp / "vine-run-info")) as m:
        for _ in range(2):
            pool.start(m, cores=2, memory=2000, disk=4000)
        wait_connected(m, 2)
        yield m
    pool.stop_all()
