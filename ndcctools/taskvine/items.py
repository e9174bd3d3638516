"""Item streams on disk: turning a file tree into wire pieces, and wire events into a tree.

Both the manager (``put`` of inputs, receiving outputs) and the worker (receiving ``put``,
serving ``get``) move files, directories and symlinks as item streams (protocol spec §3.3).

``outgoing(path, name)`` walks a path and yields the pieces to send: ``bytes`` (item headers,
symlink targets, ``end``) and ``FileSegment``s (file contents, which the I/O layer sends with
``os.sendfile`` so that large files are never read into Python).

``ItemReceiver(dest)`` takes decoded events (``FileItem``, ``Data``, ``DirItem``, ``End``,
``SymlinkItem``, ``ErrorItem``) for one top-level item and writes it at ``dest``. Every name
is checked to be one plain path component, files are created without following links, and
directories are only created new, so a peer can never make us write outside ``dest``.
Symbolic links are recreated as they were sent, whatever their target (a virtualenv holds
absolute ones): writing a link never writes through it, and whoever later resolves a path
through one checks where it leads (the worker's sandboxes do). When writing fails (disk
full, a path that cannot be created) or the peer sends a name it must not (``..``, a
``/``), the receiver keeps following the stream without writing, so the connection stays
usable, and ``write_error`` says what went wrong. Only a broken stream (an ``end`` outside a
directory, content cut short) raises ``RemoteProtocolError``.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from .protocol import messages as m
from .protocol.errors import RemoteProtocolError


class UnsafeName(ValueError):
    """A name sent by a peer would escape the directory it must stay in."""


@dataclass(frozen=True, slots=True)
class FileSegment:
    """``length`` bytes of the file at ``path`` to be sent as item content.

    ``identity`` is the ``(st_dev, st_ino)`` the file had when its header was made: the
    content is read from that file only (see ``open_segment``).
    """

    path: str
    length: int
    identity: tuple[int, int]

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> FileSegment:
        return cls(path, st.st_size, (st.st_dev, st.st_ino))


def open_segment(seg: FileSegment) -> int:
    """A descriptor on the file ``seg`` was made from. The path is opened again when the
    content is sent, which may be much later: if by then it names something else (an object
    replaced by a link to a file elsewhere, a FIFO), ``OSError`` is raised rather than
    sending that other thing's bytes under the header already sent."""
    fd = os.open(seg.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != seg.identity:
        os.close(fd)
        raise OSError(errno.ESTALE, f"{seg.path} was replaced before it was sent")
    return fd


def check_component(name: str) -> str:
    """Return ``name`` if it is one plain path component, else raise ``UnsafeName``."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise UnsafeName(f"refused unsafe name {name!r}")
    return name


def check_relative(path: str) -> str:
    """Return ``path`` if it is relative and has no ``..`` component, else ``UnsafeName``."""
    if not path or path.startswith("/") or "\x00" in path:
        raise UnsafeName(f"refused unsafe path {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeName(f"refused unsafe path {path!r}")
    return "/".join(parts)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def remove_tree(path: str) -> None:
    """Remove a file, link or directory tree; a missing path is fine."""
    try:
        os.unlink(path)  # the common case first: one system call
    except (FileNotFoundError, NotADirectoryError):
        pass
    except (IsADirectoryError, PermissionError):
        shutil.rmtree(path, ignore_errors=True)


def tree_size(path: str) -> int:
    """Bytes of a tree as ``cache-update`` counts them: file sizes plus link lengths."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return len(os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return sum(tree_size(os.path.join(path, e)) for e in os.listdir(path))
    return st.st_size


def outgoing(path: str, name: str, follow_top: bool = True,
             mode: int = 0) -> Iterator[bytes | FileSegment]:
    """Pieces of the item stream for ``path`` sent under top-level ``name``.

    A missing or unreadable path yields an ``error`` item. Inner symlinks are sent as
    ``symlink`` items; the top level follows a symlink when ``follow_top``. A non-zero
    ``mode`` replaces the permission bits of a top-level file.
    """
    try:
        st = os.stat(path) if follow_top else os.lstat(path)
    except OSError as e:
        yield m.ErrorItem(name, e.errno or 2).encode()
        return
    yield from _outgoing(path, name, st, mode)


def outgoing_bytes(name: str, data: bytes, mode: int, mtime: int) -> Iterator[bytes]:
    """The item stream of a file held in memory."""
    yield m.FileItem(name, len(data), mode, mtime).encode()
    if data:
        yield data


def _outgoing(path: str, name: str, st: os.stat_result,
              mode_override: int = 0) -> Iterator[bytes | FileSegment]:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        yield m.SymlinkItem(name, os.readlink(path)).encode()
    elif stat.S_ISDIR(mode):
        yield m.DirItem(name, mode & 0o777, int(st.st_mtime)).encode()
        for entry in sorted(os.listdir(path)):
            child = os.path.join(path, entry)
            try:
                cst = os.lstat(child)
            except OSError as e:
                yield m.ErrorItem(entry, e.errno or 2).encode()
                continue
            yield from _outgoing(child, entry, cst)
        yield b"end\n"
    elif stat.S_ISREG(mode):
        perms = (mode_override or mode) & 0o777
        yield m.FileItem(name, st.st_size, perms, int(st.st_mtime)).encode()
        if st.st_size:
            yield FileSegment.of(path, st)
    else:
        yield m.ErrorItem(name, 22).encode()


_DISCARD = -2  # ``ItemReceiver._fd`` while following a file that cannot be written
_MEMORY = -3  # ``ItemReceiver._fd`` while collecting a top-level file in ``content``


ROOM_CHECK_MIN = 16 << 20  # files this large are checked against the free disk first


def _room_for(path: str, size: int) -> bool:
    """Whether the file system of ``path`` has ``size`` bytes free (small sizes: assumed)."""
    if size < ROOM_CHECK_MIN:
        return True
    try:
        st = os.statvfs(os.path.dirname(path) or ".")
    except OSError:
        return True  # the open that follows says what is wrong
    return size <= st.f_bavail * st.f_frsize


class ItemReceiver:
    """Writes one top-level item, fed event by event, at ``dest``.

    ``feed(event)`` returns ``True`` once the top-level item is complete. Afterwards
    ``error`` holds the ``ErrorItem`` the peer sent for the top level (nothing written),
    ``write_error`` why the item could not be written whole, and ``size`` the bytes
    received (file sizes plus link lengths). A top-level file of at most ``memory_max``
    bytes is not written but collected in ``content``.
    """

    def __init__(self, dest: str, memory_max: int = -1):
        self.dest = dest
        self.memory_max = memory_max
        self.content: bytearray | None = None
        self.size = 0
        self.mtime = 0
        self.mode = 0
        self.error: m.ErrorItem | None = None
        self.write_error: OSError | UnsafeName | None = None
        self._dirs: list[str | None] = []  # open directories, innermost last (None: refused)
        self._fd = -1  # the file being written, or _DISCARD once writing failed
        self._left = 0

    def _path_for(self, name: str) -> str | None:
        """Where item ``name`` goes; None (and ``write_error`` set) if it must not be written."""
        if not self._dirs:
            return self.dest
        parent = self._dirs[-1]
        try:
            return None if parent is None else os.path.join(parent, check_component(name))
        except UnsafeName as e:
            self._refuse(e)
            return None

    def _refuse(self, error: OSError | UnsafeName) -> None:
        """Stop writing: the rest of the stream is followed, not written."""
        if self.write_error is None:
            self.write_error = error

    def feed(self, event: object) -> bool:
        try:
            return self._feed(event)
        except OSError as e:  # nothing of ``event`` was accounted for: follow it unwritten
            self.abort()
            self._refuse(e)
            return self._feed(event)

    def _feed(self, event: object) -> bool:
        if self._fd != -1:
            return self._file_data(event)
        handler = self._HANDLERS.get(type(event))
        if handler is None:
            raise RemoteProtocolError(f"unexpected {type(event).__name__} in an item stream")
        return handler(self, event)

    def _file_item(self, ev: m.FileItem) -> bool:
        path = self._path_for(ev.name)
        self._note_top(ev.mode, ev.mtime)
        if not self._dirs and ev.size <= self.memory_max:
            self.content = bytearray()
            self._fd = _MEMORY
        elif self.write_error is None and not _room_for(path, ev.size):
            self._refuse(OSError(errno.ENOSPC, f"{ev.size} bytes announced for {ev.name!r}, "
                                 "more than the free disk"))
            self._fd = _DISCARD
        elif self.write_error is None:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                               (ev.mode & 0o777) or 0o644)
        else:
            self._fd = _DISCARD
        self._left = ev.size
        self.size += ev.size
        if ev.size == 0:
            return self._close_file()
        return False

    def _file_data(self, ev: object) -> bool:
        if not isinstance(ev, m.Data):
            raise RemoteProtocolError("item stream ended inside a file")
        if self._fd == _MEMORY:
            self.content += ev.chunk
        elif self._fd != _DISCARD:
            write_all(self._fd, ev.chunk)
        return self.advance(len(ev.chunk))

    @property
    def content_fd(self) -> int:
        """The file being written (-1 between files or once writing failed), for zero-copy
        receivers."""
        return self._fd if self._fd >= 0 else -1

    def advance(self, n: int) -> bool:
        """Account for ``n`` content bytes written into ``content_fd``; True once the
        top-level item is complete."""
        self._left -= n
        return self._left == 0 and self._close_file()

    def _close_file(self) -> bool:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        return not self._dirs

    def _dir_item(self, ev: m.DirItem) -> bool:
        path = self._path_for(ev.name)
        self._note_top(ev.mode, ev.mtime)
        if self.write_error is None:
            if not self._dirs and os.path.islink(path):
                os.unlink(path)  # never create the tree through a link left in the way
            os.makedirs(path, exist_ok=not self._dirs)
            os.chmod(path, (ev.mode & 0o777) | 0o700)
        self._dirs.append(path if self.write_error is None else None)
        return False

    def _end(self, ev: m.End) -> bool:
        if not self._dirs:
            raise RemoteProtocolError("'end' outside a directory")
        self._dirs.pop()
        return not self._dirs

    def _symlink(self, ev: m.SymlinkItem) -> bool:
        path = self._path_for(ev.name)
        if "\x00" in ev.target or not ev.target:
            self._refuse(UnsafeName(f"refused symlink {ev.name!r} -> {ev.target!r}"))
        if self.write_error is None:
            os.symlink(ev.target, path)
        self.size += len(ev.target.encode("utf-8", "surrogateescape"))
        return not self._dirs

    def _error(self, ev: m.ErrorItem) -> bool:
        if not self._dirs:
            self.error = ev
            return True
        return False  # an unreadable entry inside a directory is skipped

    def _note_top(self, mode: int, mtime: int) -> None:
        if not self._dirs:
            self.mode, self.mtime = mode, mtime

    def fail(self, error: OSError) -> None:
        """Writing failed outside ``feed`` (the caller writes file contents itself): stop
        writing; what is still to come is followed, not written."""
        self.abort()
        self._refuse(error)

    def abort(self) -> None:
        """Close what is open after a failure (the partial tree is the caller's to remove);
        the content still expected of the current file is then followed but not written."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = _DISCARD if self._left else -1

    _HANDLERS = {
        m.FileItem: _file_item,
        m.DirItem: _dir_item,
        m.End: _end,
        m.SymlinkItem: _symlink,
        m.ErrorItem: _error,
    }
