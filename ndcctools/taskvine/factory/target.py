"""Where the factory's managers are, and what workers need to find them: one manager at
HOST:PORT (asked directly on its port), or every manager whose project name matches a
pattern (found through the catalog)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..catalog import CatalogError, catalog_hosts, find_managers, manager_addresses
from ..status_client import StatusError, query_manager

QUERY_TIMEOUT = 5.0
DIRECT_TIMEOUT = 2.0  # for a manager found in the catalog: its record is the fallback
CATALOG_REFRESH = 15.0


@dataclass
class Reading:
    """One look at the managers: ``records`` when they answered; otherwise ``gone`` says
    whether they are known to be away (refused, not in the catalog) or only silent (busy,
    or the catalog is down), and ``why``."""

    records: list[dict] | None = None
    gone: bool = False
    why: str = ""


class DirectTarget:
    def __init__(self, host: str, port: int, ssl: bool = False,
                 password: bytes | None = None) -> None:
        self.host, self.port = host, int(port)
        self.ssl, self.password = ssl, password

    def _query(self, request: str) -> list[dict]:
        return query_manager(self.host, self.port, request, QUERY_TIMEOUT, self.ssl,
                             self.password)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def read(self) -> Reading:
        try:
            return Reading(self._query("manager_status"))
        except StatusError as e:
            silent = isinstance(e.__cause__, TimeoutError)
            return Reading(None, not silent, str(e))

    def workers_of(self, factory_name: str) -> int | None:
        """How many workers from ``factory_name`` are connected (None: no answer)."""
        try:
            rows = self._query("worker_status")
        except StatusError:
            return None
        return sum(1 for r in rows if r.get("factory_name") == factory_name)

    def worker_args(self) -> list[str]:
        return [self.host, str(self.port)]


class NamedTarget:
    """Managers found in the catalog (asked again every ``CATALOG_REFRESH`` seconds), then
    asked directly for their status: a catalog record can be a minute old."""

    def __init__(self, pattern: str, catalog: str | None,
                 clock: Callable[[], float] = time.monotonic,
                 password: bytes | None = None) -> None:
        re.compile(pattern)  # a bad pattern fails at start, not in the loop
        self.pattern, self.catalog, self.clock = pattern, catalog, clock
        self.password = password
        self.hosts = catalog_hosts(catalog)
        self.found: list[dict] = []
        self.found_at = float("-inf")

    def __str__(self) -> str:
        return f"managers named {self.pattern!r}"

    def read(self) -> Reading:
        if self.clock() - self.found_at >= CATALOG_REFRESH or not self.found:
            try:
                self.found = find_managers(self.pattern, self.hosts, QUERY_TIMEOUT)
            except CatalogError as e:
                return Reading(None, False, str(e))
            self.found_at = self.clock()
        if not self.found:
            return Reading(None, True, f"no manager named {self.pattern!r} in the catalog")
        records = [r for r in (_fresh(f, self.password) for f in self.found) if r is not None]
        if not records:
            return Reading(None, True, f"the managers named {self.pattern!r} in the catalog "
                                       "refuse connections: they are gone")
        return Reading(records)

    def workers_of(self, factory_name: str) -> int | None:
        return None

    def worker_args(self) -> list[str]:
        args = ["-M", self.pattern]
        if self.catalog:
            args += ["-C", self.catalog]
        return args


def _fresh(record: dict, password: bytes | None) -> dict | None:
    """The manager's own status if it answers at once; its catalog record if it is silent
    (busy, or not reachable from here); None if every address refuses (it is gone: the
    catalog keeps records long after their manager ends)."""
    addresses = manager_addresses(record)
    refused = 0
    for host, port in addresses:
        try:
            rows = query_manager(host, port, "manager_status", DIRECT_TIMEOUT,
                                 bool(record.get("ssl")), password)
        except StatusError as e:
            refused += isinstance(e.__cause__, ConnectionRefusedError)
            continue
        if rows:
            return rows[0]
    return None if addresses and refused == len(addresses) else record
