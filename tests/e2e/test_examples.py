"""The README's example: it runs, always ends, and leaves no factory or worker behind."""

import os
import subprocess
import sys

import psutil

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "quickstart.py")


def leftovers(directory: str) -> list[psutil.Process]:
    """Processes working in ``directory`` (the factory's workers run in its scratch
    directory, under the run-info directory)."""
    found = []
    for proc in psutil.process_iter(["cwd"]):
        if (proc.info["cwd"] or "").startswith(directory) and proc.pid != os.getpid():
            found.append(proc)
    return found


def test_the_quickstart_runs_and_leaves_no_worker(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path),  # its workers' workspaces go there
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    done = subprocess.run([sys.executable, EXAMPLE], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "most common words:\n200 the\n" in done.stdout
    assert (tmp_path / "vine-run-info" / "most-recent" / "vine-logs" / "debug").is_file()
    assert leftovers(str(tmp_path)) == []
