"""Outputs, disk and file options end to end: watched outputs, output transfer errors, strict
inputs, sandbox exhaustion, cache eviction, prune/undeclare, modes, execution contexts,
poncho/starch packages and the taskgraph log."""

import os
import tarfile

import pytest

import ndcctools.taskvine as vine
from tests.conftest import tree_tarball, wait_connected, wait_tasks, wait_until


def in_cache(proc, cachename):
    return os.path.exists(os.path.join(proc.workspace, "cache", cachename))


def test_watched_output_is_streamed_while_the_task_runs(manager, workers, tmp_path):
    m = manager
    go = tmp_path / "go"
    log = tmp_path / "progress.txt"
    log.write_text("stale content from an earlier run\n")
    workers.start(m)
    t = vine.Task(f"echo first >> progress; while [ ! -e {go} ]; do sleep 0.05; done; "
                  "echo second >> progress")
    t.add_output(m.declare_file(str(log)), "progress", watch=True)
    m.submit(t)

    def streamed():
        assert m.wait(0.1) is None  # the task cannot end before ``go`` exists
        return log.read_text() == "first\n"
    wait_until(streamed)
    go.touch()
    (done,) = wait_tasks(m, 1)
    assert done.successful()
    assert log.read_text() == "first\nsecond\n"


def test_watch_is_only_for_local_files(manager):
    t = vine.Task("true")
    with pytest.raises(ValueError, match="watched"):
        t.add_output(manager.declare_buffer(), "out", watch=True)


def test_an_output_that_cannot_be_written_is_an_output_transfer_error(manager, workers,
                                                                       tmp_path):
    m = manager
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the output's directory should be\n")
    workers.start(m)
    t = vine.Task("echo data > a; echo more > b")
    t.add_output(m.declare_file(str(blocker / "a.txt")), "a")
    good = tmp_path / "b.txt"
    t.add_output(m.declare_file(str(good)), "b")
    m.submit(t)
    after = vine.Task("echo the worker is still serving")
    m.submit(after)
    done = {x.id: x for x in wait_tasks(m, 2)}
    assert done[t.id].result == "output transfer error"
    assert good.read_text() == "more\n"  # the other output still came back
    assert done[after.id].successful()
    assert not [p for p in tmp_path.iterdir() if "vine-partial" in p.name]


def test_strict_inputs_run_only_where_the_file_is(manager, workers, tmp_path):
    m = manager
    data = tmp_path / "data.txt"
    data.write_text("pinned data\n")
    workers.start(m, cores=1, extra=("--feature", "A"))
    workers.start(m, cores=1, extra=("--feature", "B"))
    wait_connected(m, 2)
    f = m.declare_file(str(data), cache=True)
    seed = vine.Task("cat data")
    seed.add_input(f, "data")
    seed.add_feature("A")
    m.submit(seed)
    (first,) = wait_tasks(m, 1)
    assert first.successful()
    strict = []
    for _ in range(4):
        t = vine.Task("cat data")
        t.add_input(f, "data", strict_input=True)
        m.submit(t)
        strict.append(t)
    nowhere = vine.Task("cat other")
    nowhere.add_input(m.declare_buffer("never sent anywhere\n"), "other", strict_input=True)
    m.submit(nowhere)
    done = {t.id: t for t in wait_tasks(m, 5)}
    for t in strict:
        assert done[t.id].successful() and done[t.id].hostname == first.hostname
        assert done[t.id].addrport == first.addrport
    assert done[nowhere.id].result == "fixed location missing"
    assert m.get_file_replica_count(f) == 1  # never copied to the other worker


@pytest.mark.slow
def test_a_task_that_outgrows_its_sandbox_is_killed_and_retried_bigger(manager, workers):
    m = manager
    workers.start(m, disk=100)
    grows = vine.Task('head -c 3000000 /dev/zero > big; [ "$DISK" -ge 6 ] || sleep 60')
    grows.set_disk(1)
    grows.set_cores(1)
    grows.set_retries(2)
    # twice its 60 MB would not fit on any worker: it ends instead of waiting forever
    capped = vine.Task("head -c 60000000 /dev/zero > big; sleep 60")
    capped.set_disk(1)
    capped.set_cores(1)
    m.submit(grows)
    m.submit(capped)
    done = {t.id: t for t in wait_tasks(m, 2, timeout=60)}
    assert done[capped.id].result == "sandbox exhaustion"
    assert done[grows.id].successful()
    assert done[grows.id].resources_allocated.disk >= 6


def test_the_worker_evicts_unused_cached_files_to_make_room(manager, workers, tmp_path):
    m = manager
    proc = workers.start(m, cores=1, disk=40)
    files = []
    for i in range(3):
        path = tmp_path / f"data{i}"
        path.write_bytes(bytes([65 + i]) * 15_000_000)
        files.append(m.declare_file(str(path), cache=True))
    for f in files:
        t = vine.Task("wc -c < data")
        t.set_cores(1)
        t.set_disk(1)
        t.add_input(f, "data")
        m.submit(t)
        (done,) = wait_tasks(m, 1)
        assert done.successful() and done.std_output.strip() == "15000000"
    # 45 MB do not fit in 40: the least recently used file made room for the last one
    wait_until(lambda: m.wait(0) is None and m.get_file_replica_count(files[0]) == 0)
    assert not in_cache(proc, files[0].cachename)
    assert in_cache(proc, files[2].cachename)
    again = vine.Task("wc -c < data")
    again.add_input(files[0], "data")
    m.submit(again)
    (done,) = wait_tasks(m, 1)
    assert done.successful() and done.std_output.strip() == "15000000"


