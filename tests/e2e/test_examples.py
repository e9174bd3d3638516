"""The README's example: it runs, always ends, and leaves no worker behind."""

import importlib.util
import os
import socket
import subprocess
import sys

import psutil

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "quickstart.py")


def load_example():
    spec = importlib.util.spec_from_file_location("quickstart", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leftovers(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(marker in arg for arg in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def test_the_quickstart_runs_and_leaves_no_worker(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))  # its workers' workspaces go there
    done = subprocess.run([sys.executable, EXAMPLE], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "most common words:\n200 the\n" in done.stdout
    assert (tmp_path / "vine-run-info" / "most-recent" / "vine-logs" / "debug").is_file()
    assert leftovers(str(tmp_path / "vine-quickstart-")) == []


def test_a_worker_that_never_connects_is_stopped(tmp_path):
    """The quickstart's second worker sometimes started after all the tasks were done, never
    connected, and then retried for 900 s."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    example = load_example()
    worker = example.start_worker(port, str(tmp_path / "ws"))
    example.stop_workers([worker])
    assert worker.poll() is not None
