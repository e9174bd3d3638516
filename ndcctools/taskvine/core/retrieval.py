"""Replies a worker owes the manager after a task completes (protocol spec §3.5).

Each class consumes the reply events of one request, in order, and tells the task record
what arrived. ``done()`` is called exactly once per reply, whether it completed or the
connection was lost, so the engine can count outstanding replies per task.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import psutil

from .. import cvine
from ..file import File
from ..items import ItemReceiver, remove_tree
from ..protocol import Data, End, ErrorItem, FileItem, RemoteProtocolError, Stdout, Update
from .connection import Reply
from .tasks import TaskRecord

Done = Callable[[TaskRecord, bool], None]
LARGE_BUFFER = 64 << 20  # buffers this large are checked against the free memory first


class StdoutReply(Reply):
    """``send_stdout`` → ``stdout <id> <len>`` + bytes (or ``error …``).

    The output streams in as ``Data`` events and is kept up to ``limit`` bytes
    (``max-task-stdout-storage``) in one growing buffer (a large one is a single mapping,
    given back whole when the task is dropped); the rest is read and dropped, and a task that
    succeeded then ends with ``stdout missing``, as upstream's does."""

    def __init__(self, rec: TaskRecord, limit: int, done: Done):
        self.rec, self.limit, self.done = rec, limit, done
        self.kept: bytearray | None = None
        self.received = 0
        self.size = 0

    def on_event(self, event: Any) -> bool:
        if self.kept is None:
            if isinstance(event, ErrorItem):
                self.rec.stdout = b""
                self.done(self.rec, True)
                return True
            if not isinstance(event, Stdout):
                raise RemoteProtocolError(f"expected stdout, got {type(event).__name__}")
            self.size = event.size
            self.kept = bytearray()
        elif isinstance(event, Data):
            room = self.limit - len(self.kept)
            if room > 0:
                self.kept += event.chunk[:room]
            self.received += len(event.chunk)
        else:
            raise RemoteProtocolError(f"stdout interrupted by {type(event).__name__}")
        if self.received < self.size:
            return False
        self.rec.stdout = self.kept
        if self.size > self.limit:
            self.rec.stdout_truncated = True
        self.done(self.rec, True)
        return True

    def on_lost(self) -> None:
        self.done(self.rec, False)


class OutputReply(Reply):
    """``get <cachename>`` → an item stream written to the output's local path.

    The tree is received next to its destination and renamed into place only when complete
    and as large as the worker announced (``expected`` bytes, from its ``cache-update``), so
    neither a lost connection nor a short transfer leaves a truncated output behind. An
    output that cannot be written here, or arrives short, is an output transfer error.
    """

    def __init__(self, rec: TaskRecord, path: str, expected: int | None, done: Done,
                 on_bytes: Callable[[int], None]):
        self.rec, self.path, self.expected = rec, path, expected
        self.done, self.on_bytes = done, on_bytes
        parent = os.path.dirname(os.path.abspath(path))
        self.partial = os.path.join(parent, f".{os.path.basename(path)}.vine-partial-{rec.task_id}")
        self.receiver = ItemReceiver(self.partial)
        try:
            os.makedirs(parent, exist_ok=True)
            remove_tree(self.partial)
        except OSError as e:
            self.receiver.write_error = e  # follow the stream without writing

    def on_event(self, event: Any) -> bool:
        try:
            finished = self.receiver.feed(event)
        except RemoteProtocolError as e:
            self.receiver.abort()
            remove_tree(self.partial)
            raise RemoteProtocolError(f"bad output stream for task {self.rec.task_id}: {e}") from e
        if not finished:
            return False
        received = self.receiver
        if received.error is not None:
            self.rec.output_missing = True
        elif received.write_error is not None:
            self._fail(f"cannot write {self.path}: {received.write_error}")
        elif self.expected is not None and received.size != self.expected:
            self._fail(f"{self.path}: {received.size} bytes arrived, the worker announced "
                       f"{self.expected}")
        else:
            try:
                if os.path.isdir(self.path) and not os.path.islink(self.path):
                    shutil.rmtree(self.path)
                os.replace(self.partial, self.path)
                self.on_bytes(received.size)
            except OSError as e:
                self._fail(f"cannot write {self.path}: {e}")
        self.done(self.rec, True)
        return True

    def _fail(self, why: str) -> None:
        remove_tree(self.partial)
        self.rec.output_error = why

    def on_lost(self) -> None:
        self.receiver.abort()
        remove_tree(self.partial)
        self.done(self.rec, False)


class BufferReply(Reply):
    """``getfile <cachename>`` → one ``file`` item kept in memory on the ``File``."""

    def __init__(self, rec: TaskRecord, file: File, done: Done,
                 on_bytes: Callable[[int], None]):
        self.rec, self.file, self.done, self.on_bytes = rec, file, done, on_bytes
        self.chunks: list[bytes] = []
        self.left = -1

    def on_event(self, event: Any) -> bool:
        if self.left < 0:
            if isinstance(event, ErrorItem):
                self.rec.output_missing = True
                self.done(self.rec, True)
                return True
            if not isinstance(event, FileItem):
                raise RemoteProtocolError(f"expected a file item, got {type(event).__name__}")
            if event.size > LARGE_BUFFER and event.size > psutil.virtual_memory().available:
                raise RemoteProtocolError(f"a buffer of {event.size} bytes announced, more "
                                          "than the free memory")
            self.left = event.size
        elif isinstance(event, Data):
            self.chunks.append(event.chunk)
            self.left -= len(event.chunk)
        else:
            raise RemoteProtocolError("buffer stream interrupted")
        if self.left:
            return False
        self.file._data = b"".join(self.chunks)
        self.on_bytes(len(self.file._data))
        self.done(self.rec, True)
        return True

    def on_lost(self) -> None:
        self.done(self.rec, False)


class ResultsReply(Reply):
    """``send_results`` → ``update`` items then ``end``: each update is the new tail of a
    watched output of a running task, written at its offset into the local file."""

    def __init__(self, tasks: dict[int, TaskRecord], log: Callable[[str], None]):
        self.tasks, self.log = tasks, log

    def on_event(self, event: Any) -> bool:
        if isinstance(event, End):
            return True
        if not isinstance(event, Update):
            raise RemoteProtocolError(f"expected update or end, got {type(event).__name__}")
        rec = self.tasks.get(event.task_id)
        mount = None if rec is None else next(
            (m for m in rec.task._outputs if m.remote_name == event.path
             and m.flags & cvine.VINE_WATCH and m.file._type == cvine.VINE_FILE), None)
        if mount is None:
            self.log(f"update for {event.path!r} of task {event.task_id}: not a watched output")
            return False
        try:
            with open(mount.file._source, "r+b" if os.path.exists(mount.file._source) else "wb") \
                    as f:
                f.seek(event.offset)
                f.write(event.data)
        except OSError as e:
            self.log(f"watched output {mount.file._source}: {e}")
        return False

