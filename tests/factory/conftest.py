"""Factory tests run the installed ``vine_factory``/``vine_worker`` of this interpreter's
environment, whether or not it is activated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

BIN = os.path.dirname(sys.executable)


@pytest.fixture(autouse=True)
def programs_on_path(monkeypatch):
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))


def factory_state(factory) -> dict:
    """What the running factory last wrote about itself."""
    with open(os.path.join(factory._dir, "state.json")) as f:
        return json.load(f)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def doomed_program(tmp_path, batch_type: str) -> tuple[subprocess.Popen, dict]:
    """A program with a manager and a factory of ``batch_type`` keeping 2 workers; once they
    are connected it reports the factory's pid and job ids (returned here) and serves until
    killed. The caller kills it."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {os.getcwd()!r})
        import ndcctools.taskvine as vine
        m = vine.Manager(port=0, run_info_path={str(tmp_path / "runs")!r})
        f = vine.Factory({batch_type!r}, manager=m,
                         log_file={str(tmp_path / "factory.log")!r})
        f.min_workers = f.max_workers = 2
        f.cores, f.memory, f.disk = 1, 300, 300
        f.start()
        while m.stats.workers_connected < 2:
            m.wait(0.1)
        state = json.load(open(os.path.join(f._dir, "state.json")))
        print(json.dumps({{"factory": f._proc.pid,
                          "jobs": [j["id"] for j in state["jobs"]]}}), flush=True)
        while True:
            m.wait(1)
    """))
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"])
    prog = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env,
                            cwd=tmp_path)
    try:
        return prog, json.loads(prog.stdout.readline())
    except ValueError:
        prog.kill()
        raise
