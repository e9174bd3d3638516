"""Factory tests run the installed ``vine_factory``/``vine_worker`` of this interpreter's
environment, whether or not it is activated."""

from __future__ import annotations

import json
import os
import sys

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
