"""dask-awkward tests: collected only with ``VINE_TEST_AWKWARD=1``.

dask-awkward needs an older dask than the main test environment has, so these tests run in a
virtual environment of their own (``pip install '.[awkward]'``, see ``.ci/run``). Without the
variable this directory is skipped; with it, a missing dask-awkward fails the run.
"""

import os

if os.environ.get("VINE_TEST_AWKWARD") == "1":
    from tests.dask.conftest import dask_manager  # noqa: F401 - the same DaskVine and workers
else:
    collect_ignore_glob = ["test_*.py"]
