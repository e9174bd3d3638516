"""End-to-end: project names and the catalog (a real ``catalog_server``), ``vine_worker -M``,
``vine_status``, and a manager whose catalog dies or never answers.

The catalog server comes from Debian's ``coop-computing-tools``; without it the tests that
need it are skipped, unless ``VINE_TEST_SYSTEMS=required`` (CI), where they fail.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import ndcctools.taskvine as vine
from ndcctools.taskvine.core import catalog_reporter
from tests.conftest import wait_connected, wait_tasks, wait_until

STATUS = [sys.executable, "-m", "ndcctools.taskvine.tools.vine_status"]
WORKER = [sys.executable, "-m", "ndcctools.taskvine.tools.vine_worker"]


def named_manager(tmp_path, name, catalog_spec):
    m = vine.Manager(port=0, name=name, run_info_path=str(tmp_path / "vine-run-info"))
    m.set_catalog_servers(catalog_spec)
    return m


def vine_status(*args, serve=None, timeout=30):
    """Run ``vine_status``; with ``serve``, that manager is served meanwhile (it answers
    status queries only inside ``wait``). Returns (exit status, stdout, stderr)."""
    proc = subprocess.Popen([*STATUS, *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while serve is not None and proc.poll() is None and time.monotonic() < deadline:
        serve.wait(0.05)
    out, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
    return proc.returncode, out, err


def rows(text):
    return [line.split() for line in text.splitlines()]


def start_worker(workers, tmp_path, *args):
    """A worker with our own arguments (no HOST PORT), stopped with the test's workers."""
    n = len(workers.procs)
    log = tmp_path / f"worker{n}.log"
    proc = subprocess.Popen(
        [*WORKER, "--cores", "1", "--memory", "500", "--disk", "1000", "--workspace",
         str(tmp_path / f"worker{n}"), "-d", "all", "-o", str(log), "--single-shot", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / f"worker{n}.stderr", "wb"), start_new_session=True)
    proc.log = log
    workers.procs.append(proc)
    return proc


def text_of(path):
    return path.read_text(errors="replace") if path.exists() else ""


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_record(catalog, record):
    """Advertise ``record`` the way a manager does (TCP to the catalog's port + 1)."""
    catalog_reporter.send_update("127.0.0.1", catalog.port, json.dumps(record).encode(), False)


# ---------------------------------------------------------------------- the catalog
def test_named_manager_appears_in_the_catalog_and_vine_status(catalog, tmp_path):
    name = "vinetest-appears"
    with named_manager(tmp_path, name, catalog.spec) as m:
        m.set_property("framework", "pytest")
        m.set_manager_preferred_connection("by_apparent_ip")
        for _ in range(2):
            m.submit(vine.Task("true", cores=1, memory=10))
        wait_until(lambda: m.wait(0) is None and catalog.records(name))

        status, out, err = vine_status("-C", catalog.spec)
        assert status == 0, err
        table = rows(out)
        assert table[0] == ["PROJECT", "HOST", "PORT", "WAITING", "RUNNING", "COMPLETE",
                            "WORKERS"]
        assert [name, str(m.port), "2", "0", "0", "0"] == [table[1][0], *table[1][2:]]

        status, out, err = vine_status("-C", catalog.spec, "--json", "-M", "vinetest-.*")
        assert status == 0, err
        (record,) = json.loads(out)
        assert record["type"] == "vine_manager" and record["project"] == name
        assert record["port"] == m.port and record["protocol"] == 13
        assert record["address"] == "127.0.0.1"  # added by the catalog
        assert record["framework"] == "pytest"
        assert record["manager_preferred_connection"] == "by_apparent_ip"
        assert record["tasks_waiting"] == 2 and record["tasks_total_cores"] == 2
        assert all(not i["address"].startswith("127.") for i in record["network_interfaces"])

        assert rows(vine_status("-C", catalog.spec, "-M", "vinetest")[1]) == [table[0]]

        m.cancel_all()
        m.update_catalog()  # sent now, not in update-interval (60 s)
        wait_until(lambda: catalog.records(name)[0]["tasks_waiting"] == 0)


def test_worker_finds_its_manager_by_name_and_waits_for_it(catalog, workers, tmp_path):
    send_record(catalog, {"type": "vine_manager", "project": "vinetest-decoy",
                          "port": closed_port()})
    worker = start_worker(workers, tmp_path, "-M", "vinetest-by.*", "-C", catalog.spec,
                          "--max-backoff", "1", "--timeout", "60", "--from-factory", "fac-1")
    wait_until(lambda: "no manager named 'vinetest-by.*'" in text_of(worker.log))
    with named_manager(tmp_path, "vinetest-byname", catalog.spec) as m:
        m.submit(vine.Task("echo found"))
        (t,) = wait_tasks(m, 1)
        assert t.result == "success" and t.std_output == "found\n"
        assert m.status("workers")[0]["factory_name"] == "fac-1"
    assert worker.wait(30) == 0


def test_worker_without_a_matching_manager_honours_its_timeout(catalog, workers, tmp_path):
    worker = start_worker(workers, tmp_path, "-M", "nobody", "-C", catalog.spec,
                          "--timeout", "1", "--max-backoff", "1")
    assert worker.wait(30) == 0
    assert "no manager named 'nobody'" in text_of(worker.log)


