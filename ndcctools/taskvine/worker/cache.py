"""The worker's cache: ``<workspace>/cache/<cachename>``, and a ``.meta`` file beside each
``forever`` object (the only ones a later worker process reads back; writing metadata for
the others would double the file-system work of every task for nothing).

The ``Cache`` is the one owner of that directory. Objects arrive four ways: received from
the manager (``put``: written under ``transfer/`` then renamed in), fetched from a URL or a
peer (``puturl``), produced by a task (moved in from its sandbox), or found at start-up:
objects of level ``forever`` with valid metadata are kept from an earlier worker process
(everything else found there is deleted) and announced in every hello. Every name is
checked to be a single plain path component before it touches the disk.

Small objects (at most ``MEMORY_OBJECT_MAX`` bytes, below level ``forever``, while the
memory they hold stays under ``MEMORY_TOTAL_MAX``) may live in memory instead: a function
call's arguments and result never touch the disk, where creating a file costs about 0.1 ms
of kernel time on the machines we measured. Such an object is written out (``file``) the first
time something needs it as a file: linked into a sandbox, or served as a directory tree.
Readers that only need its bytes (``memory``: serving it to the manager or to a peer, passing
it to a library) take them from memory.

The cache also knows how many bytes it holds and which objects were used least recently, so
the worker can evict ``workflow`` and ``worker`` objects that no task needs when it runs out
of disk (``evictable``).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from ..items import UnsafeName, check_component, remove_tree, tree_size, write_all
from ..protocol import CacheUpdate

META = ".meta"  # suffix of an object's metadata file
TYPE_PUT = 0
TYPE_TRANSFERRED = 2
TYPE_MINI_TASK = 5
LEVEL_WORKFLOW = 1
LEVEL_WORKER = 2
LEVEL_FOREVER = 3
MEMORY_OBJECT_MAX = 1 << 20
MEMORY_TOTAL_MAX = 64 << 20


@dataclass(slots=True)
class Entry:
    level: int
    size: int
    mtime: int
    type: int
    duration: int = 0
    start_us: int = 0
    source: str = field(default="manager")
    last_used: float = 0.0
    data: bytes | None = None  # the content of an object held in memory, not on disk
    mode: int = 0o644  # its permission bits, for when it is written out or sent


class Held(NamedTuple):
    """An object held in memory."""

    data: bytes
    mode: int
    mtime: int


class Cache:
    def __init__(self, workspace: str):
        self.dir = os.path.join(workspace, "cache")
        self.transfer_dir = os.path.join(workspace, "transfer")
        for d in (self.dir, self.transfer_dir):
            os.makedirs(d, exist_ok=True)
        self.objects: dict[str, Entry] = {}
        self.bytes = 0  # sum of the sizes of the objects
        self.memory_bytes = 0  # of which held in memory
        self._load()
        self.bytes = sum(e.size for e in self.objects.values())

    def path(self, name: str) -> str:
        """Where object ``name`` is or would be on disk (see ``file`` to be sure it is). A
        name ending in ``.meta`` is refused: it would be the metadata of another object."""
        if check_component(name).endswith(META):
            raise UnsafeName(f"refused cache name {name!r}: metadata files end in {META}")
        return os.path.join(self.dir, name)

    def file(self, name: str) -> str:
        """The path of object ``name`` on disk, writing it out first if it is in memory."""
        path = self.path(name)
        entry = self.objects.get(name)
        if entry is not None and entry.data is not None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, entry.mode)
            try:
                write_all(fd, entry.data)
            finally:
                os.close(fd)
            self.memory_bytes -= entry.size
            entry.data = None  # only now: until then, readers in other threads use the bytes
        return path

    def memory(self, name: str) -> Held | None:
        """The content of object ``name`` if it is held in memory. Safe from any thread: an
        object leaves memory only once its file is in place."""
        entry = self.objects.get(name)
        data = entry.data if entry is not None else None
        return None if data is None else Held(data, entry.mode, entry.mtime)

    def fits_in_memory(self, size: int, level: int) -> bool:
        """Whether a new object of ``size`` bytes and cache ``level`` may be kept in memory."""
        return (size <= MEMORY_OBJECT_MAX and level < LEVEL_FOREVER
                and self.memory_bytes + size <= MEMORY_TOTAL_MAX)

    def staging_path(self, name: str) -> str:
        """Where an incoming object is written before it enters the cache."""
        path = os.path.join(self.transfer_dir, check_component(name))
        remove_tree(path)
        return path

    def receiving_path(self, name: str) -> str:
        """Where the manager connection writes object ``name`` as it arrives: in place
        when it is new (``add`` then has nothing to move), else a staging path."""
        if name in self.objects:
            return self.staging_path(name)
        return self.path(name)

    def __contains__(self, name: str) -> bool:
        return name in self.objects

    def add(self, name: str, path: str, level: int, kind: int, start_us: int,
            transfer_id: str = "X", source: str = "manager") -> CacheUpdate:
        """Move ``path`` into the cache as ``name``; returns the ``cache-update`` to send."""
        dest = self.path(name)
        if name in self.objects:
            self.remove(name)
        if path != dest:
            try:
                os.rename(path, dest)
            except OSError:  # a leftover directory in the way
                remove_tree(dest)
                os.rename(path, dest)
        st = os.lstat(dest)
        size = st.st_size if stat.S_ISREG(st.st_mode) else tree_size(dest)
        duration = max(0, int(time.time() * 1e6) - start_us)
        entry = Entry(level, size, int(st.st_mtime), kind, duration, start_us, source,
                      time.monotonic())
        self.objects[name] = entry
        self.bytes += entry.size
        if level >= LEVEL_FOREVER:
            self._write_meta(name, st.st_mode, entry)
        return self.update_for(name, transfer_id)

    def add_bytes(self, name: str, data: bytes, mode: int, level: int, kind: int,
                  start_us: int, transfer_id: str = "X") -> CacheUpdate:
        """Keep ``data`` as object ``name`` in memory (the caller checked ``fits_in_memory``);
        returns the ``cache-update`` to send."""
        self.path(name)  # the same names as on disk are refused
        if name in self.objects:
            self.remove(name)
        now = time.time()
        entry = Entry(level, len(data), int(now), kind, max(0, int(now * 1e6) - start_us),
                      start_us, "manager", time.monotonic(), data, mode & 0o777)
        self.objects[name] = entry
        self.bytes += entry.size
        self.memory_bytes += entry.size
        return self.update_for(name, transfer_id)

    def update_for(self, name: str, transfer_id: str = "X") -> CacheUpdate:
        """The ``cache-update`` announcing object ``name`` (which must be present)."""
        e = self.objects[name]
        return CacheUpdate(name, e.type, e.level, e.size, e.mtime, e.duration, e.start_us,
                           transfer_id)

    def announcements(self) -> list[CacheUpdate]:
        """What a hello announces: every object kept from earlier sessions or processes."""
        return [self.update_for(name) for name in self.objects]

    def touch(self, name: str) -> None:
        """Note that a task uses object ``name`` now (for least-recently-used eviction)."""
        entry = self.objects.get(name)
        if entry is not None:
            entry.last_used = time.monotonic()

    def evictable(self, pinned: set[str]) -> list[tuple[str, int]]:
        """(name, size) of the ``workflow`` and ``worker`` objects not in ``pinned``, least
        recently used first: what may be deleted to make room."""
        candidates = [(e.last_used, name, e.size) for name, e in self.objects.items()
                      if LEVEL_WORKFLOW <= e.level <= LEVEL_WORKER and name not in pinned]
        return [(name, size) for _, name, size in sorted(candidates)]

    def remove(self, name: str) -> None:
        entry = self.objects.pop(name, None)
        if entry is not None:
            self.bytes -= entry.size
            if entry.data is not None:
                self.memory_bytes -= entry.size
                return
        path = self.path(name)
        remove_tree(path)
        if entry is None or entry.level >= LEVEL_FOREVER:
            remove_tree(path + META)

    def clear(self, max_level: int) -> None:
        """Remove every object whose level is at most ``max_level``."""
        for name in [n for n, e in self.objects.items() if e.level <= max_level]:
            self.remove(name)

    def keep_only_forever(self) -> bool:
        """At exit: delete all but ``forever`` objects; True if any object remains."""
        self.clear(LEVEL_WORKER)
        return bool(self.objects)

    def _write_meta(self, name: str, mode: int, e: Entry) -> None:
        """Write ``<name>.meta`` through a new file renamed into place: whatever is at that
        path (a link a peer planted, say) is replaced, never written through."""
        path = self.path(name) + META
        tmp = f"{path}.{os.getpid()}.tmp"
        remove_tree(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(f"type {e.type}\ncache_level {e.level}\nmode 0{mode:o}\nsize {e.size}\n"
                    f"mtime {e.mtime}\ntransfer_time {e.duration}\n"
                    f"transfer_start {e.start_us}\nsource {e.source}\n")
        remove_tree(path)  # a directory left there would make the rename fail
        os.replace(tmp, path)

    def _load(self) -> None:
        """Keep ``forever`` objects left by an earlier worker; delete everything else."""
        for entry in os.listdir(self.dir):
            if entry.endswith(META):
                continue
            meta = _read_meta(os.path.join(self.dir, entry + META))
            path = os.path.join(self.dir, entry)
            try:
                if meta is not None and int(meta["cache_level"]) >= LEVEL_FOREVER:
                    self.objects[entry] = Entry(
                        int(meta["cache_level"]), tree_size(path), int(meta["mtime"]),
                        int(meta["type"]), int(meta.get("transfer_time", 0)),
                        int(meta.get("transfer_start", 0)), meta.get("source", "manager"))
                    continue
            except (KeyError, ValueError, OSError):
                pass
            remove_tree(path)
            remove_tree(path + META)
        for entry in os.listdir(self.dir):  # metadata without an object
            if entry.endswith(META) and entry[:-len(META)] not in self.objects:
                remove_tree(os.path.join(self.dir, entry))


def _read_meta(path: str) -> dict[str, str] | None:
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW)) as f:
            return dict(line.rstrip("\n").partition(" ")[::2] for line in f if line.strip())
    except (OSError, UnicodeDecodeError):
        return None
