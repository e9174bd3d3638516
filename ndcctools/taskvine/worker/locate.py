"""Where the worker looks for its manager (protocol.md §2.4).

Either the addresses given on the command line, tried in order, or, with ``-M NAME``, the
managers a catalog lists under a project name that fully matches the regular expression
``NAME``. The catalog's list is kept for ``CACHE_SECONDS`` (an empty answer is not kept, so
a manager that appears is found at the next try); managers with tasks waiting come first,
the others in random order, each at the addresses its record and the connection mode give.

TLS (protocol.md §2.1): ``uses_tls(address)`` says whether the record an address came from
says ``"ssl": true``; a worker started with ``--ssl`` (``tls_only``) skips the records that
do not, and says so once per manager.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ..catalog import CatalogError, catalog_hosts, find_managers, manager_addresses

CACHE_SECONDS = 60.0
QUERY_TIMEOUT = 10.0  # seconds to wait for one catalog's answer


def order(records: list[dict], mode: str | None, rng: random.Random) -> list[tuple[str, int]]:
    """The addresses to try for ``records``: managers that need workers (tasks waiting) first,
    in random order within each group, each at its addresses for connection ``mode``."""
    shuffled = list(records)
    rng.shuffle(shuffled)
    shuffled.sort(key=lambda r: not _needs_workers(r))  # stable: random within each group
    out: list[tuple[str, int]] = []
    for record in shuffled:
        out.extend(a for a in _addresses(record, mode) if a not in out and 0 < a[1] < 65536)
    return out


def _addresses(record: dict, mode: str | None) -> list[tuple[str, int]]:
    try:  # a record whose port is not a number has none
        return manager_addresses(record, mode)
    except (TypeError, ValueError):
        return []


def _uses_tls(record: dict) -> bool:
    return record.get("ssl") in (True, "true")  # True == 1: a number 1 counts too


def _needs_workers(record: dict) -> bool:
    waiting = record.get("tasks_waiting")
    return isinstance(waiting, (int, float)) and waiting > 0


class ByName:
    """The managers a catalog lists under a project name (regular expression)."""

    def __init__(self, pattern: str, catalogs: str | None, mode: str | None,
                 log: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, find: Callable = find_managers,
                 tls_only: bool = False):
        self.pattern = pattern
        self.tls_only = tls_only
        self.catalogs = catalog_hosts(catalogs)
        self.mode = mode
        self._log = log
        self._clock = clock
        self._rng = rng or random.Random()
        self._find = find
        self._records: list[dict] = []
        self._fetched = float("-inf")
        self._tls: set[tuple[str, int]] = set()  # addresses of managers that use TLS
        self._skipped: set[str] = set()  # plain managers already reported (with tls_only)

    def __str__(self) -> str:
        return f"a manager named {self.pattern!r}"

    def addresses(self) -> list[tuple[str, int]]:
        return order(self._current(), self.mode, self._rng)

    def uses_tls(self, address: tuple[str, int]) -> bool:
        """Whether the catalog record ``address`` came from says the manager uses TLS."""
        return address in self._tls

    def _current(self) -> list[dict]:
        now = self._clock()
        if self._records and now - self._fetched < CACHE_SECONDS:
            return self._records
        try:
            found = self._find(self.pattern, self.catalogs, QUERY_TIMEOUT)
        except CatalogError as e:
            self._log(f"catalog lookup of {self.pattern!r} failed: {e}")
            return self._records  # what it said last, if anything
        usable = [r for r in found if _uses_tls(r) or not self.tls_only]
        for record in found:
            where = f"{record.get('name')}:{record.get('port')}"
            if record not in usable and where not in self._skipped:
                self._skipped.add(where)
                self._log(f"skipping manager {where}: it does not use TLS, and this worker "
                          "was given --ssl (or --tls-sni)")
        self._tls = {a for r in usable if _uses_tls(r) for a in _addresses(r, self.mode)}
        if not usable:
            self._log(f"no manager named {self.pattern!r} in the catalog")
        self._records, self._fetched = usable, now
        return usable


class Fixed:
    """The addresses given on the command line."""

    def __init__(self, addresses: list[tuple[str, int]]):
        self._addresses = addresses

    def __str__(self) -> str:
        return ";".join(f"{h}:{p}" for h, p in self._addresses)

    def addresses(self) -> list[tuple[str, int]]:
        return self._addresses

    def uses_tls(self, address: tuple[str, int]) -> bool:
        """Never known: TLS on the command line is ``--ssl``/``--tls-sni``."""
        return False
