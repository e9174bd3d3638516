"""End-to-end: a real manager and real vine_worker processes on 127.0.0.1 run command tasks."""

import os
import time

import pytest

import ndcctools.taskvine as vine
from tests.conftest import wait_connected, wait_tasks


def test_many_tasks_with_file_directory_and_buffer_inputs_and_outputs(manager, workers, tmp_path):
    m = manager
    workers.start(m, cores=2)
    workers.start(m, cores=2)
    shared = tmp_path / "shared.txt"
    shared.write_text("shared line\n")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.txt").write_text("beta\n")
    f_shared = m.declare_file(str(shared), cache=True)
    f_tree = m.declare_file(str(tree))
    expected = {}
    for i in range(40):
        buf = m.declare_buffer(f"buffer {i}\n")
        out = m.declare_file(str(tmp_path / f"out{i}.txt"))
        outdir = m.declare_file(str(tmp_path / f"outdir{i}"))
        outbuf = m.declare_buffer()
        t = vine.Task("cat shared.txt in.txt tree/a.txt tree/sub/b.txt > out.txt && "
                      f"mkdir -p d/x && echo $(({i} * 3)) > d/x/n && printf buf{i} > ob")
        t.set_cores(1)
        t.add_input(f_shared, "shared.txt")
        t.add_input(buf, "in.txt")
        t.add_input(f_tree, "tree")
        t.add_output(out, "out.txt")
        t.add_output(outdir, "d")
        t.add_output(outbuf, "ob")
        expected[m.submit(t)] = (i, outbuf)
    done = wait_tasks(m, 40)
    assert sorted(t.id for t in done) == sorted(expected)
    hosts = set()
    for t in done:
        i, outbuf = expected[t.id]
        assert t.successful(), (t.result, t.exit_code, t.std_output)
        assert (tmp_path / f"out{i}.txt").read_text() == (
            f"shared line\nbuffer {i}\nalpha\nbeta\n")
        assert (tmp_path / f"outdir{i}" / "x" / "n").read_text() == f"{i * 3}\n"
        assert outbuf.contents() == f"buf{i}".encode()
        hosts.add(t.addrport)
    assert len(hosts) == 2, "both workers should have run tasks"
    assert m.empty()


def test_outcomes(manager, workers, tmp_path):
    m = manager
    workers.start(m, cores=2)
    now_us = int(time.time() * 1e6)
    cases = {
        "ok": (vine.Task("echo hello"), "success", 0),
        "exit3": (vine.Task("exit 3"), "success", 3),
        "notfound": (vine.Task("no-such-command-xyz"), "success", 127),
        "signal": (vine.Task("kill -9 $$"), "success", 9),
        "walltime": (vine.Task("sleep 30"), "max wall time", 9),
        "endtime_running": (vine.Task("sleep 30"), "max end time", 9),
        "endtime_before": (vine.Task("true"), "max end time", -1),
        "input_missing": (vine.Task("cat x"), "input missing", -1),
        "output_missing": (vine.Task("true"), "output missing", 0),
    }
    cases["walltime"][0].set_time_max(1)
    cases["endtime_running"][0].set_time_end(now_us + 2_000_000)
    cases["endtime_before"][0].set_time_end(now_us - 1_000_000)
    cases["input_missing"][0].add_input(m.declare_file(str(tmp_path / "nope")), "x")
    cases["output_missing"][0].add_output(m.declare_file(str(tmp_path / "never")), "never")
    by_id = {}
    for name, (task, _, _) in cases.items():
        task.set_cores(1)
        task.set_tag(name)
        by_id[m.submit(task)] = name
    for t in wait_tasks(m, len(cases)):
        name = by_id[t.id]
        _, result, code = cases[name]
        assert (t.result, t.exit_code) == (result, code), name
        assert t.state == "DONE"
    assert cases["ok"][0].std_output == "hello\n"
    assert cases["notfound"][0].std_output.strip() != ""
    assert not (tmp_path / "never").exists()


def test_cancel_running_and_waiting_tasks(manager, workers):
    m = manager
    workers.start(m, cores=1)
    ids = []
    for _ in range(4):
        t = vine.Task("sleep 30")
        t.set_cores(1)
        ids.append(m.submit(t))
    deadline = time.monotonic() + 20
    while m.stats.tasks_running < 1 and time.monotonic() < deadline:
        m.wait(1)
    assert m.stats.tasks_running == 1
    assert m.cancel_all() == 4
    done = wait_tasks(m, 4, timeout=20)
    assert sorted(t.id for t in done) == ids
    assert {t.result for t in done} == {"cancelled"}
    assert m.cancel_by_task_id(ids[0]) == 0


def test_tags_ids_and_resubmission(manager, workers):
    m = manager
    workers.start(m, cores=2)
    tasks = {}
    for tag in ("a", "b", "c"):
        t = vine.Task(f"echo {tag}")
        t.set_tag(tag)
        t.set_cores(1)
        tasks[tag] = t
        m.submit(t)
    assert m.wait_for_tag("c", 30) is tasks["c"]
    assert m.wait_for_task_id(tasks["a"].id, 30) is tasks["a"]
    assert m.wait(30) is tasks["b"]
    first_id = tasks["a"].id
    m.submit(tasks["a"])
    assert tasks["a"].id > first_id
    again = m.wait(30)
    assert again is tasks["a"] and again.std_output == "a\n"


