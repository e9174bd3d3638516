"""Library processes on the worker: the worker's end of the library protocol (spec §9).

A library is a task whose body says ``provides_library NAME``. The worker starts its command
with two pipes and extra arguments::

    <command> --in-pipe-fd A --out-pipe-fd B --task-id ID --library-cores C
              --function-slots S --worker-pid P

Every message either way is ``<len>\\n<payload>``. The library first sends a JSON handshake
``{"name", "taskid", "exec_mode"}`` on B; once it matches, the library is *ready* and may
receive up to S calls at a time on A (``<call id> <function> <sandbox> <stdout file>``), or
more when its handshake says ``queues_calls`` (ours does: then it never waits for the worker
between calls); each ends with ``<call id> <status>`` on B. ``LibraryProcess`` owns one such
process: its pipes, the framing, the handshake and the calls it is running. The session
starts and reaps the process like any task and asks this class everything else.

A handshake with ``inline_io`` (ours) lets the worker pass a call's ``infile`` inside the
invocation and take its ``outfile`` inside the result (see ``library_host``), so neither
touches the disk. Writes to A must not fill the pipe (64 KiB): a direct-mode library reads A
only between calls, and a worker blocked on A would stop reading B, where the library may be
blocked writing a result. So inline arguments are only sent while those of the calls the
library holds stay under ``INLINE_BUDGET``; with the headers of at most 8 queued calls that
leaves the pipe half empty. (A fork-mode library reads A as calls arrive.)
"""

from __future__ import annotations

import json
import os
from typing import Any

from .. import protocol as p
from ..library_host import send, take_messages

EXEC_MODES = {1: "direct", 2: "fork"}
QUEUED_PER_SLOT = 8  # calls per slot sent to a library that queues them itself
INLINE_BUDGET = 32 << 10  # bytes of inline arguments a library may hold unread


class LibraryError(Exception):
    """The library broke the protocol (bad handshake or message)."""


class LibraryProcess:
    __slots__ = ("task_id", "name", "slots", "mode", "to_library", "from_library", "ready",
                 "calls", "depth", "inline", "inline_bytes", "_buffer")

    def __init__(self, task_id: int, body: p.TaskBody, cores: int):
        self.task_id = task_id
        self.name = body.provides_library
        mode = body.func_exec_mode or 0
        self.mode = EXEC_MODES.get(mode)
        slots = body.function_slots or cores or 1
        self.slots = 1 if self.mode == "direct" else max(1, slots)
        self.to_library = -1  # write end of pipe A
        self.from_library = -1  # read end of pipe B
        self.ready = False
        self.depth = self.slots  # calls it may hold at once (more if it queues them itself)
        self.calls: dict[int, Any] = {}  # call id -> the call's TaskRun
        self.inline = False  # whether it takes inline calls
        self.inline_bytes: dict[int, int] = {}  # call id -> its inline argument bytes
        self._buffer = bytearray()

    def open_pipes(self) -> tuple[int, int]:
        """Create the pipes; returns the library's ends (A to read, B to write), which the
        caller passes to the process and then closes."""
        a_read, a_write = os.pipe()
        b_read, b_write = os.pipe()
        os.set_inheritable(a_read, True)
        os.set_inheritable(b_write, True)
        os.set_blocking(b_read, False)
        self.to_library, self.from_library = a_write, b_read
        return a_read, b_write

    def arguments(self, a: int, b: int, cores: int, worker_pid: int) -> str:
        return (f" --in-pipe-fd {a} --out-pipe-fd {b} --task-id {self.task_id} "
                f"--library-cores {cores} --function-slots {self.slots} "
                f"--worker-pid {worker_pid}")

    @property
    def free_slots(self) -> int:
        return self.depth - len(self.calls) if self.ready else 0

    def takes_inline(self, size: int) -> bool:
        """Whether a call with ``size`` bytes of arguments may pass them inline now."""
        return self.inline and sum(self.inline_bytes.values()) + size <= INLINE_BUDGET

    def invoke(self, call_id: int, function: str, sandbox: str, stdout: str, run: Any,
               args: bytes | None = None) -> None:
        """Send a call; ``args``, the content of its infile, inline (see ``takes_inline``)."""
        head = f"{call_id} {function} {sandbox} {stdout}".encode()
        if args is not None:
            self.inline_bytes[call_id] = len(args)
            head += b"\n" + args
        send(self.to_library, head)
        self.calls[call_id] = run

    def receive(self) -> tuple[list[tuple[int, int, bytes | None]], bool]:
        """Read what the library sent: ([(call id, status, inline outfile or None), ...] of
        finished calls, whether the pipe is closed). The first message must be the
        handshake."""
        try:
            data = os.read(self.from_library, 1 << 20)
        except BlockingIOError:
            return [], False
        if not data:
            return [], True
        self._buffer += data
        try:
            messages = take_messages(self._buffer)
        except ValueError:
            raise LibraryError(f"library {self.name}: bad message header "
                               f"{bytes(self._buffer[:40])!r}") from None
        finished = []
        for payload in messages:
            if not self.ready:
                self._handshake(payload)
                continue
            head, inline, content = payload.partition(b"\n")
            try:
                call_id, status = (int(f) for f in head.split())
            except ValueError:
                raise LibraryError(f"library {self.name}: bad result message "
                                   f"{payload[:80]!r}") from None
            self.inline_bytes.pop(call_id, None)
            finished.append((call_id, status, content if inline else None))
        return finished, False

    def _handshake(self, payload: bytes) -> None:
        try:
            info = json.loads(payload)
            name, task_id, mode = info["name"], int(info["taskid"]), info.get("exec_mode")
        except (ValueError, KeyError, TypeError):
            raise LibraryError(f"library {self.name}: bad handshake {payload[:80]!r}") from None
        if name != self.name or task_id != self.task_id:
            raise LibraryError(f"library handshake names {name!r} task {task_id}, expected "
                               f"{self.name!r} task {self.task_id}")
        if self.mode is not None and mode != self.mode:
            raise LibraryError(f"library {self.name} runs in {mode!r} mode, not {self.mode!r}")
        if info.get("queues_calls") is True:
            self.depth = self.slots * QUEUED_PER_SLOT
        self.inline = info.get("inline_io") is True
        self.ready = True

    def close(self) -> None:
        for fd in (self.to_library, self.from_library):
            if fd >= 0:
                os.close(fd)
        self.to_library = self.from_library = -1
