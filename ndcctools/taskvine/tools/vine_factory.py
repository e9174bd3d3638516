"""``vine_factory [options] [HOST PORT]``: keep a pool of workers for one manager (HOST PORT,
or ``--manager-host``/``--manager-port``) or for the managers named by ``-M`` (through the
catalog), on the batch system ``-T``. See ``ndcctools.taskvine.factory``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

from ndcctools.taskvine.batch import BatchError, batch_system
from ndcctools.taskvine.factory.daemon import FactoryDaemon, stamp
from ndcctools.taskvine.factory.options import (
    FLAG,
    LIST,
    OPTIONS,
    convert,
    flag_name,
    read_config,
)
from ndcctools.taskvine.factory.target import DirectTarget, NamedTarget
from ndcctools.taskvine.security import read_password_file

SHORT = {"batch_type": ["-T"], "manager_name": ["-M", "--master-name"], "catalog": ["-C"],
         "timeout": ["-t"], "extra_options": ["-E"], "batch_options": ["-B"],
         "scratch_dir": ["-S"], "config_file": ["-c"], "debug": ["-d"], "debug_file": ["-o"],
         "min_workers": ["-w"], "max_workers": ["-W"], "password": ["-P"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="vine_factory",
                                 description="Keep a pool of TaskVine workers on a batch system")
    ap.add_argument("address", nargs="*", help="HOST PORT (or HOST:PORT) of the manager")
    ap.add_argument("--manager-host", "--master-host")
    ap.add_argument("--manager-port", "--master-port", type=int)
    ap.add_argument("--parent-death", action="store_true", help="exit when the parent exits")
    ap.add_argument("--interval", type=float, default=1.0,
                    help="seconds between looks at the managers (default 1)")
    for name, option in OPTIONS.items():
        flags = [flag_name(name), *SHORT.get(name, [])]
        if option.kind == FLAG:
            ap.add_argument(*flags, dest=name, action="store_true", help=option.help)
        elif option.kind == LIST:
            ap.add_argument(*flags, dest=name, action="append", help=option.help)
        else:
            ap.add_argument(*flags, dest=name, help=option.help)
    args = ap.parse_args(argv)
    try:
        for name in OPTIONS:
            setattr(args, name, convert(name, getattr(args, name)))
    except ValueError as e:
        ap.error(str(e))
    return args


def target_of(args: argparse.Namespace,
              options: dict[str, Any] | None = None) -> DirectTarget | NamedTarget:
    """The managers to serve; with ``options`` (``ssl``, ``password``) also how to ask them."""
    options = options or {}
    password = read_password_file(options["password"]) if options.get("password") else None
    words = args.address
    if len(words) == 1 and ":" in words[0]:
        words = words[0].rsplit(":", 1)
    if words and (len(words) != 2 or not words[1].isdigit()):
        raise ValueError(f"give the manager as HOST PORT, not {' '.join(args.address)!r}")
    host = args.manager_host or (words[0] if words else None)
    port = args.manager_port or (int(words[1]) if words else None)
    if host and port:
        return DirectTarget(host, port, bool(options.get("ssl")), password)
    if args.manager_name:
        return NamedTarget(args.manager_name, args.catalog, password=password)
    raise ValueError("say which manager to serve: HOST PORT, --manager-host/--manager-port, "
                     "or -M NAME")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options: dict[str, Any] = {name: getattr(args, name) for name in OPTIONS}
    for name, value in list(options.items()):
        if value is None and OPTIONS[name].default is not None:
            options[name] = OPTIONS[name].default
    try:
        if args.config_file:
            options.update(read_config(args.config_file))
        target = target_of(args, options)
        batch = batch_system(args.batch_type)
        batch.check()
        workdir = args.scratch_dir or tempfile.mkdtemp(
            prefix="factory-", dir=_make(f"vine-factory-{os.getuid()}"))
        os.makedirs(workdir, exist_ok=True)
        log_file = open(args.debug_file, "a") if args.debug_file else sys.stdout  # noqa: SIM115
        daemon = FactoryDaemon(options, target, batch, os.path.abspath(workdir),
                               interval=args.interval,
                               log=lambda text: (log_file.write(stamp(text)), log_file.flush()))
    except (ValueError, OSError, BatchError) as e:
        sys.stderr.write(f"vine_factory: {e}\n")
        return 1
    return daemon.run(parent_death=args.parent_death)


def _make(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


if __name__ == "__main__":
    sys.exit(main())
