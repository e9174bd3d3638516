"""The task table's lifecycle and ordering (no network)."""

import pytest

from ndcctools.taskvine.core.tasks import (
    DONE,
    READY,
    RETRIEVED,
    RUNNING,
    WAITING_RETRIEVAL,
    TaskTable,
)
from ndcctools.taskvine.task import Task


def table():
    changes = []
    return TaskTable(lambda rec, old, new: changes.append((rec.task_id, old, new))), changes


def test_lifecycle_and_log_of_changes():
    tt, changes = table()
    rec = tt.submit(Task("true"))
    tt.move(rec, RUNNING)
    tt.move(rec, WAITING_RETRIEVAL)
    tt.finish(rec)
    assert tt.take_returnable() is rec
    tt.hand_back(rec)
    assert [new for _, _, new in changes] == [READY, RUNNING, WAITING_RETRIEVAL, RETRIEVED, DONE]
    assert len(tt) == 0 and tt.counts == [0] * 6


def test_illegal_transition_raises():
    tt, _ = table()
    rec = tt.submit(Task("true"))
    with pytest.raises(RuntimeError, match="illegal change READY -> DONE"):
        tt.move(rec, DONE)


def test_ready_order_is_priority_then_submission():
    tt, _ = table()
    tasks = []
    for prio in (0, 5, 0, 5, -1):
        t = Task("true")
        t.set_priority(prio)
        tasks.append(tt.submit(t))
    order = [rec.task_id for rec in tt.ready_in_order()]
    assert order == [2, 4, 1, 3, 5]
    tt.move(tasks[1], RUNNING)
    assert [rec.task_id for rec in tt.ready_in_order()] == [4, 1, 3, 5]


def test_take_returnable_by_tag_and_id():
    tt, _ = table()
    recs = []
    for tag in ("x", "y", "x"):
        t = Task("true")
        t.set_tag(tag)
        rec = tt.submit(t)
        tt.finish(rec)
        recs.append(rec)
    assert tt.take_returnable(tag="y") is recs[1]
    assert tt.take_returnable(task_id=3) is recs[2]
    assert tt.take_returnable(tag="y") is None
    assert tt.take_returnable() is recs[0]
