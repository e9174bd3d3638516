"""Catalog reporting, manager lookup by name and ``vine_status`` tables, without a catalog:
fake clocks, fake senders and plain records."""

from __future__ import annotations

import gc
import json
import random
import socket
import threading
import weakref
from types import SimpleNamespace

import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine.catalog import CatalogError
from ndcctools.taskvine.core import catalog_reporter as cr
from ndcctools.taskvine.core import status
from ndcctools.taskvine.tools import vine_status
from ndcctools.taskvine.worker import main as worker_main
from ndcctools.taskvine.worker.locate import ByName, order


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Debug:
    def __init__(self):
        self.lines = []

    def write(self, flag, text):
        self.lines.append(text)

    def count(self, words):
        return sum(words in line for line in self.lines)


class FakeSend:
    """Records what is sent; fails while ``error`` is set."""

    def __init__(self):
        self.sent = []
        self.error = None

    def __call__(self, host, port, payload, udp):
        if self.error:
            raise OSError(self.error)
        self.sent.append((host, port, json.loads(payload), udp))


def reporter(record, send, servers="127.0.0.1:9097"):
    clock, debug = Clock(), Debug()
    r = cr.CatalogReporter(lambda: record, debug, SimpleNamespace(update_interval=60),
                           cr.Sender(send), clock)
    r.set_servers(servers)
    return r, clock, debug


def test_updates_go_out_at_the_first_tick_then_every_interval():
    send = FakeSend()
    r, clock, _ = reporter({"project": "p", "port": 1}, send, "h1:5,h2")
    for now in (0, 10, 59, 61):
        clock.now = now
        r.tick()
        assert r.sender.flush(5)
    assert [(h, p) for h, p, _, _ in send.sent] == [("h1", 5), ("h2", 9097)] * 2
    r.update()  # update_catalog(): at once, whatever the interval
    assert r.sender.flush(5) and len(send.sent) == 6


def test_a_manager_without_a_name_sends_nothing():
    send = FakeSend()
    r, _, _ = reporter(None, send)
    r.tick()
    r.update()
    r.close()
    assert send.sent == []


def test_an_unreachable_catalog_is_logged_once_and_its_return_once():
    send = FakeSend()
    r, clock, debug = reporter({"project": "p"}, send)
    send.error = "Connection refused"
    for _ in range(3):
        r.update()
        assert r.sender.flush(5)
        r.log_outcomes()
    assert debug.count("could not send an update to catalog 127.0.0.1:9097: "
                       "Connection refused") == 1
    send.error = None
    for _ in range(2):
        r.update()
        assert r.sender.flush(5)
        r.log_outcomes()
    assert debug.count("reached again") == 1 and debug.count("could not send") == 1


def test_the_newest_record_replaces_one_still_waiting():
    release, started, sent = threading.Event(), threading.Event(), []

    def slow_send(host, port, payload, udp):
        started.set()
        release.wait(5)
        sent.append(json.loads(payload)["n"])

    sender = cr.Sender(slow_send)
    for n in range(4):
        sender.post(cr.Update((("h", 1),), json.dumps({"n": n}).encode(), False))
        started.wait(5)  # the first is being sent; the others wait, each replacing the last
    release.set()
    assert sender.flush(5)
    assert sent == [0, 3]
    sender.stop()
    sender.post(cr.Update((("h", 1),), b"{}", False))
    assert sender.flush(1) and sent == [0, 3]


def test_close_sends_a_last_update_only_after_advertising():
    send = FakeSend()
    r, _, _ = reporter({"project": "p", "tasks_waiting": 0}, send)
    r.tick()
    assert r.sender.flush(5)
    r.close()
    assert len(send.sent) == 2


def test_a_record_too_large_for_a_datagram_goes_lean():
    record = {"type": "vine_manager", "project": "p", "port": 9123, "tasks_waiting": 3,
              "time_send": 1, "capacity_cores": 4, "workers": 2,
              "categories": [{"category": f"c{i}", "max_cores": "~1.000"} for i in range(5000)]}
    lean = json.loads(cr.encode(record))
    assert "categories" not in lean
    assert {k: v for k, v in record.items() if k != "categories"} == lean
    assert json.loads(cr.encode({"project": "p"})) == {"project": "p"}


def test_send_update_over_tcp_to_port_plus_one_and_over_udp():
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(1)
        port = tcp.getsockname()[1] - 1
        cr.send_update("127.0.0.1", port, b'{"a": 1}', udp=False, timeout=5)
        conn, _ = tcp.accept()
        with conn:
            conn.settimeout(5)
            assert conn.recv(100) == b'{"a": 1}' and conn.recv(100) == b""
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(5)
        cr.send_update("127.0.0.1", udp.getsockname()[1], b'{"b": 2}', udp=True, timeout=5)
        assert udp.recv(100) == b'{"b": 2}'


def test_catalog_servers_must_name_a_host(tmp_path):
    with vine.Manager(port=0, run_info_path=str(tmp_path / "ri")) as m:
        with pytest.raises(ValueError):
            m.set_catalog_servers(" , ")
        with pytest.raises(ValueError, match="by_ip"):
            m.set_manager_preferred_connection("by_carrier_pigeon")


