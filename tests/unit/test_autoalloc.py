"""Automatic allocation (autoalloc.py) and per-category state (categories.py) on recorded
measurements: no network."""

import json
import random
from types import SimpleNamespace

import pytest

from ndcctools.taskvine import cvine
from ndcctools.taskvine.core import autoalloc
from ndcctools.taskvine.core.allocation import Policy, allocate
from ndcctools.taskvine.core.categories import Categories, parse_mode
from ndcctools.taskvine.core.scheduling import parse_scheduler, score
from ndcctools.taskvine.core.tasks import DONE, READY, RETRIEVED, RUNNING, WAITING_RETRIEVAL
from ndcctools.taskvine.core.tuning import Tuning
from ndcctools.taskvine.core.workers import WorkerRecord
from ndcctools.taskvine.resources import Resources

MODE = SimpleNamespace(**{name[len("VINE_ALLOCATION_MODE_"):].lower(): getattr(cvine, name)
                          for name in dir(cvine) if name.startswith("VINE_ALLOCATION_MODE_")})
BUCKETING = [MODE.greedy_bucketing, MODE.exhaustive_bucketing, MODE.det_greedy_bucketing,
             MODE.det_exhaustive_bucketing, MODE.quantized_bucketing]


def bulk_and_outliers(seed=7):
    """100 tasks: 97 using 100–200 MB, 3 using 1 GB."""
    rng = random.Random(seed)
    return [rng.uniform(100, 200) for _ in range(97)] + [1000.0] * 3


def single(prediction):
    assert len(prediction) == 1 and prediction[0][1] == 1.0
    return prediction[0][0]


def test_max_mode_is_the_largest_value_seen():
    assert single(autoalloc.predict(MODE.max, bulk_and_outliers())) == 1000


def test_min_waste_and_max_throughput_choose_the_top_of_the_bulk():
    values = bulk_and_outliers()
    top_of_bulk = max(v for v in values if v < 1000)
    assert single(autoalloc.predict(MODE.min_waste, values)) == top_of_bulk
    assert single(autoalloc.predict(MODE.max_throughput, values)) == top_of_bulk


def test_min_waste_weighs_by_wall_time():
    # half the tasks need 100, half 500; the big ones run 100 times longer: give 500
    values = [100.0] * 50 + [500.0] * 50
    assert single(autoalloc.predict(MODE.min_waste, values, [1.0] * 100)) == 100
    assert single(autoalloc.predict(MODE.min_waste, values, [1.0] * 50 + [100.0] * 50)) == 500


def test_max_throughput_prefers_allocations_that_divide_the_worker():
    # everything fits 260, but 250 packs 4 per 1000 instead of 3: 4 tasks run at once
    values = [240.0] * 90 + [250.0] * 8 + [260.0] * 2
    assert single(autoalloc.predict(MODE.max_throughput, values, top=1000)) == 250
    assert single(autoalloc.predict(MODE.min_waste, values, top=1000)) == 260


def test_a_category_max_caps_the_values():
    assert single(autoalloc.predict(MODE.max, bulk_and_outliers(), top=500)) == 500


@pytest.mark.parametrize("mode", BUCKETING)
def test_bucketing_predicts_values_within_the_observed_range(mode):
    values = bulk_and_outliers()
    prediction = autoalloc.predict(mode, values)
    assert prediction and abs(sum(p for _, p in prediction) - 1) < 1e-9
    for value, _ in prediction:
        assert min(values) <= value <= max(values)
    rng = random.Random(3)
    draws = [autoalloc.choose(prediction, rng) for _ in range(200)]
    assert {d for d in draws} <= {v for v, _ in prediction}


def test_greedy_bucketing_separates_the_outliers():
    values = bulk_and_outliers()
    prediction = dict(autoalloc.predict(MODE.greedy_bucketing, values))
    assert prediction == {max(v for v in values if v < 1000): 0.97, 1000: 0.03}
    det = autoalloc.predict(MODE.det_greedy_bucketing, values)
    assert det == [(max(v for v in values if v < 1000), 1.0)]


