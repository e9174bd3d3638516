"""Manager.enable_tasks_cache: results of finished tasks are remembered across manager runs
and given back without running; a changed function, argument or input runs again."""

import json
import sys

import cloudpickle

import ndcctools.taskvine as vine
from ndcctools.taskvine.task_cache import fingerprint
from tests.conftest import wait_tasks

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x):
    return x * x


def cube(x):
    return x * x * x


def fail(x):
    raise RuntimeError(f"no result for {x}")


def adder(n):
    return lambda x: x + n


def _manager(tmp_path, run):
    m = vine.Manager(port=0, run_info_path=str(tmp_path / f"run-info-{run}"))
    m.enable_tasks_cache(str(tmp_path / "cache"), str(tmp_path / "cache.txlog"))
    return m


def _no_digest(path):
    raise AssertionError("no input file here")


def test_fingerprint_covers_the_function_and_its_arguments():
    def fp(*args, **kwargs):
        return fingerprint(vine.PythonTask(*args, **kwargs), _no_digest)

    assert fp(square, 3) == fp(square, 3)
    assert fp(square, 3) != fp(cube, 3)
    assert fp(square, 3) != fp(square, 4)
    assert fp(square, x=3) != fp(square, 3)
    assert fp(square, {"a", "b", "c"}) == fp(square, {"c", "b", "a"})
    assert fp(lambda: 1) != fp(lambda: 2)
    assert fp(square, square) != fp(square, cube)
    assert fp(adder(1), 5) != fp(adder(2), 5)  # closures differ by their captured values
    call = fingerprint(vine.FunctionCall("lib", "square", 3), _no_digest)
    assert call == fingerprint(vine.FunctionCall("lib", "square", 3), _no_digest)
    assert call != fingerprint(vine.FunctionCall("lib", "square", 4), _no_digest)
    assert call != fingerprint(vine.FunctionCall("lib2", "square", 3), _no_digest)


def test_results_come_back_from_a_later_run_without_running(tmp_path, workers):
    with _manager(tmp_path, 1) as m:
        workers.start(m)
        for i in range(5):
            t = vine.PythonTask(square, i)
            t.set_tag("even" if i % 2 == 0 else "odd")
            assert isinstance(m.submit(t), int)
        first = {t.output for t in wait_tasks(m, 5)}
    assert first == {0, 1, 4, 9, 16}
    assert len(list((tmp_path / "cache").glob("*.output"))) == 5
    with open(tmp_path / "cache.txlog", "a") as log:  # a run killed while writing a line
        log.write('{"type": "COMPLETED", "fingerp')

    with _manager(tmp_path, 2) as m:  # no worker: a hit needs none
        ids = []
        for i in range(5):
            t = vine.PythonTask(square, i)
            t.set_tag("even" if i % 2 == 0 else "odd")
            ids.append(m.submit(t))
        assert all(isinstance(i, str) for i in ids) and not m.empty()
        odd = m.wait_for_tag("odd", 0)
        assert odd.tag == "odd" and odd.output in (1, 9)
        assert m.wait_for_task_id(ids[4], 0).output == 16
        rest = [m.wait(0) for _ in range(3)]
        assert m.empty() and m.wait(0) is None
        hits = [odd, *rest]
        assert all(h.hostname == "CACHED" and h.successful() and h.id in ids for h in hits)
        assert sorted(h.output for h in hits) == [0, 1, 4, 9]
        assert m.stats.tasks_dispatched == 0

        misses = [vine.PythonTask(square, 7), vine.PythonTask(cube, 2)]
        assert all(isinstance(m.submit(t), int) for t in misses)
        workers.start(m)
        done = wait_tasks(m, 2)
        assert {t.output for t in done} == {49, 8}
        assert all(t.hostname != "CACHED" for t in done)
        assert m.stats.tasks_dispatched == 2
        debug = f"{m.logging_directory}/debug"
    assert "tasks cache: skipping line" in open(debug).read()


def test_changed_input_content_runs_again_and_outputs_are_restored(tmp_path, workers):
    data, out = tmp_path / "in.txt", tmp_path / "out.txt"
    data.write_text("alpha\n")
    with _manager(tmp_path, 1) as m:
        workers.start(m)

        def submit():
            t = vine.Task("tr a-z A-Z < in.txt > out.txt && echo done")
            t.add_input(m.declare_file(str(data)), "in.txt")
            t.add_output(m.declare_file(str(out)), "out.txt")
            return m.submit(t)

        assert isinstance(submit(), int)
        assert wait_tasks(m, 1)[0].successful() and out.read_text() == "ALPHA\n"
        out.unlink()
        assert isinstance(submit(), str)  # the same command and input: a hit
        hit = m.wait(0)
        assert hit.hostname == "CACHED" and hit.std_output == "done\n" and hit.output == "done\n"
        assert out.read_text() == "ALPHA\n"
        data.write_text("gamma\n")
        assert isinstance(submit(), int)
        assert wait_tasks(m, 1)[0].hostname != "CACHED" and out.read_text() == "GAMMA\n"


def test_failed_tasks_are_not_remembered(tmp_path, workers):
    with _manager(tmp_path, 1) as m:
        workers.start(m)
        for _ in range(2):  # the second would be a hit if the first had been recorded
            assert isinstance(m.submit(vine.PythonTask(fail, 1)), int)
            assert isinstance(m.submit(vine.Task("exit 3")), int)
            done = wait_tasks(m, 2)
            assert not any(t.successful() for t in done)
    log = tmp_path / "cache.txlog"
    assert not log.exists() or not [json.loads(line) for line in log.read_text().splitlines()
                                    if not line.startswith("#")]


def test_a_task_reading_a_temp_is_cached_once_its_producer_is(tmp_path, workers):
    with _manager(tmp_path, 1) as m:
        workers.start(m)
        for round_ in range(2):  # the second round is answered from the cache
            temp = m.declare_temp()
            producer = vine.Task("echo made > o")
            producer.add_output(temp, "o")
            consumer = vine.Task("cat i i")
            consumer.add_input(temp, "i")
            ids = [m.submit(producer), m.submit(consumer)]
            assert all(isinstance(i, str if round_ else int) for i in ids)
            done = {t.id: t for t in wait_tasks(m, 2)}
            assert done[ids[1]].std_output == "made\nmade\n"