def test_manager_record_fields(tmp_path):
    with vine.Manager(port=0, name="proj", run_info_path=str(tmp_path / "ri")) as m:
        m.set_property("framework", "dask")
        m.set_property("project", "not this one")  # never hides the record's own fields
        m.set_manager_preferred_connection("by_hostname")
        m.submit(vine.Task("true", cores=2, memory=100, disk=10, gpus=1))
        m.submit(vine.Task("true"))  # unspecified resources count nothing
        (record,) = m.status("manager")
        assert record["project"] == "proj" and record["framework"] == "dask"
        assert record["manager_preferred_connection"] == "by_hostname"
        assert (record["tasks_total_cores"], record["tasks_total_memory"],
                record["tasks_total_disk"], record["tasks_total_gpus"]) == (2, 100, 10, 1)
        assert record["ssl"] is False and isinstance(record["network_interfaces"], list)


def test_network_interfaces_leave_out_loopback_and_link_local(monkeypatch):
    def addr(family, address):
        return SimpleNamespace(family=family, address=address)
    monkeypatch.setattr(status.psutil, "net_if_addrs", lambda: {
        "lo": [addr(socket.AF_INET, "127.0.0.1"), addr(socket.AF_INET6, "::1")],
        "eth0": [addr(socket.AF_INET, "10.1.2.3"), addr(socket.AF_INET6, "fe80::1%eth0"),
                 addr(socket.AF_INET6, "2001:db8::5"), addr(17, "aa:bb:cc:dd:ee:ff")]})
    assert status.network_interfaces() == [
        {"interface": "eth0", "address": "10.1.2.3", "family": "AF_INET"}]
    assert status.network_interfaces((socket.AF_INET, socket.AF_INET6))[1] == {
        "interface": "eth0", "address": "2001:db8::5", "family": "AF_INET6"}


def test_an_unreferenced_manager_is_collected(tmp_path):
    m = vine.Manager(port=0, name="gone", run_info_path=str(tmp_path / "ri"))
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------------- worker: -M
RECORDS = [
    {"project": "a", "port": 1, "address": "10.0.0.1", "name": "ha", "tasks_waiting": 0,
     "network_interfaces": [{"address": "192.168.0.1"}]},
    {"project": "b", "port": 2, "address": "10.0.0.2", "name": "hb", "tasks_waiting": 5,
     "network_interfaces": []},
    {"project": "c", "port": "x", "address": "10.0.0.3"},
]


def test_managers_that_need_workers_come_first():
    for seed in range(5):
        assert order(RECORDS, None, random.Random(seed)) == [
            ("10.0.0.2", 2), ("192.168.0.1", 1), ("10.0.0.1", 1)]
    assert order(RECORDS, "by_hostname", random.Random(0)) == [("hb", 2), ("ha", 1)]
    assert order(RECORDS, "by_apparent_ip", random.Random(0))[0] == ("10.0.0.2", 2)


def test_lookup_by_name_caches_a_minute_but_not_an_empty_answer():
    answers, clock, log = [[], RECORDS[:1], CatalogError("down")], Clock(), []

    def find(pattern, hosts, timeout):
        answer = answers.pop(0) if answers else RECORDS[1:2]
        if isinstance(answer, Exception):
            raise answer
        return answer

    where = ByName("a|b", "127.0.0.1:1", None, log.append, clock, random.Random(0), find)
    assert where.addresses() == []  # nothing yet: asked again next time
    assert where.addresses() == [("192.168.0.1", 1), ("10.0.0.1", 1)]
    clock.now = 59
    assert where.addresses() == [("192.168.0.1", 1), ("10.0.0.1", 1)]  # cached
    clock.now = 61
    assert where.addresses() == [("192.168.0.1", 1), ("10.0.0.1", 1)]  # catalog down
    assert where.addresses() == [("10.0.0.2", 2)]
    assert any("catalog lookup of 'a|b' failed: down" in line for line in log)


def test_lookup_connects_with_tls_to_managers_using_tls():
    log = []
    where = ByName("p", None, None, log.append, find=lambda *a: [
        {"project": "p", "port": 1, "address": "h", "ssl": True}])
    assert where.addresses() == [("h", 1)] and where.uses_tls(("h", 1))


@pytest.mark.parametrize("argv,managers", [
    (["-M", "proj.*", "-C", "h:1"], []),
    (["h", "9123"], [("h", 9123)]),
])
def test_worker_command_line(argv, managers):
    args = worker_main.parse_args(argv)
    assert args.managers == managers


@pytest.mark.parametrize("argv", [["-M", "p", "h", "9123"], ["-M", "("], ["-M", "p", "-C", ","]])
def test_worker_command_line_errors(argv, capsys):
    with pytest.raises(SystemExit):
        worker_main.parse_args(argv)


# ---------------------------------------------------------------------- vine_status
def test_table_aligns_numbers_right_and_text_left():
    rows = [{"project": "long-project", "name": "h", "port": 9123, "tasks_waiting": 10,
             "tasks_running": 0, "tasks_complete": 3, "workers": 2.0},
            {"project": "", "name": "host2", "port": 1, "tasks_waiting": 0}]
    assert vine_status.table(vine_status.MANAGERS, rows).splitlines() == [
        "PROJECT      HOST  PORT WAITING RUNNING COMPLETE WORKERS",
        "long-project h     9123      10       0        3       2",
        "-            host2    1       0       -        -       -",
    ]


@pytest.mark.parametrize("words,address", [
    (["h", "9123"], ("h", 9123)), (["h:9123"], ("h", 9123)), (["[::1]:9123"], ("::1", 9123)),
    ([], None)])
def test_vine_status_addresses(words, address):
    assert vine_status.parse_args(words).manager == address


@pytest.mark.parametrize("argv", [["h"], ["h", "0"], ["h:x"], ["-T"], ["-M", "("]])
def test_vine_status_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        vine_status.parse_args(argv)
    assert e.value.code == 2
