"""Pure policies of the manager core, tested with plain data (no network)."""

import pytest

from ndcctools.taskvine.core.allocation import Policy, allocate, can_ever_fit, fits
from ndcctools.taskvine.core.hungry import hungry
from ndcctools.taskvine.core.tuning import Tuning
from ndcctools.taskvine.resources import Resources

WORKER = Resources(cores=4, memory=8000, disk=10000, gpus=0)
PROP = Policy()


@pytest.mark.parametrize("request_,expected", [
    # nothing set: the whole worker (disk x 0.75)
    (Resources(-1, -1, -1, -1), Resources(4, 8000, 7500, 0)),
    # one core of four: a quarter of memory and disk
    (Resources(1, -1, -1, -1), Resources(1, 2000, 1875, 0)),
    # memory dominates: half of the disk too, but explicit cores stay as asked
    (Resources(1, 4000, -1, -1), Resources(1, 4000, 3750, 0)),
    # memory dominates and cores are unset: half the cores
    (Resources(-1, 4000, -1, -1), Resources(2, 4000, 3750, 0)),
    # explicit values always win
    (Resources(1, 100, 50, -1), Resources(1, 100, 50, 0)),
    # more than the worker: proportion > 1 -> whole worker
    (Resources(8, -1, -1, -1), Resources(8, 8000, 7500, 0)),
])
def test_proportional_allocation(request_, expected):
    assert allocate(request_, WORKER, WORKER.disk, PROP) == expected


def test_whole_task_rounding_only_without_explicit_memory_or_disk():
    rounding = Policy(whole_tasks=True)
    # 3 cores of 4 -> p = 0.75 -> rounded up to 1/floor(1/0.75) = 1: whole worker
    assert allocate(Resources(3, -1, -1, -1), WORKER, WORKER.disk, rounding).memory == 8000
    assert allocate(Resources(3, 100, -1, -1), WORKER, WORKER.disk, rounding,
                    explicit_memory_or_disk=True).memory == 100


def test_non_proportional_gives_unset_resources_the_whole_worker():
    alloc = allocate(Resources(1, -1, -1, -1), WORKER, WORKER.disk, Policy(proportional=False))
    assert alloc == Resources(1, 8000, 7500, 0)


def test_category_minimum_and_maximum():
    alloc = allocate(Resources(-1, -1, -1, -1), WORKER, WORKER.disk, PROP,
                     category_max={"cores": 2}, category_min={"memory": 5000})
    assert alloc.cores == 2 and alloc.memory == 5000


def test_fits_and_can_ever_fit():
    assert fits(Resources(1, 100, 100, 0), Resources(1, 100, 100, 0))
    assert not fits(Resources(2, 100, 100, 0), Resources(1, 100, 100, 0))
    assert can_ever_fit(Resources(4, -1, -1, -1), WORKER)
    assert not can_ever_fit(Resources(5, -1, -1, -1), WORKER)


def test_hungry_with_no_workers_is_the_minimum():
    assert hungry(0, Resources(), Resources(), 0, [], 0, 10, 2) == 10


def test_hungry_counts_room_for_waiting_tasks():
    total = Resources(20, 20000, 20000, 0)  # e.g. 5 workers of 4 cores
    # nothing running, 3 waiting one-core tasks: room for 2x20 cores -> 40 - 3
    waiting = [Resources(1, -1, -1, -1)] * 3
    assert hungry(5, total, Resources(), 0, waiting, 3, 10, 2) == 37


def test_tuning_validates_and_aliases():
    t = Tuning()
    assert t.hungry_minimum == 10
    t.set("force-proportional-resources", 0)
    assert t.proportional_resources == 0 and t.proportional_whole_tasks == 0
    t.set("proportional-resources", 1)
    assert t.proportional_whole_tasks == 1
    t.set("hungry-minimum", 0)
    assert t.hungry_minimum == 1
    assert "value refused" in t.set("disk-proportion-available-to-task", 1.5)
    assert t.disk_proportion_available_to_task == 0.75
    assert "unknown parameter 'bogus'" in t.set("bogus", 1)
    with pytest.raises(TypeError):
        t.set("hungry-minimum", "ten")
