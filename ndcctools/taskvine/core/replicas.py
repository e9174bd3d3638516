"""Which workers hold a ready replica of each cache object.

A replica is ready once its worker announced it with ``cache-update``; only ready replicas
are offered as sources for peer transfers or fetched back by the manager. (What each worker
holds or is about to receive, ready or not, is in its ``WorkerRecord.cache``.)
"""

from __future__ import annotations

from typing import Any


class ReplicaIndex:
    def __init__(self) -> None:
        self._where: dict[str, set[Any]] = {}

    def add(self, cachename: str, w: Any) -> None:
        self._where.setdefault(cachename, set()).add(w)

    def drop(self, cachename: str, w: Any) -> None:
        holders = self._where.get(cachename)
        if holders is not None:
            holders.discard(w)
            if not holders:
                del self._where[cachename]

    def drop_worker(self, w: Any, names: list[str]) -> list[str]:
        """Forget the replicas of a lost worker; returns the names left with none."""
        lost = []
        for name in names:
            self.drop(name, w)
            if name not in self._where:
                lost.append(name)
        return lost

    def holders(self, cachename: str) -> set[Any]:
        return self._where.get(cachename, set())

    def count(self, cachename: str) -> int:
        return len(self._where.get(cachename, ()))
