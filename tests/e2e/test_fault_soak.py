"""Fault soak: hundreds of tasks while real workers are SIGKILLed about once a second.

Command tasks are chained three by three through temp files (``m.declare_temp()``), so a
killed worker takes with it outputs that later tasks need and the manager must run their
producers again; ``PythonTask``s run beside them. Every task must come back exactly once,
successful, with the output computed here independently. Seeded: the seed is printed and
``TASKVINE_FUZZ_SEED=<seed>`` replays the same tasks and the same choice of victims.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

import cloudpickle
import pytest

import ndcctools.taskvine as vine
from tests.conftest import wait_connected
from tests.fuzzing import seed_from_env

# Workers cannot import this test module: ship its functions by value, as a user would.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow

CHAINS = 100  # three command tasks each
PYTHON_TASKS = 100
NAP = 0.25  # seconds every task sleeps: the kills must find tasks running
WORKERS = 4
KILL_EVERY = (0.6, 1.4)  # seconds between two kills, drawn at random


def mix(a: int, b: int) -> list:
    """What the PythonTasks compute (and this test again, to check them)."""
    return [a * b + 7, str(a - b), {"sum": a + b}]


def slow_mix(a: int, b: int, nap: float) -> list:
    time.sleep(nap)
    return mix(a, b)


def test_every_task_survives_workers_killed_at_random(manager, workers):
    seed = seed_from_env()
    print(f"soak seed {seed} (replay with TASKVINE_FUZZ_SEED={seed})")
    rng = random.Random(seed)
    m = manager
    live = [workers.start(m, cores=2) for _ in range(WORKERS)]
    wait_connected(m, WORKERS)

    expected: dict[int, tuple[vine.Task, object]] = {}  # task id -> (task, stdout or output)
    for _ in range(CHAINS):
        x = rng.randint(-10**6, 10**6)
        first, second = m.declare_temp(), m.declare_temp()
        a = vine.Task(f"sleep {NAP}; echo {x} | tee out")
        a.add_output(first, "out")
        b = vine.Task(f"sleep {NAP}; read v < in; echo $((v * 3 + 1)) | tee out")
        b.add_input(first, "in")
        b.add_output(second, "out")
        c = vine.Task(f"sleep {NAP}; read v < in; echo $((v * v)); echo chain end")
        c.add_input(second, "in")
        y = 3 * x + 1
        for t, out in ((a, f"{x}\n"), (b, f"{y}\n"), (c, f"{y * y}\nchain end\n")):
            expected[m.submit(t)] = (t, out)
    for _ in range(PYTHON_TASKS):
        u, v = rng.randint(-999, 999), rng.randint(-999, 999)
        t = vine.PythonTask(slow_mix, u, v, NAP)
        expected[m.submit(t)] = (t, mix(u, v))

    returned: set[int] = set()
    kills = 0
    next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
    deadline = time.monotonic() + 120
    while len(returned) < len(expected):
        assert time.monotonic() < deadline, (
            f"seed {seed}: {len(returned)}/{len(expected)} tasks back after {kills} kills; "
            f"missing {sorted(set(expected) - returned)[:20]}; stats {m.stats}")
        if time.monotonic() >= next_kill:
            live = [w for w in live if w.poll() is None]
            if len(live) >= 2:  # keep at least one worker alive
                victim = rng.choice(live)
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait(10)
                live.remove(victim)
                kills += 1
            live.append(workers.start(m, cores=2))
            next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
        t = m.wait(1)
        if t is None:
            continue
        assert t.id in expected, f"seed {seed}: unknown task {t.id} came back"
        assert t.id not in returned, f"seed {seed}: task {t.id} came back twice"
        returned.add(t.id)
        task, want = expected[t.id]
        assert t is task
        assert t.successful(), (seed, t.id, t.command, t.result, t.exit_code, t.std_output)
        if isinstance(t, vine.PythonTask):
            assert t.output == want, (seed, t.id, t.output, want)
        else:
            assert t.std_output == want, (seed, t.id, t.command, t.std_output, want)
    stats = m.stats
    print(f"{len(returned)} tasks, {kills} workers killed; manager: {stats.workers_lost} "
          f"workers lost, {stats.tasks_dispatched} dispatches")
    assert kills >= 5, "the soak killed too few workers to mean anything"
    assert stats.workers_lost >= 1, "the manager never noticed a worker die"
    assert m.empty()
    assert m.wait(0) is None
    stats = m.stats
    assert (stats.tasks_waiting, stats.tasks_running, stats.tasks_with_results) == (0, 0, 0)
