"""Task sandboxes: ``<workspace>/task.<id>/`` with inputs linked in from the cache.

Every sandbox path the manager names is checked twice: lexically (relative, no ``..``) and
after resolving symlinks (it must still lie inside the sandbox), so neither the manager nor
the task itself (by leaving a symlink as an output) can make the worker read or write
outside its workspace.
"""

from __future__ import annotations

import os
import shutil

from ..items import UnsafeName, check_relative

STDOUT = ".taskvine.stdout"
TMP = ".taskvine.tmp"


class Sandbox:
    __slots__ = ("path", "real")

    def __init__(self, root: str, name: str):
        self.path = os.path.join(root, name)
        os.mkdir(self.path)
        os.mkdir(os.path.join(self.path, TMP))
        self.real = os.path.realpath(self.path)

    @property
    def stdout(self) -> str:
        return os.path.join(self.path, STDOUT)

    @property
    def tmp(self) -> str:
        return os.path.join(self.path, TMP)

    def _inside(self, rel: str) -> str:
        """The absolute path of ``rel``, refusing anything that leads outside the sandbox."""
        path = os.path.join(self.path, check_relative(rel))
        parent = os.path.realpath(os.path.dirname(path))
        if parent != self.real and not parent.startswith(self.real + os.sep):
            raise UnsafeName(f"refused sandbox path {rel!r}: it leads outside the sandbox")
        return path

    def link_input(self, source: str, rel: str, symlink: bool) -> None:
        """Make cache object ``source`` appear at ``rel`` (hard links; symlink on request)."""
        dest = self._inside(rel)
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
        """Delete the sandbox; the common case (stdout and empty tmp) without a tree walk."""
        try:
            os.unlink(os.path.join(self.path, STDOUT))
            os.rmdir(os.path.join(self.path, TMP))
            os.rmdir(self.path)
        except OSError:
            shutil.rmtree(self.path, ignore_errors=True)


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, dest, follow_symlinks=False)
