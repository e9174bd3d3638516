"""Drop-in check with a real user of ``Factory``: Parsl's ``TaskVineExecutor`` in its default
mode (``worker_launch_method='factory'``) on a manager with ``port=0``, which makes Parsl give
the manager a project name and the factory find it through the catalog (a real
``catalog_server``). Python and Bash apps must come back with their results."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.factory.conftest import BIN

PROGRAM = textwrap.dedent("""
    import sys

    import parsl
    from parsl.config import Config
    from parsl.executors.taskvine import (TaskVineExecutor, TaskVineFactoryConfig,
                                          TaskVineManagerConfig)

    @parsl.python_app
    def square(x):
        return x * x

    @parsl.bash_app
    def greet(name, stdout="greeting.txt"):
        return f"echo hello {name}"

    if __name__ == "__main__":
        password = sys.argv[1] if sys.argv[1:2] != ["-"] and len(sys.argv) > 1 else None
        autolabel = "autolabel" in sys.argv  # enable_monitoring, a mode per category
        config = Config(run_dir="runinfo", executors=[TaskVineExecutor(
            label="vine", worker_launch_method="factory",
            manager_config=TaskVineManagerConfig(port=0, project_password_file=password,
                                                 autolabel=autolabel, autocategory=autolabel,
                                                 autolabel_window=3),
            factory_config=TaskVineFactoryConfig(min_workers=1, max_workers=2, cores=1,
                                                 memory=500, disk=1000))])
        with parsl.load(config):
            print("squares", [f.result() for f in [square(i) for i in range(10)]])
            greet("vine").result()
            print(open("greeting.txt").read().strip())
""")


@pytest.mark.parametrize("password,autolabel", [(False, False), (True, False), (False, True)],
                         ids=["open", "project_password_file", "autolabel"])
def test_parsl_taskvine_executor_with_its_default_factory(catalog, tmp_path, password,
                                                         autolabel):
    (tmp_path / "program.py").write_text(PROGRAM)
    env = dict(os.environ, CATALOG_HOST="127.0.0.1", CATALOG_PORT=str(catalog.port),
               PATH=BIN + os.pathsep + os.environ["PATH"])
    argv = [sys.executable, "program.py"]
    if password:  # the manager, the factory's queries and the workers all need it
        (tmp_path / "pw").write_bytes(b"parsl project password\n")
        argv.append(str(tmp_path / "pw"))
    if autolabel:
        argv += ["-", "autolabel"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert "squares [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in done.stdout
    assert "hello vine" in done.stdout
    if autolabel:  # the apps' categories ran measured, in max throughput mode
        text = "".join(path.read_text() for path in (tmp_path / "runinfo").rglob("transactions"))
        assert "CATEGORY square FIRST MAX_THROUGHPUT" in text, text[-3000:]
    (record,) = catalog.records("parsl-vine-.*")
    assert record.get("framework") == "parsl"  # found through the catalog, as Parsl set it