def test_exhaustive_bucketing_is_never_worse_than_one_bucket():
    values = bulk_and_outliers()
    w = autoalloc._Waste(values, None, max(values))
    ends = autoalloc.exhaustive_buckets(w)
    assert autoalloc.buckets_cost(w, ends) < autoalloc.buckets_cost(w, [len(values)])


def test_quantized_bucketing_uses_the_quartiles():
    values = [float(v) for v in range(1, 101)]
    assert autoalloc.predict(MODE.quantized_bucketing, values) == [
        (25.0, 0.25), (50.0, 0.25), (75.0, 0.25), (100.0, 0.25)]


def test_no_values_or_fixed_mode_predict_nothing():
    assert autoalloc.predict(MODE.min_waste, []) == []
    assert autoalloc.predict(MODE.fixed, [1.0]) == []
    assert autoalloc.choose([], random.Random()) is None


# ---------------------------------------------------------------------- categories

@pytest.mark.parametrize("text,value", [
    ("fixed", 0), ("max", 1), ("min waste", 2), ("min_waste", 2), ("MAX THROUGHPUT", 3),
    ("greedy bucketing", 4), ("exhaustive_bucketing", 5), ("det greedy bucketing", 6),
    ("det_exhaustive_bucketing", 7), ("quantized bucketing", 8),
    ("VINE_ALLOCATION_MODE_MIN_WASTE", 2), (cvine.VINE_ALLOCATION_MODE_MAX_THROUGHPUT, 3)])
def test_mode_names_and_constants(text, value):
    assert parse_mode(text) == value


@pytest.mark.parametrize("bad", ["smallest", "", 9, -1, None, True])
def test_unknown_modes_raise_naming_them(bad):
    with pytest.raises(ValueError, match="unknown category mode"):
        parse_mode(bad)


def record(task_id, category="c", cores=-1, memory=-1, disk=-1, gpus=-1, library=None):
    task = SimpleNamespace(_category=category, _cores=cores, _memory=memory, _disk=disk,
                           _gpus=gpus)
    return SimpleNamespace(task=task, task_id=task_id, library=library, result=0,
                           exit_code=0, time_worker_start=0, time_worker_end=1_000_000,
                           allocation=None, measured=None)


def categories(steady=25):
    tuning = Tuning()
    tuning.set("category-steady-n-tasks", steady)
    return Categories(tuning, random.Random(5))


def feed(cats, name, values):
    for v in values:
        cats.record(name, {"memory": v, "cores": 0.9, "disk": 10, "gpus": 0})


def test_fixed_mode_limits_are_the_category_max_and_min():
    cats = categories()
    cats.set_max("c", {"memory": 500})
    cats.set_min("c", {"cores": 2})
    assert cats.limits(record(1)) == ({"memory": 500}, {"cores": 2})
    assert cats.limits(record(1, category="unknown")) == (None, None)


def test_before_the_steady_state_the_first_allocation_is_the_guess_over_the_max():
    cats = categories(steady=25)
    cats.set_mode("c", "min waste")
    cats.set_max("c", {"memory": 4000, "cores": 4})
    assert cats.limits(record(1))[0] == {"memory": 4000, "cores": 4}
    cats.set_guess("c", {"memory": 300})
    feed(cats, "c", bulk_and_outliers()[:24])
    assert cats.limits(record(1))[0] == {"memory": 300, "cores": 4}


def test_after_the_steady_state_automatic_modes_use_the_measurements():
    values = bulk_and_outliers()
    cats = categories(steady=25)
    cats.set_mode("c", "max throughput")
    cats.set_max("c", {"memory": 1000})
    feed(cats, "c", values)
    first, _ = cats.limits(record(1))
    assert first["memory"] == int(max(v for v in values if v < 1000)) + 1  # whole MB, up
    assert first["cores"] == 1 and first["disk"] == 10 and first["gpus"] == 0
    cats.set_mode("c", "max")
    assert cats.limits(record(1))[0]["memory"] == 1000


