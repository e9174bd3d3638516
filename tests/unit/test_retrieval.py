"""Receiving outputs on the manager: nothing truncated is ever put in place."""

from ndcctools.taskvine import protocol as p
from ndcctools.taskvine.core.retrieval import OutputReply
from ndcctools.taskvine.core.tasks import TaskRecord
from ndcctools.taskvine.task import Task


def feed(reply, wire):
    d = p.Decoder("manager")
    d.feed(wire)
    finished = False
    while (ev := d.next_event()) is not None:
        finished = reply.on_event(ev)
    return finished


def make(tmp_path, expected):
    rec = TaskRecord(Task("true"), 7)
    outcome, received = [], []
    path = tmp_path / "out.txt"
    reply = OutputReply(rec, str(path), expected, lambda r, ok: outcome.append(ok),
                        received.append)
    return rec, reply, path, outcome, received


def test_an_output_as_large_as_announced_is_put_in_place(tmp_path):
    rec, reply, path, outcome, received = make(tmp_path, 5)
    assert feed(reply, b"file out.txt 5 0644 0\nhello")
    assert path.read_bytes() == b"hello" and received == [5]
    assert outcome == [True] and rec.output_error is None


def test_a_short_output_is_an_error_and_leaves_nothing_behind(tmp_path):
    rec, reply, path, outcome, received = make(tmp_path, 10)
    path.write_bytes(b"older output")
    assert feed(reply, b"file out.txt 5 0644 0\nhello")
    assert "5 bytes arrived, the worker announced 10" in rec.output_error
    assert path.read_bytes() == b"older output" and received == []
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
