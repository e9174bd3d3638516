"""Cache-object transfers in flight, and which sources to avoid (protocol spec §7).

Every transfer the manager starts toward a worker is recorded here until the worker's
``cache-update`` or ``cache-invalid`` closes it: a ``put`` from the manager (source key
``("file", cachename)``), a ``puturl`` of a URL (same key: the file's original source) or of
a peer's replica (source key: that ``WorkerRecord``). The counts per source are what the
limits ``worker-source-max-transfers`` and ``file-source-max-transfers`` are checked against.
A transfer not over by its deadline is ``overdue``: the engine then stops waiting for it, so
a stuck or hostile destination cannot hold a source for ever.
A worker whose transfer server failed is avoided as a source for ``transient-error-interval``
seconds.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from .cachenames import random_id


@dataclass(slots=True)
class Transfer:
    tid: str
    source: Hashable  # a WorkerRecord, or ("file", cachename) for the original source
    dest: Any  # WorkerRecord
    cachename: str
    size: int = 0  # bytes, when known
    put: bool = False  # sent by the manager itself (else fetched by dest with puturl)
    started: float = field(default_factory=time.monotonic)

    def deadline(self, min_timeout: float, rate: float) -> float:
        """When it must be over: ``min-transfer-timeout`` plus its size at
        ``default-transfer-rate`` (bytes/s), as upstream bounds a transfer."""
        return self.started + min_timeout + self.size / max(rate, 1.0)


def original_source(cachename: str) -> tuple[str, str]:
    return ("file", cachename)


class Transfers:
    def __init__(self) -> None:
        self.by_id: dict[str, Transfer] = {}
        self.by_dest: dict[tuple[Any, str], Transfer] = {}
        self.per_source: dict[Hashable, int] = {}
        self.avoid_until: dict[Any, float] = {}  # source worker -> monotonic time

    def start(self, source: Hashable, dest: Any, cachename: str, size: int = 0,
              put: bool = False) -> str:
        t = Transfer(random_id(), source, dest, cachename, size, put)
        self.by_id[t.tid] = t
        self.by_dest[(dest, cachename)] = t
        self.per_source[source] = self.per_source.get(source, 0) + 1
        return t.tid

    def count_from(self, source: Hashable) -> int:
        return self.per_source.get(source, 0)

    def finish(self, dest: Any, cachename: str, tid: str | None) -> Transfer | None:
        """Close the transfer with id ``tid`` (or, for ``X``/none, the one of ``cachename``
        toward ``dest``); returns it, or None if there was none."""
        t = self.by_id.get(tid) if tid and tid != "X" else None
        if t is None:
            t = self.by_dest.get((dest, cachename))
        if t is None:
            return None
        self._forget(t)
        return t

    def overdue(self, min_timeout: float, rate: float) -> list[Transfer]:
        """Transfers past their deadline (see ``Transfer.deadline``); they stay recorded."""
        now = time.monotonic()
        return [t for t in self.by_id.values() if now > t.deadline(min_timeout, rate)]

    def in_flight_to(self, dest: Any, cachename: str) -> bool:
        return (dest, cachename) in self.by_dest

    def drop_worker(self, w: Any) -> list[Transfer]:
        """Forget transfers to or from a worker that is gone."""
        gone = [t for t in self.by_id.values() if t.dest is w or t.source is w]
        for t in gone:
            self._forget(t)
        self.avoid_until.pop(w, None)
        return gone

    def source_failed(self, source: Any, interval: float) -> None:
        self.avoid_until[source] = time.monotonic() + interval

    def usable_source(self, source: Any) -> bool:
        until = self.avoid_until.get(source)
        if until is None:
            return True
        if time.monotonic() >= until:
            del self.avoid_until[source]
            return True
        return False

    def _forget(self, t: Transfer) -> None:
        self.by_id.pop(t.tid, None)
        if self.by_dest.get((t.dest, t.cachename)) is t:
            del self.by_dest[(t.dest, t.cachename)]
        left = self.per_source.get(t.source, 0) - 1
        if left > 0:
            self.per_source[t.source] = left
        else:
            self.per_source.pop(t.source, None)
