"""File: a handle on a file declared on the manager (api.md §4.3).

Users never build a ``File`` themselves: ``Manager.declare_file``/``declare_buffer`` do. The
``File`` holds the declaration (type, source, cache name, cache level, flags, mode) and, for
buffers and fetched files, the bytes the manager has in memory. Where replicas of it live on
workers is the manager core's business (``core.files``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from . import cvine

CACHE_LEVELS = {None: 0, False: 0, "task": 0, True: 1, "workflow": 1, "worker": 2, "forever": 3}


def cache_level(cache: Any) -> int:
    """The cache level of a ``cache=`` argument (api.md §4.1)."""
    try:
        return CACHE_LEVELS[cache]
    except (KeyError, TypeError):
        raise ValueError(f"{cache} is not a valid cache level") from None


class File:
    """A declared file, buffer, URL or temporary."""

    __slots__ = ("_type", "_source", "_cachename", "_level", "_flags", "_mode", "_size",
                 "_data", "_manager", "_minitask", "__weakref__")

    def __init__(self, file_type: int, source: str, cachename: str, level: int, flags: int,
                 size: int = 0, data: bytes | None = None, mode: int = 0):
        self._type = file_type
        self._source = source
        self._cachename = cachename
        self._level = level
        self._flags = flags
        self._mode = mode
        self._size = size
        self._data = data
        self._manager = None
        self._minitask: Any = None  # the Task that builds a mini-task file on the worker

    def source(self) -> str:
        """The local path of a file; ``"buffer"``, ``"temp"`` or the URL for the others."""
        return self._source

    def type(self) -> int:
        return self._type

    @property
    def cachename(self) -> str:
        return self._cachename

    def set_mode(self, mode: int) -> None:
        """Unix permission bits the file gets in task sandboxes (e.g. ``0o755``)."""
        if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ValueError(f"invalid mode {mode!r}: give permission bits such as 0o755")
        self._mode = mode

    def contents(self, unserializer: Callable[[Any], Any] | None = None) -> Any:
        """The bytes of a buffer, of a local file, or of a file fetched from a worker."""
        data = self._read()
        if unserializer is not None:
            return unserializer(io.BytesIO(data))
        return data

    def _read(self) -> bytes:
        if self._type == cvine.VINE_FILE:
            with open(self._source, "rb") as f:
                return f.read()
        if self._data is not None:
            return self._data
        if self._type == cvine.VINE_BUFFER:
            return b""
        raise ValueError(f"the contents of {self._source!r} are not on the manager; "
                         "use Manager.fetch_file() to bring them back first")

    def __len__(self) -> int:
        if self._data is not None:
            return len(self._data)
        return max(0, self._size)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<File {self._cachename} {self._source!r}>"
