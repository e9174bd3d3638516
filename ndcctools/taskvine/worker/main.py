"""``vine_worker [options] HOST PORT`` (or ``-M NAME``): parse the command line, then
connect, serve, repeat.

The worker connects to the first manager address that answers (given on the command line,
or found in the catalog under a project name: ``locate.py``), serves it (``Session``)
until it is released, told to exit, or the connection is lost, then reconnects with
exponential back-off (1 s doubling up to ``--max-backoff``; it keeps growing while sessions
fail quickly, and starts again from 1 s only after a session that lasted ``STABLE_SESSION``
seconds). A session that fails with an exception is logged with its traceback and counts as
a lost connection: nothing a manager sends can kill the worker. It exits when told to, after
one session with ``--single-shot``, or after ``--timeout`` seconds without a manager; and
with status 1 if its workspace is deleted or replaced under it (``WorkspaceGuard``).

At start-up the workspace is emptied of everything but ``cache/`` (where the ``Cache`` keeps
valid ``forever`` objects): sandboxes, spares and downloads left by an earlier worker on the
same workspace (one killed, say) must never get in the way. On exit the workspace is removed
unless ``--keep-workspace``, except for cache objects of level ``forever``, which the next
worker started on the same workspace announces.

Every process group the worker starts is registered with a reaper process (``reaper.py``),
which kills them if the worker dies without doing so itself.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback

from .. import __version__, transport
from ..catalog import catalog_hosts
from ..items import remove_tree
from . import reaper
from .cache import Cache
from .fetcher import Fetcher
from .locate import ByName, Fixed
from .log import WorkerLog
from .resources import Ledger, detect
from .sandbox import WorkspaceGuard
from .session import Session, SessionConfig
from .transfer_server import TransferServer, parse_port_spec

STABLE_SESSION = 30.0  # seconds: a session this long resets the reconnection back-off

UNSUPPORTED = {
    "password": "-P/--password arrives with a later issue",
    "ssl": "--ssl arrives with a later issue",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="vine_worker", description="TaskVine worker (pure Python)")
    ap.add_argument("address", nargs="*",
                    help="HOST PORT, HOST:PORT, or 'h1:p1;h2:p2' (or use -M NAME)")
    ap.add_argument("--cores", type=int, help="cores offered (default: all)")
    ap.add_argument("--memory", type=int, help="memory offered in MB (default: all)")
    ap.add_argument("--disk", type=int, help="disk offered in MB (default: half the free space)")
    ap.add_argument("--gpus", type=int, help="GPUs offered (default 0)")
    ap.add_argument("--disk-percent", type=float, default=50)
    ap.add_argument("--workspace", "-s", help="work directory (default: $TMPDIR/worker-UID-PID)")
    ap.add_argument("--keep-workspace", action="store_true")
    ap.add_argument("--timeout", "-t", type=float, default=900,
                    help="exit after this many seconds without a manager (default 900)")
    ap.add_argument("--idle-timeout", type=float, default=0,
                    help="ask the manager to let us go after this many idle seconds")
    ap.add_argument("--single-shot", action="store_true", help="exit after one manager session")
    ap.add_argument("--feature", action="append", default=[], help="a feature (repeatable)")
    ap.add_argument("--debug", "-d", action="append", default=[], help="debug flag (e.g. all)")
    ap.add_argument("--debug-file", "-o", help="debug log file (default: stderr)")
    ap.add_argument("--parent-death", action="store_true", help="exit when the parent exits")
    ap.add_argument("--max-backoff", "-b", type=float, default=8)
    ap.add_argument("--wall-time", type=float, default=0)
    ap.add_argument("--transfer-port", help="port (P or P1:P2) of the peer transfer server")
    ap.add_argument("--direct-io-min", type=int, default=64, metavar="MB",
                    help="receive files of at least this many MB with O_DIRECT, bypassing "
                         "the page cache (0: never; default 64)")
    ap.add_argument("--manager-name", "--master-name", "-M", "-N", dest="manager_name",
                    metavar="NAME", help="find the manager in the catalog by project name "
                    "(a regular expression that must match the whole name)")
    ap.add_argument("--catalog", "-C", metavar="HOST:PORT[,HOST:PORT]",
                    help="catalogs to ask with -M (default: $CATALOG_HOST, $CATALOG_PORT, "
                         "else catalog.cse.nd.edu,backup-catalog.cse.nd.edu)")
    ap.add_argument("--connection-mode", choices=("by_ip", "by_hostname", "by_apparent_ip"),
                    help="how to reach a manager found with -M (default: as it prefers)")
    ap.add_argument("--from-factory", metavar="NAME",
                    help="the factory that started this worker (told to the manager)")
    ap.add_argument("--password", "-P")
    ap.add_argument("--ssl", action="store_true")
    ap.add_argument("--version", "-v", action="version", version=f"vine_worker {__version__}")
    args, unknown = ap.parse_known_args(argv)
    for name, why in UNSUPPORTED.items():
        if getattr(args, name):
            ap.error(f"{why}; this worker cannot honour it yet")
    try:
        parse_port_spec(args.transfer_port)
    except ValueError as e:
        ap.error(str(e))
    if unknown:
        sys.stderr.write(f"vine_worker: ignoring unsupported options {' '.join(unknown)}\n")
    if args.manager_name is not None:
        if args.address:
            ap.error("give the manager as HOST PORT or with -M NAME, not both")
        try:
            re.compile(args.manager_name)
            catalog_hosts(args.catalog)
        except (re.error, ValueError) as e:
            ap.error(f"-M {args.manager_name!r} / -C {args.catalog!r}: {e}")
        args.managers = []
    else:
        args.managers = managers(args.address, ap)
    return args


def managers(words: list[str], ap: argparse.ArgumentParser) -> list[tuple[str, int]]:
    """The manager addresses named on the command line."""
    if len(words) == 2 and words[1].isdigit():
        return [(words[0], int(words[1]))]
    if len(words) != 1:
        ap.error("give the manager as HOST PORT, HOST:PORT or 'h1:p1;h2:p2'")
    out = []
    for item in words[0].split(";"):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            ap.error(f"bad manager address {item!r}")
        out.append((host.strip("[]"), int(port)))
    return out


def default_workspace() -> str:
    base = next((os.environ[v] for v in ("CCTOOLS_TEMP", "_CONDOR_SCRATCH_DIR", "TMPDIR",
                                          "TEMP", "TMP") if os.environ.get(v)),
                tempfile.gettempdir())
    return os.path.join(base, f"worker-{os.getuid()}-{os.getpid()}")


def connect(addresses: list[tuple[str, int]], timeout: float = 10) -> socket.socket | None:
    for host, port in addresses:
        try:
            return socket.create_connection((host, port), timeout=timeout)
        except OSError:
            continue
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workspace = os.path.abspath(args.workspace or default_workspace())
    os.makedirs(workspace, exist_ok=True)
    if not reaper.wait_for_previous(workspace):
        sys.stderr.write(f"vine_worker: another worker's reaper is still at work in "
                         f"{workspace}; going on\n")
    clear_workspace(workspace)
    log = WorkerLog(bool(args.debug), args.debug_file)
    transport.DIRECT_MIN = args.direct_io_min << 20 if args.direct_io_min > 0 else None
    total = detect(args.cores, args.memory, args.disk, args.gpus, workspace, args.disk_percent)
    seed = f"{os.getpid()}-{os.getppid()}-{random.random()}-{time.time()}".encode()
    config = SessionConfig(
        workspace=workspace, worker_id="worker-" + hashlib.md5(seed).hexdigest(),
        features=tuple(args.feature), idle_timeout=args.idle_timeout,
        parent_pid=os.getppid() if args.parent_death else 0,
        end_time=int(time.time() + args.wall_time) if args.wall_time > 0 else 0,
        factory_name=args.from_factory or "")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(f"workspace {workspace}; offering {total}")
    cache = Cache(workspace)
    config.guard = WorkspaceGuard(workspace, cache.dir)
    server = TransferServer(cache, args.transfer_port, log)
    config.transfer_port = server.port
    reaper.start(workspace)
    status = 1
    try:
        status = serve(args, config, cache, Fetcher(cache.transfer_dir), Ledger(total), log)
    finally:
        server.close()
        reaper.stop()
        # a workspace that is not ours any more (deleted, or made again) is left alone
        if not args.keep_workspace and config.guard.trouble() is None:
            remove_workspace(workspace, cache)
    return status


def clear_workspace(workspace: str) -> None:
    """Delete everything in the workspace but ``cache/`` (which ``Cache`` sorts out): what
    an earlier worker left there (sandboxes, spares, partial downloads) is not ours."""
    for entry in os.listdir(workspace):
        if entry != "cache":
            remove_tree(os.path.join(workspace, entry))


def remove_workspace(workspace: str, cache: Cache) -> None:
    """Remove the workspace, except the cache directory if ``forever`` objects are in it."""
    if not cache.keep_only_forever():
        shutil.rmtree(workspace, ignore_errors=True)
        return
    for entry in os.listdir(workspace):
        path = os.path.join(workspace, entry)
        if path != cache.dir:
            remove_tree(path)


def locator(args: argparse.Namespace, log: WorkerLog) -> ByName | Fixed:
    """Where to look for managers: ``.addresses()`` gives the ones to try now."""
    if args.manager_name is not None:
        return ByName(args.manager_name, args.catalog, args.connection_mode, log)
    return Fixed(args.managers)


def serve(args: argparse.Namespace, config: SessionConfig, cache: Cache, fetcher: Fetcher,
          ledger: Ledger, log: WorkerLog) -> int:
    """Serve managers until told to exit; the worker's exit status."""
    backoff = 1.0
    last_contact = time.monotonic()
    where = locator(args, log)
    while True:
        sock = connect(where.addresses())
        if sock is None:
            if time.monotonic() - last_contact > args.timeout:
                log.error(f"no manager for {args.timeout:.0f}s: exiting")
                return 0
            if config.parent_pid and os.getppid() != config.parent_pid:
                log.error("parent process is gone: exiting")
                return 0
            log(f"cannot reach {where}; retrying in {backoff:.0f}s")
            time.sleep(backoff)
            backoff = min(backoff * 2, args.max_backoff)
            continue
        log(f"connected to {sock.getpeername()}")
        began = time.monotonic()
        try:
            outcome = Session(sock, config, cache, fetcher, ledger, log).run()
        except Exception:
            log.error(f"session with {where} failed:\n{traceback.format_exc()}")
            sock.close()
            outcome = "broken" if config.guard and config.guard.trouble() else "lost"
        last_contact = time.monotonic()
        if outcome == "broken":
            return 1
        if outcome == "exit" or args.single_shot:
            return 0
        if last_contact - began >= STABLE_SESSION:
            backoff = 1.0
        if outcome != "released":  # lost, or failed: wait longer each time it happens again
            log(f"reconnecting in {backoff:.0f}s")
            time.sleep(backoff)
            backoff = min(backoff * 2, args.max_backoff)


if __name__ == "__main__":
    sys.exit(main())