def test_autolabel_off_keeps_the_max_for_that_resource():
    cats = categories(steady=1)
    cats.set_mode("c", "min waste")
    cats.set_max("c", {"memory": 4000, "disk": 2000})
    cats.set_autolabel("c", "disk", False)
    feed(cats, "c", [100.0] * 5)
    first, _ = cats.limits(record(1))
    assert first["memory"] == 100 and first["disk"] == 2000
    with pytest.raises(ValueError, match="unknown resource"):
        cats.set_autolabel("c", "bandwidth", True)


def test_bucketing_starts_with_its_guess_as_a_minimum():
    cats = categories()
    cats.set_mode("c", "exhaustive bucketing")
    assert cats.limits(record(1)) == ({}, {"cores": 1, "memory": 1000, "disk": 1000,
                                           "gpus": 0})
    # as upstream's allocation test: 4 cores, 2000 MB, 2000 MB disk, whole-task rounding on
    cmax, cmin = cats.limits(record(1))
    policy = Policy(whole_tasks=True)
    total = Resources(4, 2000, 2000, 0)
    assert allocate(Resources(-1, -1, -1, -1), total, 2000, policy, cmax, cmin) == \
        Resources(2, 1000, 1000, 0)


def test_exhaustion_retries_at_the_max_once_in_automatic_modes_only():
    cats = categories(steady=1)
    cats.set_mode("c", "min waste")
    cats.set_max("c", {"memory": 2000})
    feed(cats, "c", [100.0] * 3)
    rec = record(7)
    assert cats.limits(rec)[0]["memory"] == 100
    assert cats.exhausted(rec) is True
    assert cats.limits(rec)[0] == {"memory": 2000}
    assert cats.exhausted(rec) is False  # exhausted at the max: it ends
    cats.set_mode("d", "fixed")
    assert cats.exhausted(record(8, category="d")) is False
    assert cats.stats("c", 0).tasks_exhausted_attempts == 2


def test_state_changes_count_tasks_and_feed_measurements():
    cats = categories(steady=1)
    cats.set_mode("c", "max")
    rec = record(3)
    rec.measured = {"memory": 321, "cores": 1.5}
    for old, new in [(0, READY), (READY, RUNNING), (RUNNING, WAITING_RETRIEVAL),
                     (WAITING_RETRIEVAL, RETRIEVED), (RETRIEVED, DONE)]:
        cats.on_change(rec, old, new)
    cats.on_change(record(4, library="lib"), 0, READY)  # library instances are not counted
    s = cats.stats("c", 3)
    assert (s.tasks_submitted, s.tasks_dispatched, s.tasks_done, s.tasks_successful,
            s.tasks_failed, s.tasks_waiting, s.tasks_running) == (1, 1, 1, 1, 0, 0, 0)
    assert s.max_seen == {"memory": 321, "cores": 1.5}
    assert s.first_allocation == {"memory": 321, "cores": 2}
    assert s.mode == "max" and s.workers_able == 3 and s.first_allocation_count == 1
    row = cats.row("c", 3)
    assert row["max_memory"] == "~321" and row["max_disk"] == "na"
    assert row["first_allocation"]["memory"] == 321 and row["tasks_done"] == 1


def test_a_task_without_measurements_records_nothing():
    cats = categories(steady=1)
    rec = record(3)
    cats.on_change(rec, 0, READY)
    cats.on_change(rec, READY, RUNNING)
    cats.on_change(rec, RUNNING, WAITING_RETRIEVAL)
    assert cats.stats("c", 0).measured_tasks == 0


def test_max_concurrent_is_full_when_that_many_run():
    cats = categories()
    cats.set_max_concurrent("c", 1)
    rec = record(1)
    cats.on_change(rec, 0, READY)
    assert not cats.full("c")
    cats.on_change(rec, READY, RUNNING)
    assert cats.full("c") and not cats.full("other")
    cats.set_max_concurrent("c", -1)
    assert not cats.full("c") and not cats.limited


def test_default_mode_applies_to_categories_created_later():
    cats = categories()
    cats.set_mode("old", "fixed")
    cats.set_mode(None, "max")
    assert cats.get("new").mode == MODE.max and cats.get("old").mode == MODE.fixed


