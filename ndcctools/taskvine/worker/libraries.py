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
"""

from __future__ import annotations

import json
import os
from typing import Any

from .. import protocol as p
from ..library_host import send, take_messages

EXEC_MODES = {1: "direct", 2: "fork"}
QUEUED_PER_SLOT = 8  # calls per slot sent to a library that queues them itself


class LibraryError(Exception):
    """The library broke the protocol (bad handshake or message)."""


class LibraryProcess:
    __slots__ = ("task_id", "name", "slots", "mode", "to_library", "from_library", "ready",
                 "calls", "depth", "_buffer")

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

    def invoke(self, call_id: int, function: str, sandbox: str, stdout: str, run: Any) -> None:
        send(self.to_library, f"{call_id} {function} {sandbox} {stdout}".encode())
        self.calls[call_id] = run

    def receive(self) -> tuple[list[tuple[int, int]], bool]:
        """Read what the library sent: ([(call id, status), ...] of finished calls, whether
        the pipe is closed). The first message must be the handshake."""
        try:
            data = os.read(self.from_library, 1 << 16)
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
            fields = payload.split()
            try:
                call_id, status = (int(f) for f in fields)
            except ValueError:
                raise LibraryError(f"library {self.name}: bad result message "
                                   f"{payload!r}") from None
            finished.append((call_id, status))
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
        self.ready = True

    def close(self) -> None:
        for fd in (self.to_library, self.from_library):
            if fd >= 0:
                os.close(fd)
        self.to_library = self.from_library = -1
