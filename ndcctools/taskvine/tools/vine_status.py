"""``vine_status``: which managers the catalog knows, or what one manager is doing.

    vine_status [-M NAME] [-R] [-C HOST:PORT]   managers in the catalog (api.md §12.1)
    vine_status HOST PORT [-W | -T | -A | -R]   one manager, asked on its own port (§4.7)

Tables have one row per record; ``--json`` prints the records themselves. A catalog or
manager that cannot be reached is an error: a message on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..catalog import CatalogError, catalog_hosts, find_managers, query
from ..security import read_password_file
from ..status_client import StatusError, query_manager

Column = tuple[str, Callable[[dict], Any]]


def _get(key: str) -> Callable[[dict], Any]:
    return lambda r: r.get(key, "-")


def _inuse(kind: str) -> Callable[[dict], Any]:
    return lambda r: f"{_number(r.get(f'{kind}_inuse', 0))}/{_number(r.get(f'{kind}_total', 0))}"


MANAGERS: list[Column] = [
    ("PROJECT", lambda r: r.get("project") or "-"), ("HOST", _get("name")),
    ("PORT", _get("port")), ("WAITING", _get("tasks_waiting")),
    ("RUNNING", _get("tasks_running")), ("COMPLETE", _get("tasks_complete")),
    ("WORKERS", _get("workers")),
]
RESOURCES: list[Column] = [
    ("PROJECT", lambda r: r.get("project") or "-"), ("HOST", _get("name")),
    ("PORT", _get("port")), ("WORKERS", _inuse("workers")), ("CORES", _inuse("cores")),
    ("MEMORY", _inuse("memory")), ("DISK", _inuse("disk")), ("GPUS", _inuse("gpus")),
]
WORKERS: list[Column] = [
    ("HOST", _get("hostname")), ("ADDRESS", _get("addrport")),
    ("RUNNING", _get("total_tasks_running")), ("COMPLETE", _get("total_tasks_complete")),
    ("CORES", _inuse("cores")), ("MEMORY", _inuse("memory")), ("DISK", _inuse("disk")),
    ("GPUS", _inuse("gpus")), ("FACTORY", _get("factory_name")),
]
TASKS: list[Column] = [
    ("ID", _get("task_id")), ("STATE", _get("state")), ("PRIORITY", _get("priority")),
    ("CATEGORY", _get("category")), ("CORES", _get("cores")), ("MEMORY", _get("memory")),
    ("DISK", _get("disk")), ("HOST", _get("host")), ("COMMAND", _get("command")),
]
CATEGORIES: list[Column] = [
    ("CATEGORY", _get("category")), ("WAITING", _get("tasks_waiting")),
    ("RUNNING", _get("tasks_running")), ("ON_WORKERS", _get("tasks_on_workers")),
    ("DONE", _get("tasks_done")), ("ABLE_WORKERS", _get("workers_able")),
]
# option -> (status request, columns) when asking one manager
DIRECT = {"workers": ("worker_status", WORKERS), "tasks": ("task_status", TASKS),
          "able": ("wable_status", CATEGORIES), "resources": ("resources_status", RESOURCES),
          None: ("manager_status", MANAGERS)}


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def table(columns: list[Column], rows: list[dict]) -> str:
    """Rows under a header, columns as wide as their widest cell; numbers to the right."""
    cells = [[_number(get(r)) for _, get in columns] for r in rows]
    numeric = [all(_is_number(v) or v == "-" for v in map(get, rows)) for _, get in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _) in enumerate(columns)]
    lines = []
    for line in [[h for h, _ in columns], *cells]:
        lines.append(" ".join(
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(line, widths, numeric, strict=True)).rstrip())
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="vine_status", description="List TaskVine managers known to the catalog, or "
        "show what one manager (HOST PORT) is doing.")
    ap.add_argument("address", nargs="*", help="HOST PORT or HOST:PORT of one manager")
    ap.add_argument("-M", "--project-name", "--manager-name", dest="project", metavar="NAME",
                    help="only managers whose project name matches this regular expression")
    ap.add_argument("-C", "--catalog", metavar="HOST:PORT[,HOST:PORT]",
                    help="catalogs to ask (default: $CATALOG_HOST, $CATALOG_PORT, else "
                         "catalog.cse.nd.edu,backup-catalog.cse.nd.edu)")
    show = ap.add_mutually_exclusive_group()
    show.add_argument("-W", "--workers", dest="show", action="store_const", const="workers",
                      help="the manager's workers")
    show.add_argument("-T", "--tasks", dest="show", action="store_const", const="tasks",
                      help="the manager's tasks")
    show.add_argument("-A", "--able-workers", dest="show", action="store_const", const="able",
                      help="task categories and the workers able to run them")
    show.add_argument("-R", "--resources", dest="show", action="store_const",
                      const="resources", help="resources of the connected workers")
    ap.add_argument("--json", action="store_true", help="print the JSON records")
    ap.add_argument("--ssl", action="store_true", help="the manager uses TLS")
    ap.add_argument("-P", "--password", metavar="FILE",
                    help="the manager's password file")
    ap.add_argument("-t", "--timeout", type=float, default=30.0, metavar="SECONDS",
                    help="give up on an answer after this long (default 30)")
    ap.add_argument("-v", "--version", action="version", version=f"vine_status {__version__}")
    args = ap.parse_args(argv)
    args.manager = _manager_address(args.address, ap)
    if args.manager is None and args.show in ("workers", "tasks", "able"):
        ap.error("-W, -T and -A ask one manager: give its HOST PORT")
    if args.project is not None:
        try:
            re.compile(args.project)
        except re.error as e:
            ap.error(f"-M {args.project!r} is not a regular expression: {e}")
    try:
        catalog_hosts(args.catalog)
    except ValueError as e:
        ap.error(str(e))
    return args


def _manager_address(words: list[str], ap: argparse.ArgumentParser) -> tuple[str, int] | None:
    if not words:
        return None
    if len(words) == 1 and ":" in words[0]:
        host, _, port = words[0].rpartition(":")
        words = [host.strip("[]"), port]
    if len(words) != 2 or not words[1].isdigit() or not 0 < int(words[1]) < 65536:
        ap.error(f"give one manager as HOST PORT or HOST:PORT, not {' '.join(words)!r}")
    return words[0], int(words[1])


def from_catalog(args: argparse.Namespace) -> list[dict]:
    hosts = catalog_hosts(args.catalog)
    if args.project is not None:
        records = find_managers(args.project, hosts, args.timeout)
    else:
        records = [r for r in query(hosts, 'type=="vine_manager"', args.timeout)
                   if r.get("type") == "vine_manager"]
    return sorted(records, key=lambda r: (str(r.get("project")), str(r.get("name")),
                                          str(r.get("port"))))


def from_manager(args: argparse.Namespace) -> list[dict]:
    host, port = args.manager
    try:
        password = read_password_file(args.password) if args.password else None
    except (OSError, ValueError) as e:
        raise StatusError(f"cannot read the password file: {e}") from e
    rows = query_manager(host, port, DIRECT[args.show][0], args.timeout, args.ssl, password)
    if args.show in (None, "resources"):
        for r in rows:
            r.setdefault("name", host)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows = from_catalog(args) if args.manager is None else from_manager(args)
    except (CatalogError, StatusError) as e:
        sys.stderr.write(f"vine_status: {e}\n")
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.manager is None:
        print(table(RESOURCES if args.show == "resources" else MANAGERS, rows))
    else:
        print(table(DIRECT[args.show][1], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
