"""The factory's options: one table shared by ``vine_factory``'s command line, its JSON
configuration file and the Python ``Factory``'s attributes (``max_workers`` there is
``--max-workers`` here and ``"max-workers"`` in the file).

*Dynamic* options may change while the factory runs: the Python ``Factory`` rewrites the
configuration file and the factory re-reads it each cycle. Options that only matter to batch
types this factory lacks (Amazon, Kubernetes, Mesos, foremen) are accepted and have no effect;
``python_env`` is read as ``python_package`` (a packed environment the workers run in).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

FLAG, INT, TEXT, LIST = "flag", "int", "text", "list"


@dataclass(frozen=True)
class Option:
    kind: str
    default: Any = None
    dynamic: bool = False
    help: str = ""


OPTIONS: dict[str, Option] = {
    "batch_type": Option(TEXT, "local", help="batch system: local, slurm, sge, uge, condor, "
                                             "pbs, torque, lsf"),
    "manager_name": Option(TEXT, None, True, "serve the managers whose project fully matches "
                                             "this regular expression (catalog lookup)"),
    "catalog": Option(TEXT, None, help="catalog servers HOST:PORT[,HOST:PORT]"),
    "min_workers": Option(INT, 5, True, "keep at least this many workers"),
    "max_workers": Option(INT, 100, True, "never more than this many workers"),
    "workers_per_cycle": Option(INT, 5, True, "submit at most this many per cycle (0: any)"),
    "tasks_per_worker": Option(INT, -1, True, "tasks a worker runs at once (-1: estimate "
                                              "from the tasks' and workers' cores)"),
    "cores": Option(INT, None, True, "cores per worker"),
    "memory": Option(INT, None, True, "memory per worker, MB"),
    "disk": Option(INT, None, True, "disk per worker, MB"),
    "gpus": Option(INT, None, True, "GPUs per worker"),
    "timeout": Option(INT, None, True, "a worker leaves after this many idle seconds "
                                       "(default 8 for local, 300 for batch systems)"),
    "factory_timeout": Option(INT, 0, True, "exit after this many seconds without a manager "
                                            "(0: never)"),
    "extra_options": Option(TEXT, "", help="more options for each worker's command line"),
    "batch_options": Option(TEXT, "", help="more options for the batch submit command"),
    "condor_requirements": Option(TEXT, "", True, "HTCondor requirements expression"),
    "scratch_dir": Option(TEXT, None, help="where job scripts and logs go"),
    "env": Option(LIST, None, help="VAR=VALUE set in each worker's environment (repeatable)"),
    "python_package": Option(TEXT, None, help="a packed Python environment (tar) the workers "
                                              "unpack and run in"),
    "worker_binary": Option(TEXT, None, help="the worker program (default vine_worker)"),
    "wrapper": Option(TEXT, None, help="command the worker is run under"),
    "config_file": Option(TEXT, None, help="JSON file of dynamic options, re-read each cycle"),
    "debug": Option(TEXT, None, help="debug flags (all)"),
    "debug_file": Option(TEXT, None, help="debug log (default: standard error)"),
    "debug_file_size": Option(TEXT, None),
    "password": Option(TEXT, None, help="password file the workers (and the factory) use"),
    "ssl": Option(FLAG, False, help="the manager uses TLS: so do the workers and the factory"),
    "autosize": Option(FLAG, False, True, "size workers to their batch slot"),
    "capacity": Option(FLAG, False, True),
    "run_factory_as_manager": Option(FLAG, False),
    "runos": Option(TEXT, None),
    "python_env": Option(TEXT, None, help="the same as --python-package"),
    "wrapper_input": Option(TEXT, None),
    "foremen_name": Option(TEXT, None, True),
    "amazon_config": Option(TEXT, None),
    "k8s_image": Option(TEXT, None),
    "k8s_worker_image": Option(TEXT, None),
    "mesos_master": Option(TEXT, None),
    "mesos_path": Option(TEXT, None),
    "mesos_preload": Option(TEXT, None),
}
DYNAMIC = frozenset(name for name, o in OPTIONS.items() if o.dynamic)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def file_key(name: str) -> str:
    return name.replace("_", "-")


def convert(name: str, value: Any) -> Any:
    """``value`` as option ``name`` wants it; ``ValueError`` names the option otherwise."""
    kind = OPTIONS[name].kind
    if value is None:
        return None
    try:
        if kind == INT:
            return int(value)
        if kind == FLAG:
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true",
                                                                                   "yes")
        if kind == LIST:
            return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
        return str(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"factory option {name}: {value!r} is not a valid {kind}") from e


def read_config(path: str) -> dict[str, Any]:
    """The dynamic options in a JSON configuration file (unknown keys are an error: a typo
    must not pass silently). ``master-name`` is read as ``manager-name``."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the configuration must be a JSON object")
    out = {}
    for key, value in data.items():
        name = "manager_name" if key in ("master-name", "manager-name") else \
            key.replace("-", "_")
        if name not in DYNAMIC:
            raise ValueError(f"{path}: {key!r} is not an option that can change while the "
                             f"factory runs ({', '.join(sorted(map(file_key, DYNAMIC)))})")
        out[name] = convert(name, value)
    return out


def write_config(path: str, values: dict[str, Any]) -> None:
    """Write the dynamic options among ``values`` atomically."""
    data = {file_key(k): v for k, v in values.items() if k in DYNAMIC and v is not None}
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
