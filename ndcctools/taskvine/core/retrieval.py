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

from ..file import File
from ..items import ItemReceiver, UnsafeName, remove_tree
from ..protocol import Data, End, ErrorItem, FileItem, RemoteProtocolError, Stdout
from .connection import Reply
from .tasks import TaskRecord

Done = Callable[[TaskRecord, bool], None]


class StdoutReply(Reply):
    """``send_stdout`` → ``stdout <id> <len>`` + bytes (or ``error …``)."""

    def __init__(self, rec: TaskRecord, limit: int, done: Done):
        self.rec, self.limit, self.done = rec, limit, done

    def on_event(self, event: Any) -> bool:
        if isinstance(event, Stdout):
            self.rec.stdout = event.data[:self.limit]
        elif isinstance(event, ErrorItem):
            self.rec.stdout = b""
        else:
            raise RemoteProtocolError(f"expected stdout, got {type(event).__name__}")
        self.done(self.rec, True)
        return True

    def on_lost(self) -> None:
        self.done(self.rec, False)


class OutputReply(Reply):
    """``get <cachename>`` → an item stream written to the output's local path.

    The tree is received next to its destination and renamed into place only when complete,
    so a lost connection never leaves a truncated output behind.
    """

    def __init__(self, rec: TaskRecord, path: str, done: Done, on_bytes: Callable[[int], None]):
        self.rec, self.path, self.done, self.on_bytes = rec, path, done, on_bytes
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self.partial = os.path.join(parent, f".{os.path.basename(path)}.vine-partial-{rec.task_id}")
        remove_tree(self.partial)
        self.receiver = ItemReceiver(self.partial)

    def on_event(self, event: Any) -> bool:
        try:
            finished = self.receiver.feed(event)
        except (UnsafeName, OSError) as e:
            self.receiver.abort()
            remove_tree(self.partial)
            raise RemoteProtocolError(f"bad output stream for task {self.rec.task_id}: {e}") from e
        if not finished:
            return False
        if self.receiver.error is not None:
            self.rec.output_missing = True
        else:
            if os.path.isdir(self.path) and not os.path.islink(self.path):
                shutil.rmtree(self.path)
            os.replace(self.partial, self.path)
            self.on_bytes(self.receiver.size)
        self.done(self.rec, True)
        return True

    def on_lost(self) -> None:
        self.receiver.abort()
        remove_tree(self.partial)
        self.done(self.rec, False)


class BufferReply(Reply):
    """``getfile <cachename>`` → one ``file`` item kept in memory on the ``File``."""

    def __init__(self, rec: TaskRecord, file: File, done: Done):
        self.rec, self.file, self.done = rec, file, done
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
            self.left = event.size
        elif isinstance(event, Data):
            self.chunks.append(event.chunk)
            self.left -= len(event.chunk)
        else:
            raise RemoteProtocolError("buffer stream interrupted")
        if self.left:
            return False
        self.file._data = b"".join(self.chunks)
        self.done(self.rec, True)
        return True

    def on_lost(self) -> None:
        self.done(self.rec, False)


class ResultsReply(Reply):
    """``send_results`` → ``update`` items (watched outputs, issue 3) then ``end``."""

    def on_event(self, event: Any) -> bool:
        return isinstance(event, End)

