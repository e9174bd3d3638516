"""Catalog updates (protocol.md §10.1): a manager with a project name tells the catalog
servers about itself every ``update-interval`` seconds, on ``update_catalog()`` and when it
closes.

Theory of operation. The record describes the engine's state, so it is built where that
state lives: in the manager's thread, from the engine's periodic timers (inside ``wait()``)
or from the public call. Only bytes cross over to the sender thread, which does the network
I/O, so an unreachable or silent catalog never blocks the manager::

    manager thread                                      sender thread (daemon, one per manager)
    tick() / update() ── build, encode ──► post(job) ─► newest job only ─► TCP or UDP, per host
          ▲                                                                       │
          └── log_outcomes() ◄──── (host, error or None) ◄──── SimpleQueue ◄──────┘

A job waiting to be sent is replaced by a newer one (the latest record wins; nothing queues
up), each send is bounded by ``SEND_TIMEOUT`` seconds per host, and the outcomes come back to
the manager's thread, which alone writes the debug log: once when a catalog cannot be
reached, once again when it answers.

Transport: by default TCP to the catalog's port + 1 (connect, write the JSON text, close);
with ``CATALOG_UPDATE_PROTOCOL=udp`` one datagram to the port. A record too large for a
datagram is replaced by a lean one (identity, task and worker counters, capacities, times).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..catalog import catalog_hosts

if TYPE_CHECKING:
    from .debuglog import DebugLog
    from .tuning import Tuning

SEND_TIMEOUT = 5.0  # seconds for one update to one catalog (connect and write)
SHUTDOWN_WAIT = 1.0  # seconds close() waits for the last update to go out
LEAN_ABOVE = 60_000  # bytes: a record larger than this is sent lean (a datagram's limit)
LEAN_FIELDS = {
    "type", "project", "starttime", "working_dir", "owner", "version", "port", "priority",
    "manager_preferred_connection", "taskvine_uuid", "protocol", "ssl", "network_interfaces",
    "name", "workers", "workers_connected", "workers_blocked",
}
LEAN_PREFIXES = ("tasks_", "capacity_", "time_")


@dataclass(frozen=True)
class Update:
    """One record to send to every catalog in ``hosts``."""

    hosts: tuple[tuple[str, int], ...]
    payload: bytes
    udp: bool


def encode(record: dict) -> bytes:
    """The JSON text to send: the record, or its lean form if the record is too large."""
    payload = json.dumps(record).encode()
    if len(payload) <= LEAN_ABOVE:
        return payload
    lean = {k: v for k, v in record.items() if k in LEAN_FIELDS or k.startswith(LEAN_PREFIXES)}
    return json.dumps(lean).encode()


def send_update(host: str, port: int, payload: bytes, udp: bool,
                timeout: float | None = None) -> None:
    """Send one update to the catalog at ``host:port`` within ``timeout`` seconds (default
    ``SEND_TIMEOUT``); raises ``OSError``."""
    timeout = SEND_TIMEOUT if timeout is None else timeout
    if udp:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout)
            sock.sendto(payload, addr)
        return
    with socket.create_connection((host, port + 1), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(payload)


class Sender:
    """The thread that sends updates, one job at a time, keeping only the newest waiting."""

    def __init__(self, send: Callable[[str, int, bytes, bool], None] = send_update):
        self.outcomes: queue.SimpleQueue[tuple[str, str | None]] = queue.SimpleQueue()
        self._send = send
        self._cond = threading.Condition()
        self._job: Update | None = None
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def post(self, job: Update) -> None:
        """Send ``job`` soon, instead of any job still waiting."""
        with self._cond:
            if self._stopping:
                return
            self._job = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vine-catalog",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until nothing is waiting or being sent."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy and self._job is None, timeout)

    def stop(self) -> None:
        """Let the thread end once its current job (if any) is over; later posts are dropped."""
        with self._cond:
            self._stopping = True
            self._job = None
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._stopping)
                if self._job is None:
                    return
                job, self._job, self._busy = self._job, None, True
            for host, port in job.hosts:
                try:
                    self._send(host, port, job.payload, job.udp)
                    error = None
                except Exception as e:  # noqa: BLE001 - handed back to the manager's thread
                    error = str(e) or type(e).__name__
                self.outcomes.put((f"{host}:{port}", error))
            with self._cond:
                self._busy = False
                self._cond.notify_all()


class CatalogReporter:
    """When and what to tell the catalogs; used from the manager's thread only.

    ``build`` returns the record to advertise, or ``None`` while the manager has no project
    name. ``servers`` is the catalog list (``"h1:p1,h2"``; ``None``: ``CATALOG_HOST`` or
    upstream's default catalogs)."""

    def __init__(self, build: Callable[[], dict | None], debug: DebugLog, tuning: Tuning,
                 sender: Sender | None = None, clock: Callable[[], float] = time.monotonic):
        self.servers: str | None = None
        self._build = build
        self._debug = debug
        self._tuning = tuning
        self.sender = sender or Sender()
        self._clock = clock
        self._due = 0.0  # the first tick sends
        self._failing: set[str] = set()
        self._announced: tuple | None = None

    def set_servers(self, spec: str) -> None:
        """Use the catalogs of ``spec`` from now on (``ValueError`` if it names none)."""
        catalog_hosts(spec)
        self.servers = spec
        self._due = 0.0

    def soon(self) -> None:
        """Send an update at the next tick (the name or the catalogs changed)."""
        self._due = 0.0

    def tick(self) -> None:
        """Called by the engine's timers: log what came back, send an update if one is due."""
        self.log_outcomes()
        if self._clock() >= self._due:
            self.update()

    def update(self) -> None:
        """Build the record now and hand it to the sender (which sends it at once)."""
        self._due = self._clock() + max(1.0, float(self._tuning.update_interval))
        record = self._build()
        if record is None:
            return
        try:
            hosts = tuple(catalog_hosts(self.servers))
        except ValueError as e:  # CATALOG_HOST names no host
            self._report("$CATALOG_HOST", str(e))
            return
        udp = os.environ.get("CATALOG_UPDATE_PROTOCOL", "").lower() == "udp"
        announced = (record.get("project"), hosts, udp)
        if announced != self._announced:
            self._announced = announced
            where = ", ".join(f"{h}:{p}" for h, p in hosts)
            self._debug.write("catalog", f"advertising project {record.get('project')!r} to "
                              f"{where} over {'UDP' if udp else 'TCP'} every "
                              f"{self._tuning.update_interval:g}s")
        self.sender.post(Update(hosts, encode(record), udp))

    def log_outcomes(self) -> None:
        """Say in the debug log when a catalog stops or starts answering (once each time)."""
        while True:
            try:
                host, error = self.sender.outcomes.get_nowait()
            except queue.Empty:
                return
            self._report(host, error)

    def _report(self, host: str, error: str | None) -> None:
        if error is not None and host not in self._failing:
            self._failing.add(host)
            self._debug.write("catalog", f"could not send an update to catalog {host}: "
                              f"{error} (the manager goes on; said once until it answers)")
        elif error is None and host in self._failing:
            self._failing.discard(host)
            self._debug.write("catalog", f"catalog {host} reached again")

    def close(self) -> None:
        """Send a last update (waiting up to ``SHUTDOWN_WAIT`` seconds, and not at all if the
        catalogs did not answer the previous one), then let the sender thread end."""
        self.log_outcomes()
        if self._announced is not None:
            self.update()
            if not self._failing:
                self.sender.flush(SHUTDOWN_WAIT)
            self.log_outcomes()
        self.sender.stop()
