"""The worker job a factory (or ``vine_submit_workers``) submits: the worker's command line
and the job's resources, from the factory's options."""

from __future__ import annotations

import os
import shlex
import shutil
from typing import Any

from ..batch import JobSpec
from .sizing import KINDS

DEFAULT_TIMEOUT = {"local": 8}  # a worker's idle timeout by batch type; others 300


def worker_job(options: dict[str, Any], batch_name: str, worker: str, address: list[str],
               name: str, workdir: str, factory_name: str | None = None,
               idle_exit: bool = True) -> JobSpec:
    """A job running ``worker`` for the manager at ``address`` (its command-line words).

    ``idle_exit`` workers leave after ``timeout`` idle seconds; the others stay while their
    manager is there. Local workers also exit with the process that started them."""
    timeout = options.get("timeout")
    if timeout is None:
        timeout = DEFAULT_TIMEOUT.get(batch_name, 300)
    package = options.get("python_package") or options.get("python_env")
    if package:  # the package's own worker first, where it has one
        worker = os.path.basename(worker)
    argv = shlex.split(options.get("wrapper") or "") + [worker]
    for kind in KINDS:
        if options.get(kind) is not None:
            argv += [f"--{kind}", str(options[kind])]
    argv += ["--timeout", str(timeout)]
    if factory_name:
        argv += ["--from-factory", factory_name]
    if options.get("ssl"):
        argv.append("--ssl")
    if options.get("password"):
        argv += ["--password", os.path.abspath(options["password"])]
    if idle_exit:
        argv += ["--idle-timeout", str(timeout)]
    if batch_name == "local" and factory_name:
        argv.append("--parent-death")
    argv += shlex.split(options.get("extra_options") or "") + address
    env = dict(item.split("=", 1) for item in options.get("env") or [] if "=" in item)
    return JobSpec(name=name, command=argv, workdir=workdir, cores=options.get("cores"),
                   memory=options.get("memory"), disk=options.get("disk"),
                   gpus=options.get("gpus"), env=env,
                   batch_options=options.get("batch_options") or "",
                   python_package=package)


def worker_binary(name: str | None) -> str:
    """The worker program's absolute path (jobs may start elsewhere)."""
    found = shutil.which(name or "vine_worker")
    if found is None:
        raise FileNotFoundError(f"worker program {name or 'vine_worker'!r} is not on PATH")
    return os.path.abspath(found)