def test_manager_keeps_working_when_its_catalog_dies(catalog, workers, tmp_path):
    name = "vinetest-dies"
    with named_manager(tmp_path, name, catalog.spec) as m:
        m.tune("update-interval", 1)
        workers.start(m, cores=2)
        wait_until(lambda: m.wait(0) is None and catalog.records(name))
        catalog.kill()
        debug = Path(m.logging_directory) / "debug"
        done, slowest = 0, 0.0
        end = time.monotonic() + 3.5  # three updates fail meanwhile
        while time.monotonic() < end:
            m.submit(vine.Task("true"))
            began = time.monotonic()
            (t,) = wait_tasks(m, 1)
            slowest = max(slowest, time.monotonic() - began)
            assert t.result == "success"
            done += 1
        m._debug.flush()
        assert text_of(debug).count("could not send an update to catalog") == 1
        assert done >= 5 and slowest < 2.0, (done, slowest)


# ---------------------------------------------------------------------- no catalog server needed
def test_a_catalog_that_never_answers_does_not_slow_the_manager(tmp_path, workers,
                                                                monkeypatch):
    monkeypatch.setattr(catalog_reporter, "SEND_TIMEOUT", 2.0)
    with socket.socket() as hole:  # a full accept queue: connections to it just hang
        hole.bind(("127.0.0.1", 0))
        hole.listen(0)
        filler = socket.create_connection(hole.getsockname())
        updates_port = hole.getsockname()[1]  # updates go to the catalog's port + 1
        m = named_manager(tmp_path, "vinetest-blackhole", f"127.0.0.1:{updates_port - 1}")
        with m:
            m.tune("update-interval", 1)
            workers.start(m, cores=2)
            wait_connected(m, 1)
            began = time.monotonic()
            m.update_catalog()
            assert time.monotonic() - began < 0.1
            slowest, done = 0.0, 0
            end = time.monotonic() + 4.5  # two sends time out meanwhile
            while time.monotonic() < end:
                m.submit(vine.Task("true"))
                began = time.monotonic()
                (t,) = wait_tasks(m, 1)
                slowest = max(slowest, time.monotonic() - began)
                done += 1
            assert done >= 5 and slowest < 1.0, (done, slowest)
            began = time.monotonic()
        assert time.monotonic() - began < 1.0  # close() does not wait for a dead catalog
        filler.close()
    debug = text_of(Path(m.logging_directory) / "debug")
    assert debug.count("could not send an update to catalog") == 1
    assert "timed out" in debug


def test_vine_status_asks_a_manager_directly(manager, workers):
    m = manager
    workers.start(m, cores=1)
    wait_connected(m, 1)
    m.submit(vine.Task("sleep 60"))
    wait_until(lambda: m.wait(0) is None and m.stats.tasks_running == 1)
    hostname = m.status("workers")[0]["hostname"]

    status, out, err = vine_status("127.0.0.1", m.port, "-W", serve=m)
    assert status == 0, err
    (header, row) = rows(out)
    assert header[:4] == ["HOST", "ADDRESS", "RUNNING", "COMPLETE"]
    assert row[0] == hostname and row[2] == "1"

    status, out, err = vine_status(f"127.0.0.1:{m.port}", "-T", serve=m)
    assert status == 0, err
    (header, row) = rows(out)
    assert row[:2] == ["1", "RUNNING"] and row[-2:] == ["sleep", "60"]

    status, out, err = vine_status("127.0.0.1", m.port, "-T", "--json", serve=m)
    assert status == 0, err
    assert [(t["task_id"], t["state"], t["host"]) for t in json.loads(out)] == [
        (1, "RUNNING", hostname)]

    status, out, err = vine_status("127.0.0.1", m.port, serve=m)
    assert status == 0, err
    assert rows(out)[1][2:] == [str(m.port), "0", "1", "0", "1"]
    m.cancel_all()


def test_vine_status_and_worker_errors_are_messages_not_tracebacks(workers, tmp_path):
    port = closed_port()
    no_manager, no_catalog = ("127.0.0.1", str(port)), ("-C", f"127.0.0.1:{port}")
    runs = {args: subprocess.Popen([*STATUS, *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            for args in (no_manager, no_catalog, ("-W",), ("127.0.0.1", "notaport"))}
    worker = start_worker(workers, tmp_path, "-M", "anything", "-C", f"127.0.0.1:{port}",
                          "--timeout", "1", "--max-backoff", "1")
    results = {}
    for args, proc in runs.items():
        err = proc.communicate(timeout=30)[1]
        assert "Traceback" not in err, (args, err)
        results[args] = proc.returncode, err
    assert results[no_manager][0] == 1
    assert results[no_manager][1].startswith(f"vine_status: cannot ask 127.0.0.1:{port} ")
    assert results[no_catalog][0] == 1 and "no catalog answered" in results[no_catalog][1]
    assert results["-W",][0] == 2 and "give its HOST PORT" in results["-W",][1]
    assert results["127.0.0.1", "notaport"][0] == 2
    assert worker.wait(30) == 0
    assert "catalog lookup of 'anything' failed" in text_of(worker.log)
