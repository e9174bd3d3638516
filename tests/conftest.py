"""Shared fixtures: real managers on port 0 and real ``vine_worker`` processes on 127.0.0.1.

Workers run as ``python -m ndcctools.taskvine.tools.vine_worker`` (the same code as the
installed console script) with their debug log in the test's directory; when a test fails,
the logs of its workers and manager are printed to help find out why.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine import catalog as catalog_client


class Workers:
    """Starts workers for one test and makes sure none outlives it."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, manager, cores=2, memory=2000, disk=4000, extra=(), single_shot=True,
              preexec_fn=None):
        n = len(self.procs)
        workspace = self.tmp_path / f"worker{n}"
        log = self.tmp_path / f"worker{n}.log"
        cmd = [sys.executable, "-m", "ndcctools.taskvine.tools.vine_worker",
               "127.0.0.1", str(manager.port), "--cores", str(cores), "--memory", str(memory),
               "--disk", str(disk), "--workspace", str(workspace), "-d", "all",
               "-o", str(log), "--timeout", "60", *extra]
        if single_shot:
            cmd.append("--single-shot")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(self.tmp_path / f"worker{n}.stderr", "wb"),
                                start_new_session=True, preexec_fn=preexec_fn)
        proc.workspace = workspace
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(10)


@pytest.fixture
def workers(tmp_path):
    w = Workers(tmp_path)
    yield w
    w.stop_all()


@pytest.fixture
def manager(tmp_path):
    with vine.Manager(port=0, run_info_path=str(tmp_path / "vine-run-info")) as m:
        yield m


def wait_until(predicate, timeout=30.0, step=0.02):
    """Poll ``predicate`` until it is true; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


def transfer_request(port: int, request: bytes, pause: float = 0.0) -> bytes:
    """Send ``request`` (in two halves ``pause`` seconds apart) and read the whole reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        half = len(request) // 2 if pause else len(request)
        s.sendall(request[:half])
        if pause:
            time.sleep(pause)
            s.sendall(request[half:])
        if not request.endswith(b"\n"):
            s.shutdown(socket.SHUT_WR)  # no more is coming: do not wait for its timeout
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return reply


def tree_tarball(tmp_path, name, files, suffix=".tar"):
    """A tarball ``<name><suffix>`` of directory ``name`` holding ``files`` (relative path ->
    text), stored under that name; the compression follows the suffix."""
    src = tmp_path / name
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    path = tmp_path / f"{name}{suffix}"
    with tarfile.open(path, "w:gz" if suffix.endswith("gz") else "w") as tar:
        tar.add(src, arcname=name)
    return path


def wait_tasks(m, n, timeout=60.0):
    """Collect ``n`` tasks from ``m.wait``, failing at the deadline."""
    deadline = time.monotonic() + timeout
    done = []
    while len(done) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"only {len(done)} of {n} tasks came back within {timeout}s")
        t = m.wait(min(5, max(1, int(left))))
        if t is not None:
            done.append(t)
    return done


def wait_connected(m, n, timeout=30.0):
    """Serve the manager until ``n`` workers are connected and ready."""
    deadline = time.monotonic() + timeout
    while m.stats.workers_able < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{n} workers did not connect within {timeout}s")
        m.wait(0)
        time.sleep(0.01)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        tmp = item.funcargs.get("tmp_path")
        if tmp is None:
            return
        for path in sorted(tmp.rglob("*")):
            if path.is_file() and (path.suffix in (".log", ".stderr") or path.name == "debug"):
                text = path.read_text(errors="replace")[-6000:]
                report.sections.append((f"log {path.relative_to(tmp)}", text))


class Catalog:
    """A catalog server on a free loopback port, with its log in the test's directory."""

    def __init__(self, directory: Path):
        portfile = directory / "port"
        self.proc = subprocess.Popen(
            [shutil.which("catalog_server"), "-Z", str(portfile), "-I", "127.0.0.1",
             "-u", "127.0.0.1:1", "-o", str(directory / "catalog.log")],
            cwd=directory, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(directory / "catalog.stderr", "wb"), start_new_session=True)
        wait_until(lambda: self.proc.poll() is not None
                   or portfile.exists() and portfile.read_text().strip().isdigit(), 10)
        assert self.proc.poll() is None, "catalog_server exited at start"
        self.port = int(portfile.read_text())
        self.spec = f"127.0.0.1:{self.port}"
        wait_until(lambda: self.answers(), 10)

    def answers(self) -> bool:
        try:
            self.records()
        except catalog_client.CatalogError:
            return False
        return True

    def records(self, project: str = ".*") -> list[dict]:
        return catalog_client.find_managers(project, catalog_client.catalog_hosts(self.spec), 5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def catalog(tmp_path):
    if shutil.which("catalog_server") is None:
        if os.environ.get("VINE_TEST_SYSTEMS") == "required":
            pytest.fail("catalog_server not installed (VINE_TEST_SYSTEMS=required)")
        pytest.skip("catalog_server not installed: apt-get install coop-computing-tools")
    directory = tmp_path / "catalog"
    directory.mkdir()
    c = Catalog(directory)
    yield c
    c.kill()
