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

Connection set-up (protocol spec §2): TCP, then TLS (with ``--ssl`` or ``--tls-sni``, or
when the manager's catalog record says ``"ssl": true``; no certificate checks; SNI is
``--tls-sni``, else the host name the worker was given), then the password exchange (with
``--password``), then the hello. A manager that refuses us (wrong password, TLS on one side
only, a password on one side only) counts as unreachable: the reason is logged once per
distinct reason, the worker retries with the same back-off, and gives up after ``--timeout``.
A manager that turns the hello away (it asks for a password, answers with TLS, or hangs
up at once without a word, as a TLS manager does: ``Session``) refuses us too, but ends a
``--single-shot`` worker, as upstream.

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

from .. import __version__, security, transport
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
from .transfer_server import PeerKey, TransferServer, parse_port_spec

STABLE_SESSION = 30.0  # seconds: a session this long resets the reconnection back-off


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
    ap.add_argument("--password", "-P", metavar="FILE",
                    help="prove to the manager and to peers that we know this file's bytes")
    ap.add_argument("--ssl", action="store_true", help="talk to the manager over TLS")
    ap.add_argument("--tls-sni", metavar="NAME",
                    help="TLS, telling the manager this server name (SNI)")
    ap.add_argument("--version", "-v", action="version", version=f"vine_worker {__version__}")
    args, unknown = ap.parse_known_args(argv)
    args.password_bytes = None
    if args.password is not None:
        try:
            args.password_bytes = security.read_password_file(args.password)
        except (OSError, ValueError) as e:
            ap.error(f"--password {args.password}: {e}")
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


class Refusals:
    """Why managers would not have us: each distinct reason is logged once (an operator
    must see it; a worker retrying all night must not repeat it every few seconds)."""

    def __init__(self, log: WorkerLog):
        self._log = log
        self._seen: set[str] = set()

    def __call__(self, reason: str) -> None:
        if reason not in self._seen:
            self._seen.add(reason)
            self._log.error(reason)


def connect(where: ByName | Fixed, args: argparse.Namespace, refused: Refusals,
            timeout: float = 10) -> socket.socket | None:
    """The first manager of ``where`` that answers and accepts us, set up (TLS, password)
    and ready for the hello; ``None`` if none does (refusals are reported to ``refused``)."""
    for host, port in where.addresses():
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError:
            continue
        try:
            return set_up(sock, host, where.uses_tls((host, port)), args)
        except OSError as e:  # AuthError, TLSFailure
            refused(refusal(f"{host}:{port}", e))
    return None


def set_up(sock: socket.socket, host: str, tls: bool, args: argparse.Namespace
           ) -> socket.socket:
    """TLS if asked for, then the password exchange if we have a password (§2.1, §2.2);
    the connection is closed if either fails."""
    try:
        if tls or args.ssl or args.tls_sni:
            try:
                sock = security.wrap_client(sock, args.tls_sni or host)
            except OSError as e:  # ssl.SSLError included
                raise TLSFailure(e) from e
        if args.password_bytes is not None:
            try:
                security.exchange_blocking(sock, args.password_bytes)
            except security.AuthError:
                raise
            except OSError as e:
                raise security.AuthError(f"the connection broke during the exchange ({e})"
                                         ) from e
    except BaseException:
        sock.close()
        raise
    return sock


class TLSFailure(ConnectionError):
    """The TLS handshake with the manager failed."""


def refusal(address: str, error: Exception) -> str:
    """The reason to log (once) for a manager that did not let us in."""
    if isinstance(error, TLSFailure):
        return (f"manager {address}: TLS handshake failed ({error.__cause__}); "
                "does it use TLS?")
    if isinstance(error, security.AuthError):
        return f"manager {address}: password exchange failed: {error}"
    return f"manager {address}: connection set-up failed: {error}"


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
        factory_name=args.from_factory or "", peer_key=PeerKey(args.password_bytes))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(f"workspace {workspace}; offering {total}")
    cache = Cache(workspace)
    config.guard = WorkspaceGuard(workspace, cache.dir)
    server = TransferServer(cache, args.transfer_port, log, config.peer_key)
    config.transfer_port = server.port
    reaper.start(workspace)
    status = 1
    try:
        fetcher = Fetcher(cache.transfer_dir, key=config.peer_key)
        status = serve(args, config, cache, fetcher, Ledger(total), log)
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
        return ByName(args.manager_name, args.catalog, args.connection_mode, log,
                      tls_only=args.ssl or bool(args.tls_sni))
    return Fixed(args.managers)


def serve(args: argparse.Namespace, config: SessionConfig, cache: Cache, fetcher: Fetcher,
          ledger: Ledger, log: WorkerLog) -> int:
    """Serve managers until told to exit; the worker's exit status."""
    backoff = 1.0
    last_contact = time.monotonic()
    where = locator(args, log)
    refused = Refusals(log)
    while True:
        sock = connect(where, args, refused)
        began = time.monotonic()
        outcome = "unreachable" if sock is None else run_session(
            sock, args, where, config, cache, fetcher, ledger, log, refused)
        if outcome == "unreachable":
            if time.monotonic() - last_contact > args.timeout:
                log.error(f"no manager for {args.timeout:.0f}s: exiting")
                return 0
            if config.parent_pid and os.getppid() != config.parent_pid:
                log.error("parent process is gone: exiting")
                return 0
            log(f"no manager at {where} would take us; retrying in {backoff:.0f}s")
            time.sleep(backoff)
            backoff = min(backoff * 2, args.max_backoff)
            continue
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


def run_session(sock: socket.socket, args: argparse.Namespace, where: ByName | Fixed,
                config: SessionConfig, cache: Cache, fetcher: Fetcher, ledger: Ledger,
                log: WorkerLog, refused: Refusals) -> str:
    """One session; its outcome, or "unreachable" if the manager turned us away."""
    try:
        host, port = sock.getpeername()[:2]
        peer = f"{host}:{port}"
    except OSError:  # already reset
        peer = str(where)
    log(f"connected to {peer}")
    try:
        session = Session(sock, config, cache, fetcher, ledger, log)
        outcome = session.run()
    except Exception:
        log.error(f"session with {where} failed:\n{traceback.format_exc()}")
        sock.close()
        return "broken" if config.guard and config.guard.trouble() else "lost"
    if outcome == "refused":  # after the hello: a --single-shot worker is done (as upstream)
        refused(f"manager {peer}: {session.end_reason}")
        return "lost" if args.single_shot else "unreachable"
    return outcome


if __name__ == "__main__":
    sys.exit(main())