def test_seed_reads_resource_summaries(tmp_path):
    path = tmp_path / "summaries.json"
    lines = [{"category": "a", "memory": [150, "MB"], "cores": [1, "cores"],
              "wall_time": [10, "s"]},
             {"category": "a", "memory": 200, "disk": 30},
             {"memory": 50}]
    path.write_text("# resource summaries\n" + "\n".join(json.dumps(x) for x in lines) + "\n")
    cats = categories(steady=2)
    assert cats.seed(str(path), {"memory": 4000}) == 3
    assert cats.get("a").seen["memory"] == [150, 200]
    assert cats.get("default").seen["memory"] == [50]
    assert cats.get("a").ceiling == {"memory": 4000}
    cats.set_mode("a", "max")
    assert cats.limits(record(1, category="a"))[0]["memory"] == 200
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="summaries.json:1"):
        cats.seed(str(path), None)


# ---------------------------------------------------------------------- scheduling

def worker_holding(cache):
    w = WorkerRecord(None, "127.0.0.1:1", 0.0)
    w.cache = cache
    return w


@pytest.mark.parametrize("text,value", [
    ("files", 2), ("time", 3), ("rand", 4), ("worst", 5), ("disk", 6), ("fcfs", 1),
    ("VINE_SCHEDULE_WORST", 5), (cvine.VINE_SCHEDULE_DISK, 6)])
def test_scheduler_names_and_constants(text, value):
    assert parse_scheduler(text) == value


@pytest.mark.parametrize("bad", ["best", 7, None])
def test_unknown_schedulers_raise(bad):
    with pytest.raises(ValueError, match="unknown scheduler"):
        parse_scheduler(bad)


def test_scheduling_scores():
    small, big = worker_holding({"x": 10}), worker_holding({})
    task = SimpleNamespace(_inputs=[SimpleNamespace(file=SimpleNamespace(_cachename="x"))])
    free_small, free_big = Resources(1, 1000, 500, 0), Resources(4, 1000, 8000, 0)

    def best(policy):
        return max([(small, free_small), (big, free_big)],
                   key=lambda wf: score(policy, task, wf[0], wf[1]))[0]
    assert best(cvine.VINE_SCHEDULE_FILES) is small
    assert best(cvine.VINE_SCHEDULE_WORST) is big
    assert best(cvine.VINE_SCHEDULE_DISK) is big
    small.finished(1_000_000)
    big.finished(3_000_000)
    big.finished(1_000_000)
    assert big.average_wall_us() == 2_000_000
    assert best(cvine.VINE_SCHEDULE_TIME) is small


class Txn:
    def __init__(self):
        self.records = []

    def category(self, name, kind, resources):
        self.records.append((name, kind, dict(resources)))


def test_category_records_are_written_when_what_they_say_changes():
    txn = Txn()
    cats = Categories(Tuning(), random.Random(5), txn)
    cats.tuning.set("category-steady-n-tasks", 3)
    cats.set_max("c", {"memory": 1000})
    assert txn.records == [("c", "MAX", {"memory": 1000}), ("c", "MIN", {}),
                           ("c", "FIRST FIXED", {"memory": 1000})]
    cats.set_max("c", {"memory": 1000})  # the same again: nothing new to say
    assert len(txn.records) == 3
    cats.set_mode("c", "max throughput")
    assert txn.records[-1] == ("c", "FIRST MAX_THROUGHPUT", {"memory": 1000})
    feed(cats, "c", [100, 110, 120])
    rec = record(1)
    cats.on_change(rec, RUNNING, WAITING_RETRIEVAL)
    cats.on_change(rec, WAITING_RETRIEVAL, RETRIEVED)
    assert txn.records[-1][1] == "FIRST MAX_THROUGHPUT"
    assert txn.records[-1][2]["memory"] == 120  # measured: the first allocation shrank
    n = len(txn.records)
    cats.on_change(rec, WAITING_RETRIEVAL, RETRIEVED)
    assert len(txn.records) == n
