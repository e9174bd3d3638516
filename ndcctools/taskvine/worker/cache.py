"""The worker's cache: ``<workspace>/cache/<cachename>`` plus a ``.meta`` file each.

The ``Cache`` is the one owner of that directory. Objects arrive three ways: received from
the manager (``put``: written under ``transfer/`` then renamed in), produced by a task
(moved in from its sandbox), or found at start-up (later issue). Every name is checked to be
a single plain path component before it touches the disk.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..items import check_component, remove_tree, tree_size
from ..protocol import CacheUpdate

TYPE_PUT = 0
TYPE_TRANSFERRED = 2
TYPE_MINI_TASK = 5


@dataclass(slots=True)
class Entry:
    level: int
    size: int
    mtime: int
    type: int


class Cache:
    def __init__(self, workspace: str):
        self.dir = os.path.join(workspace, "cache")
        self.transfer_dir = os.path.join(workspace, "transfer")
        for d in (self.dir, self.transfer_dir):
            os.makedirs(d, exist_ok=True)
        self.objects: dict[str, Entry] = {}

    def path(self, name: str) -> str:
        return os.path.join(self.dir, check_component(name))

    def staging_path(self, name: str) -> str:
        """Where an incoming object is written before it enters the cache."""
        path = os.path.join(self.transfer_dir, check_component(name))
        remove_tree(path)
        return path

    def __contains__(self, name: str) -> bool:
        return name in self.objects

    def add(self, name: str, source: str, level: int, kind: int, start_us: int,
            transfer_id: str = "X") -> CacheUpdate:
        """Move ``source`` into the cache as ``name``; returns the ``cache-update`` to send."""
        dest = self.path(name)
        if name in self.objects or os.path.lexists(dest):
            self.remove(name)
        os.rename(source, dest)
        st = os.lstat(dest)
        size = tree_size(dest)
        mtime = int(st.st_mtime)
        self.objects[name] = Entry(level, size, mtime, kind)
        duration = max(0, int(time.time() * 1e6) - start_us)
        self._write_meta(name, st.st_mode, size, mtime, kind, level, duration, start_us)
        return CacheUpdate(name, kind, level, size, mtime, duration, start_us, transfer_id)

    def remove(self, name: str) -> None:
        self.objects.pop(name, None)
        path = self.path(name)
        remove_tree(path)
        remove_tree(path + ".meta")

    def clear(self, max_level: int) -> None:
        """Remove every object whose level is at most ``max_level``."""
        for name in [n for n, e in self.objects.items() if e.level <= max_level]:
            self.remove(name)

    def _write_meta(self, name: str, mode: int, size: int, mtime: int, kind: int, level: int,
                    duration: int, start_us: int) -> None:
        with open(self.path(name) + ".meta", "w") as f:
            f.write(f"type {kind}\ncache_level {level}\nmode 0{mode:o}\nsize {size}\n"
                    f"mtime {mtime}\ntransfer_time {duration}\ntransfer_start {start_us}\n"
                    "source manager\n")
