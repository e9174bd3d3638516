"""Task sandboxes: ``<workspace>/task.<id>/`` with inputs linked in from the cache.

Creating and deleting directories is what costs most per task on a journaling file system
(``rmdir`` takes about 0.5 ms on ext4, ``unlink`` of a link 20 µs, ``rename`` less). So a
finished sandbox is emptied of its top-level files and links (inputs linked in, outputs
left behind) and, when that leaves only its stdout file and an empty tmp directory, renamed
into a small pool (``SandboxPool``) and renamed back as the next task's sandbox; its stdout
file is truncated when the next process opens it. Anything else is deleted.

Every sandbox path the manager names is checked twice: lexically (relative, no ``..``) and
after resolving symlinks (it must still lie inside the sandbox), so neither the manager nor
the task itself (by leaving a symlink as an output) can make the worker read or write
outside its workspace.
"""

from __future__ import annotations

import os
import shutil

from ..items import UnsafeName, check_relative, remove_tree

STDOUT = ".taskvine.stdout"
TMP = ".taskvine.tmp"


class WorkspaceGuard:
    """Whether the workspace is still the directory the worker started with: the device and
    inode of it and of its ``cache/`` directory are noted at start and compared (two ``stat``
    calls) when the worker suspects trouble. A workspace deleted, or deleted and made again,
    under a running worker would otherwise fail every task it is given."""

    def __init__(self, workspace: str, cache_dir: str):
        self.paths = (workspace, cache_dir)
        self.identity = self._identity()

    def _identity(self) -> tuple[tuple[int, int], ...]:
        return tuple((st.st_dev, st.st_ino) for st in map(os.stat, self.paths))

    def trouble(self) -> str | None:
        """Why the workspace is no longer usable, or None if it still is."""
        for path, (dev, ino) in zip(self.paths, self.identity, strict=True):
            try:
                st = os.stat(path)
            except OSError as e:
                return f"workspace directory {path} is gone ({e.strerror})"
            if (st.st_dev, st.st_ino) != (dev, ino):
                return f"workspace directory {path} was replaced by another directory"
        return None


class SandboxPool:
    """Empty sandboxes kept for reuse, under ``<workspace>/trash/``, which the pool owns:
    whatever it finds there at start (spares of an earlier session or worker) is deleted.
    Nothing left on the disk by an earlier worker can make ``make`` or ``give_back`` fail:
    a rename that is refused falls back to deleting what is in the way, or the sandbox."""

    def __init__(self, workspace: str, size: int = 16):
        self.real_workspace = os.path.realpath(workspace)
        self.dir = os.path.join(workspace, "trash")
        if os.path.lexists(self.dir) and not os.path.isdir(self.dir):
            remove_tree(self.dir)
        os.makedirs(self.dir, exist_ok=True)
        for leftover in os.listdir(self.dir):
            remove_tree(os.path.join(self.dir, leftover))
        self.size = size
        self.spares: list[str] = []
        self._serial = 0

    def make(self, path: str) -> None:
        """Create the sandbox directory ``path`` (with its tmp directory), replacing
        anything left at ``path``."""
        while self.spares:
            spare = self.spares.pop()
            try:
                os.rename(spare, path)
                return
            except OSError:  # something in the way (or the spare is gone): clear it, retry
                remove_tree(path)
            try:
                os.rename(spare, path)
                return
            except OSError:
                remove_tree(spare)
        try:
            os.mkdir(path)
        except FileExistsError:
            remove_tree(path)
            os.mkdir(path)
        os.mkdir(os.path.join(path, TMP))

    def give_back(self, path: str) -> None:
        """Keep ``path`` for reuse if emptying its top level makes it pristine; else delete."""
        if len(self.spares) < self.size and _emptied(path):
            self._serial += 1
            spare = os.path.join(self.dir, f"spare.{self._serial}")
            try:
                os.rename(path, spare)
            except OSError:  # something in the way, or the trash is gone
                shutil.rmtree(path, ignore_errors=True)
                return
            self.spares.append(spare)
        else:
            shutil.rmtree(path, ignore_errors=True)

    def clear(self) -> None:
        for spare in self.spares:
            shutil.rmtree(spare, ignore_errors=True)
        self.spares.clear()


def _emptied(path: str) -> bool:
    """Unlink the files and links at the top of sandbox ``path``; True if that leaves only
    its stdout file and an empty tmp directory."""
    try:
        pristine = True
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name in (STDOUT, TMP):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pristine = False
                else:
                    os.unlink(entry.path)
        return pristine and not os.listdir(os.path.join(path, TMP))
    except OSError:
        return False


class Sandbox:
    __slots__ = ("path", "real", "pool", "identity")

    def __init__(self, root: str, name: str, pool: SandboxPool):
        self.path = os.path.join(root, name)
        self.pool = pool
        pool.make(self.path)
        self.real = os.path.join(pool.real_workspace, name)  # a directory we just made
        st = os.lstat(self.path)
        self.identity = (st.st_dev, st.st_ino)

    @property
    def stdout(self) -> str:
        return os.path.join(self.path, STDOUT)

    @property
    def tmp(self) -> str:
        return os.path.join(self.path, TMP)

    def _inside(self, rel: str) -> str:
        """The absolute path of ``rel``, refusing anything that leads outside the sandbox.
        A name directly in the sandbox only needs the sandbox to still be the directory we
        made (one ``lstat``); deeper paths are resolved."""
        rel = check_relative(rel)
        path = os.path.join(self.path, rel)
        if "/" not in rel:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) != self.identity:
                raise UnsafeName(f"refused sandbox path {rel!r}: the sandbox was replaced")
            return path
        parent = os.path.realpath(os.path.dirname(path))
        if parent != self.real and not parent.startswith(self.real + os.sep):
            raise UnsafeName(f"refused sandbox path {rel!r}: it leads outside the sandbox")
        return path

    def link_input(self, source: str, rel: str, symlink: bool) -> None:
        """Make cache object ``source`` appear at ``rel`` (hard links; symlink on request)."""
        dest = self._inside(rel)
        if "/" in rel.strip("/"):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            dest = self._inside(rel)  # again, now that the parents exist
        if symlink:
            os.symlink(source, dest)
        elif os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, dest, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, dest)

    def make_output_dir(self, rel: str) -> None:
        os.makedirs(self._inside(rel), exist_ok=True)

    def output_path(self, rel: str) -> str:
        """Where output ``rel`` will be (checked to lie inside the sandbox)."""
        return self._inside(rel)

    def output(self, rel: str) -> str | None:
        """The path of output ``rel`` if the task produced it inside the sandbox."""
        path = self._inside(rel)
        if not os.path.lexists(path):
            return None
        if os.path.islink(path):
            target = os.path.realpath(path)
            if target != self.real and not target.startswith(self.real + os.sep):
                raise UnsafeName(f"refused output {rel!r}: a symlink out of the sandbox")
        return path

    def remove(self) -> None:
        self.pool.give_back(self.path)

    def destroy(self) -> None:
        """Delete the sandbox without offering it for reuse."""
        shutil.rmtree(self.path, ignore_errors=True)


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, dest, follow_symlinks=False)