def test_priority_orders_dispatch(manager, workers):
    m = manager
    order = []
    for prio in (1, 5, 3):
        t = vine.Task(f"echo {prio}")
        t.set_priority(prio)
        m.submit(t)  # no cores set: each takes the whole worker, so they run one by one
    workers.start(m, cores=1)
    for t in wait_tasks(m, 3):
        order.append(int(t.std_output))
    assert order == [5, 3, 1]


def test_environment_seen_by_the_task(manager, workers):
    m = manager
    workers.start(m, cores=2, memory=1000)
    t = vine.Task('echo "$FOO|$CORES|$OMP_NUM_THREADS|$MEMORY|${TMPDIR##*/}|$(pwd)"')
    t.set_env_var("FOO", "bar baz")
    t.set_cores(1)
    t.set_memory(100)
    m.submit(t)
    (t,) = wait_tasks(m, 1)
    foo, cores, omp, memory, tmpdir, cwd = t.std_output.strip().split("|")
    assert (foo, cores, omp, memory, tmpdir) == ("bar baz", "1", "1", "100", ".taskvine.tmp")
    assert os.path.basename(cwd) == f"task.{t.id}"


def test_worker_killed_mid_task_its_tasks_finish_elsewhere(manager, workers, tmp_path):
    m = manager
    doomed = workers.start(m, cores=2)
    wait_connected(m, 1)
    ids = []
    for i in range(2):
        t = vine.Task(f"sleep 2 && echo done{i}")
        t.set_cores(1)
        ids.append(m.submit(t))
    deadline = time.monotonic() + 20
    while m.stats.tasks_running < 2 and time.monotonic() < deadline:
        m.wait(1)
    assert m.stats.tasks_running == 2
    os.killpg(doomed.pid, 9)
    doomed.wait(10)
    workers.start(m, cores=2)
    done = wait_tasks(m, 2, timeout=60)
    assert sorted(t.id for t in done) == ids
    for t in done:
        assert t.successful() and t.std_output.startswith("done")
    assert m.stats.workers_lost >= 1


def test_path_escapes_are_refused(manager, workers, tmp_path):
    m = manager
    proc = workers.start(m, cores=1)
    victim = tmp_path / "victim.txt"
    buf = m.declare_buffer("evil\n")
    t = vine.Task("true")
    t.add_input(buf, "../../victim.txt")
    m.submit(t)
    t2 = vine.Task("echo out > o")
    t2.add_output(m.declare_file(str(tmp_path / "o")), "../o")
    m.submit(t2)
    for t in wait_tasks(m, 2):
        assert not t.successful()
    assert not victim.exists()
    assert not (proc.workspace.parent / "o").exists()
    with pytest.raises(ValueError):
        vine.Task("true").add_input(buf, "/etc/passwd")


def test_large_stdout_is_fetched_whole(manager, workers):
    m = manager
    workers.start(m, cores=1)
    sizes = [0, 1024, 1025, 200_000]
    ids = {}
    for n in sizes:
        ids[m.submit(vine.Task(f"head -c {n} /dev/zero | tr '\\0' x"))] = n
    for t in wait_tasks(m, len(sizes)):
        assert t.std_output == "x" * ids[t.id]


def test_plain_commands_start_without_a_shell_and_behave_as_with_one(manager, workers,
                                                                    tmp_path):
    """A command of plain words starts without ``sh`` (worker/process.py): the program sees
    what it would have seen through ``sh`` (argv, environment with PWD), and what cannot
    start that way (not found, a script without #!) still runs, or fails, as with sh."""
    m = manager
    workers.start(m)
    script = tmp_path / "noshebang"
    script.write_text("echo from a script without an interpreter line\n")
    script.chmod(0o755)
    tool = m.declare_file(str(script))

    def task(cmd, with_script=False):
        t = vine.Task(cmd)
        t.set_env_var("MARK", "x")
        if with_script:
            t.add_input(tool, "noshebang")
        return t
    tasks = {"direct": task("env"), "shell": task("exec env"),
             "args": task(f"{os.path.realpath('/usr/bin/printf')} %s-%s one two"),
             "missing": task("no-such-program-here --flag"),
             "script": task("./noshebang", with_script=True),
             "false": task("false")}
    ids = {m.submit(t): name for name, t in tasks.items()}
    done = {ids[t.id]: t for t in wait_tasks(m, len(tasks))}

    def environment(t):
        lines = sorted(t.std_output.splitlines())
        pwd = [line for line in lines if line.startswith("PWD=")]
        assert pwd and pwd[0].endswith(f"/task.{t.id}"), t.std_output  # its sandbox, as sh
        own = f"/task.{t.id}"  # its sandbox's name (in PWD, TMPDIR...) is its own
        return [line.replace(own, "/task.N") for line in lines if not line.startswith("_=")]
    assert environment(done["direct"]) == environment(done["shell"])
    assert done["args"].std_output == "one-two"
    assert done["missing"].exit_code == 127 and "not found" in done["missing"].std_output
    assert done["script"].std_output == "from a script without an interpreter line\n"
    assert done["false"].exit_code == 1