def test_prune_and_undeclare_remove_replicas_from_workers(manager, workers, tmp_path):
    m = manager
    proc = workers.start(m)
    paths = [tmp_path / "pruned", tmp_path / "undeclared"]
    for p in paths:
        p.write_text(f"{p.name}\n")
    pruned, undeclared = (m.declare_file(str(p), cache=True) for p in paths)
    t = vine.Task("cat a b")
    t.add_input(pruned, "a")
    t.add_input(undeclared, "b")
    m.submit(t)
    (done,) = wait_tasks(m, 1)
    assert done.std_output == "pruned\nundeclared\n"
    assert m.get_file_replica_count(pruned) == 1 and in_cache(proc, pruned.cachename)
    m.prune_file(pruned)
    m.undeclare_file(undeclared)
    assert m.get_file_replica_count(pruned) == 0
    wait_until(lambda: m.wait(0) is None and not in_cache(proc, pruned.cachename)
               and not in_cache(proc, undeclared.cachename))
    again = vine.Task("cat a")  # a pruned file is still declared: it is simply sent again
    again.add_input(pruned, "a")
    m.submit(again)
    (done,) = wait_tasks(m, 1)
    assert done.std_output == "pruned\n"


def test_modes_and_symlink_mounts(manager, workers, tmp_path):
    m = manager
    script = m.declare_buffer("#!/bin/sh\necho script ran\n")
    script.set_mode(0o755)
    local = tmp_path / "tool.sh"
    local.write_text("#!/bin/sh\necho local tool ran\n")
    os.chmod(local, 0o644)
    tool = m.declare_file(str(local))
    tool.set_mode(0o755)
    workers.start(m)
    t = vine.Task("./script.sh && ./tool.sh && test -L linked && cat linked")
    t.add_input(script, "script.sh")
    t.add_input(tool, "tool.sh")
    t.add_input(m.declare_buffer("through a symlink\n"), "linked", mount_symlink=True)
    m.submit(t)
    (done,) = wait_tasks(m, 1)
    assert done.successful(), done.std_output
    assert done.std_output == "script ran\nlocal tool ran\nthrough a symlink\n"
    with pytest.raises(ValueError):
        script.set_mode(0o100000)


def _env_package(tmp_path, name, banner):
    """A directory with a ``bin/run_in_env`` that prints ``banner`` then runs the command."""
    root = tmp_path / name
    (root / "bin").mkdir(parents=True)
    run = root / "bin" / "run_in_env"
    run.write_text(f'#!/bin/sh\n[ "$1" = true ] && touch "$(dirname "$0")/../prepared"\n'
                   f'echo {banner}\nexec "$@"\n')
    os.chmod(run, 0o755)
    return root


def test_poncho_and_starch_packages_as_execution_contexts(manager, workers, tmp_path):
    m = manager
    env = _env_package(tmp_path, "env", "in-poncho")
    tarball = tmp_path / "env.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for entry in env.iterdir():
            tar.add(entry, arcname=entry.name)
    sfx = tmp_path / "pkg.sfx"
    sfx.write_text('#!/bin/sh\n[ "$SFX_EXTRACT_ONLY" = 1 ] || exit 3\n'
                   'mkdir -p "$SFX_DIR/bin"\n'
                   'printf \'#!/bin/sh\\necho in-starch\\nexec "$@"\\n\' '
                   '> "$SFX_DIR/bin/run_in_env"\n'
                   'chmod 755 "$SFX_DIR/bin/run_in_env"\n')
    workers.start(m)
    poncho = m.declare_poncho(str(tarball), cache=True)
    starch = m.declare_starch(str(sfx), cache=True)
    t = vine.Task("echo the command; ls __vine_env_*/prepared")
    t.add_environment(poncho)
    t.add_starch_package(starch)
    m.submit(t)
    (done,) = wait_tasks(m, 1)
    assert done.successful(), done.std_output
    lines = done.std_output.splitlines()
    assert lines[:3] == ["in-poncho", "in-starch", "the command"]
    assert lines[3].endswith("/prepared")  # the poncho package was prepared once
    assert t.command == "echo the command; ls __vine_env_*/prepared"


def test_recipe_inputs_of_a_mini_task_are_dropped_once_it_is_built(manager, workers, tmp_path):
    m = manager
    tarball = tree_tarball(tmp_path, "tree", {"f.txt": "inside\n"})
    proc = workers.start(m)
    packed = m.declare_file(str(tarball))  # task level: not worth keeping after the build
    untarred = m.declare_untar(packed, cache=True)
    t = vine.Task("cat d/tree/f.txt")
    t.add_input(untarred, "d")
    m.submit(t)
    (done,) = wait_tasks(m, 1)
    assert done.std_output == "inside\n"
    wait_until(lambda: m.wait(0) is None and not in_cache(proc, packed.cachename))
    assert in_cache(proc, untarred.cachename)


def test_taskgraph_log(manager, workers, tmp_path):
    m = manager
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    f = m.declare_file(str(src))
    out = m.declare_buffer()
    workers.start(m)
    t = vine.Task("cat in > out")
    t.add_input(f, "in")
    t.add_output(out, "out")
    m.submit(t)
    wait_tasks(m, 1)
    path = os.path.join(m.logging_directory, "taskgraph")
    m.close()
    with open(path) as log:
        lines = log.read().splitlines()
    assert lines[0] == "# taskvine taskgraph version 2"
    assert f'FILE {f.cachename} "{src}" 2' in lines
    assert f"TASK T{t.id} \"cat\" INPUTS {f.cachename} OUTPUTS {out.cachename} " in lines
    assert lines[-1] == "# end"
