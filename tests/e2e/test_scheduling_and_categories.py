"""End-to-end: scheduling policies choose workers as api.md §10.1 says; categories limit
concurrency and size tasks from measurements (§9.2). Real workers on 127.0.0.1."""

import random

import pytest

import ndcctools.taskvine as vine
from tests.conftest import wait_connected, wait_tasks


def run_one(m, task):
    m.submit(task)
    (done,) = wait_tasks(m, 1)
    assert done.successful(), (done.result, done.exit_code, done.std_output)
    return done


def small_task(cmd="true"):
    t = vine.Task(cmd)
    t.set_cores(1)
    t.set_memory(100)
    t.set_disk(100)
    return t


def addrport_with(m, cores):
    (row,) = [w for w in m.status("workers") if w["cores_total"] == cores]
    return row["addrport"]


def test_schedulers_choose_workers_as_documented(manager, workers, tmp_path):
    m = manager
    workers.start(m, cores=1, disk=1000)
    wait_connected(m, 1)
    data = tmp_path / "data.txt"
    data.write_text("x" * 100_000)
    f = m.declare_file(str(data), cache=True)  # stays in the small worker's cache

    def with_input():
        t = small_task("wc -c < data.txt")
        t.add_input(f, "data.txt")
        return t

    small = run_one(m, with_input()).addrport
    workers.start(m, cores=4, disk=8000)
    wait_connected(m, 2)
    assert small == addrport_with(m, 1)
    big = addrport_with(m, 4)
    assert run_one(m, with_input()).addrport == small  # files (the default): the cache
    m.set_scheduler("worst")
    assert run_one(m, with_input()).addrport == big  # most free cores
    m.set_scheduler(vine.cvine.VINE_SCHEDULE_DISK)
    assert run_one(m, small_task()).addrport == big  # most free disk
    m.set_scheduler("files")
    t = with_input()
    t.set_scheduler("worst")  # a task's own scheduler wins
    assert run_one(m, t).addrport == big
    m.set_scheduler("rand")
    seen = {run_one(m, small_task()).addrport for _ in range(20)}
    assert seen == {small, big}  # 2**-19 chance of a false failure
    with pytest.raises(ValueError, match="unknown scheduler"):
        m.set_scheduler("best")


def test_time_scheduler_prefers_the_worker_with_faster_tasks(manager, workers):
    m = manager
    workers.start(m, cores=1)
    wait_connected(m, 1)
    slow = run_one(m, small_task("sleep 0.5")).addrport
    workers.start(m, cores=1)
    wait_connected(m, 2)
    (fast,) = [w["addrport"] for w in m.status("workers") if w["addrport"] != slow]
    m.set_scheduler("time")
    assert run_one(m, small_task()).addrport == fast  # no history counts as fastest
    assert run_one(m, small_task()).addrport == fast  # and a quick task keeps it fastest


def interval(task):
    start, end = (float(x) for x in task.std_output.split())
    return start, end


def test_max_concurrent_keeps_one_task_of_the_category_running(manager, workers):
    m = manager
    workers.start(m, cores=4, memory=2000)
    wait_connected(m, 1)
    m.set_category_max_concurrent("one", 1)
    m.tune("attempt-schedule-depth", 4)  # waiting "one" tasks must not hide the others
    for category, n, sleep in (("one", 6, 0.2), ("free", 3, 0.6)):
        for _ in range(n):
            t = small_task(f"date +%s.%N; sleep {sleep}; date +%s.%N")
            t.set_category(category)
            m.submit(t)
    done, most_running = [], 0
    while len(done) < 9:
        most_running = max(most_running, m.stats_category("one").tasks_running)
        t = m.wait(5)
        assert t is not None, "a task did not come back"
        assert t.successful(), t.result
        done.append(t)

    def spans(category):
        return sorted(interval(t) for t in done if t.category == category)

    def overlaps(category):
        s = spans(category)
        return any(a[1] > b[0] for a, b in zip(s, s[1:], strict=False))
    assert most_running == 1
    assert not overlaps("one")
    assert overlaps("free")  # the limit is per category: the others ran together
    assert max(start for start, _ in spans("free")) < spans("one")[1][0]
    s = m.stats_category("one")
    assert (s.tasks_done, s.tasks_successful, s.tasks_running, s.tasks_waiting) == (6, 6, 0, 0)
    assert {r["category"] for r in m.status("categories")} == {"one", "free"}


def test_automatic_mode_sizes_later_tasks_from_the_measurements(manager, workers):
    m = manager
    workers.start(m, cores=4, memory=2000, disk=4000)
    wait_connected(m, 1)
    m.tune("force-proportional-resources", 0)  # allocations are exactly the limits
    assert m.set_category_mode("auto", "max throughput") == 1
    m.set_category_resources_max("auto", {"memory": 1500, "cores": 2})

    def auto_task():
        t = vine.Task("true")
        t.set_category("auto")
        return t

    first = run_one(m, auto_task()).resources_allocated
    assert (first.memory, first.cores) == (1500, 2)  # no measurements: the max
    rng = random.Random(11)
    bulk = [rng.uniform(300, 400) for _ in range(97)]
    for memory in bulk + [1500] * 3:  # what a monitor would have recorded
        m._engine.categories.record("auto", {"cores": 0.8, "memory": memory, "disk": 5,
                                             "gpus": 0})
    expected = int(max(bulk)) + 1  # the top of the bulk, in whole MB
    later = run_one(m, auto_task()).resources_allocated
    assert (later.memory, later.cores, later.gpus) == (expected, 1, 0)
    assert later.disk == int(5 * 0.75)  # disk-proportion-available-to-task applies
    s = m.stats_category("auto")
    assert s.mode == "max throughput" and s.first_allocation["memory"] == expected
    assert s.max_seen["memory"] == 1500 and s.tasks_done == 2
    (row,) = [r for r in m.status("categories") if r["category"] == "auto"]
    assert row["max_memory"] == "1500" and row["max_cores"] == "2" and row["max_disk"] == "~5"
    assert row["first_allocation"]["memory"] == expected
    m.set_category_mode("auto", "fixed")
    assert run_one(m, auto_task()).resources_allocated.memory == 1500
    with pytest.raises(ValueError, match="unknown category mode 'smallest'"):
        m.set_category_mode("auto", "smallest")


def test_initialize_categories_seeds_an_automatic_category(manager, workers, tmp_path):
    m = manager
    workers.start(m, cores=2, memory=2000, disk=4000)
    wait_connected(m, 1)
    m.tune("force-proportional-resources", 0)
    summaries = tmp_path / "summaries.jsonl"
    summaries.write_text("".join(f'{{"category": "seeded", "memory": [{v}, "MB"], '
                                 f'"cores": 1, "disk": 8}}\n' for v in [200] * 30))
    assert m.initialize_categories(str(summaries), {"memory": 2000}) == 30
    m.set_category_mode("seeded", "max")
    t = vine.Task("true")
    t.set_category("seeded")
    assert run_one(m, t).resources_allocated.memory == 200
