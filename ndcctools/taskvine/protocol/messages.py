"""One frozen dataclass per protocol-13 message, each able to encode itself.

``encode()`` returns the exact wire bytes: the header line and, for messages that carry one,
the payload, never split. Names that the protocol url-encodes (sandbox paths, item names,
features, URLs) are held decoded here and encoded by ``encode()``; cache names, category and
library names travel as they are and must not contain whitespace.

Numbers are formatted the way upstream prints them (``cores 1.000``, ``wall_time 60.000000``,
``cores 4.000000`` in a resources block) so that traces compare byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import LocalProtocolError
from .urlcode import encode as _url

PROTOCOL_VERSION = 13
INLINE_STDOUT_MAX = 1024
LINE_MAX = 4096
_WHITESPACE = re.compile(r"\s")


def _token(value: str) -> str:
    """A field sent unencoded: refuse whitespace, which would split it."""
    if not value or _WHITESPACE.search(value):
        raise LocalProtocolError(f"cannot send {value!r} as a protocol field")
    return value


def _mode(mode: int) -> str:
    return f"0{mode & 0o777:o}"


# --------------------------------------------------------------------------- items (both ways)


@dataclass(frozen=True, slots=True)
class FileItem:
    """``file <name> <size> <mode> <mtime>``; exactly ``size`` content bytes follow."""

    name: str
    size: int
    mode: int = 0o644
    mtime: int = 0

    def encode(self) -> bytes:
        return f"file {_url(self.name)} {self.size} {_mode(self.mode)} {self.mtime}\n".encode()


@dataclass(frozen=True, slots=True)
class DirItem:
    """``dir <name> <mode> <mtime>``; items inside follow, closed by ``End``."""

    name: str
    mode: int = 0o755
    mtime: int = 0

    def encode(self) -> bytes:
        return f"dir {_url(self.name)} {_mode(self.mode)} {self.mtime}\n".encode()


@dataclass(frozen=True, slots=True)
class SymlinkItem:
    """``symlink <name> <len>`` + the link target."""

    name: str
    target: str

    def encode(self) -> bytes:
        target = self.target.encode("utf-8", "surrogateescape")
        return f"symlink {_url(self.name)} {len(target)}\n".encode() + target


@dataclass(frozen=True, slots=True)
class ErrorItem:
    """``error <name> <errno>``: the object could not be read. Also the error reply to
    ``send_stdout`` (there ``name`` holds free text)."""

    name: str
    errno: int

    def encode(self) -> bytes:
        return f"error {_url(self.name)} {self.errno}\n".encode()


@dataclass(frozen=True, slots=True)
class End:
    """``end``: closes a ``dir``, a ``send_results`` reply (and, inside the codec, bodies)."""

    def encode(self) -> bytes:
        return b"end\n"


@dataclass(frozen=True, slots=True)
class Data:
    """Content bytes of the current ``file`` item (decoder output only)."""

    chunk: bytes

    def encode(self) -> bytes:
        return bytes(self.chunk)


# --------------------------------------------------------------------------- manager -> worker


@dataclass(frozen=True, slots=True)
class Mount:
    """An ``infile``/``outfile`` line: cache object ``cachename`` at sandbox ``path``."""

    cachename: str
    path: str
    flags: int = 0


MONITOR_INFO = "monitor"  # ``info monitor 1``: this worker measures tasks itself


@dataclass(frozen=True, slots=True)
class Monitor:
    """``monitor <interval> <watchdog> <series>`` in a task body (our extension): measure the
    task, sampling every ``interval`` seconds; with ``watchdog``, stop it when it goes over
    its allocation; with ``series``, report every sample. The worker answers with a
    ``measured`` message before the task's ``complete``."""

    interval: float = 5.0
    watchdog: bool = True
    series: bool = False

    def line(self) -> str:
        return f"monitor {self.interval:.3f} {int(self.watchdog)} {int(self.series)}\n"


@dataclass(frozen=True, slots=True)
class Measured:
    """``measured <task_id> <len>`` + a JSON object: what a task used (our extension, the
    answer to a task body's ``monitor`` line; sent before the task's ``complete``)."""

    task_id: int
    summary: bytes

    def encode(self) -> bytes:
        return b"measured %d %d\n" % (self.task_id, len(self.summary)) + self.summary


@dataclass(frozen=True, slots=True)
class TaskBody:
    """The lines of a ``task``/``mini_task`` body. ``None`` means the line is not sent."""

    command: str = ""
    category: str = "default"
    cores: float | None = None
    gpus: int | None = None
    memory: int | None = None
    disk: int | None = None
    end_time: float | None = None
    wall_time: float | None = None
    env: tuple[str, ...] = ()
    infiles: tuple[Mount, ...] = ()
    outfiles: tuple[Mount, ...] = ()
    needs_library: str | None = None
    provides_library: str | None = None
    function_slots: int | None = None
    func_exec_mode: int | None = None
    groupid: int | None = None
    monitor: Monitor | None = None  # our extension: only to workers that announce MONITOR_INFO

    def encode(self) -> bytes:
        cmd = self.command.encode("utf-8", "surrogateescape")
        parts = [b"cmd %d\n" % len(cmd), cmd]
        lines = []
        if self.needs_library is not None:
            lines.append(f"needs_library {_token(self.needs_library)}\n")
        if self.provides_library is not None:
            lines.append(f"provides_library {_token(self.provides_library)}\n")
        if self.function_slots is not None:
            lines.append(f"function_slots {self.function_slots}\n")
        if self.func_exec_mode is not None:
            lines.append(f"func_exec_mode {self.func_exec_mode}\n")
        lines.append(f"category {_token(self.category)}\n")
        if self.cores is not None:
            lines.append(f"cores {self.cores:.3f}\n")
        if self.gpus is not None:
            lines.append(f"gpus {self.gpus}\n")
        if self.memory is not None:
            lines.append(f"memory {self.memory}\n")
        if self.disk is not None:
            lines.append(f"disk {self.disk}\n")
        if self.end_time:
            lines.append(f"end_time {self.end_time:.6f}\n")
        if self.wall_time:
            lines.append(f"wall_time {self.wall_time:.6f}\n")
        if self.monitor is not None:
            lines.append(self.monitor.line())
        parts.append("".join(lines).encode())
        for var in self.env:
            raw = var.encode("utf-8", "surrogateescape")
            parts += [b"env %d\n" % len(raw), raw, b"\n"]
        tail = [f"infile {_token(m.cachename)} {_url(m.path)} {m.flags}\n" for m in self.infiles]
        tail += [f"outfile {_token(m.cachename)} {_url(m.path)} {m.flags}\n" for m in self.outfiles]
        if self.groupid is not None:
            tail.append(f"groupid {self.groupid}\n")
        tail.append("end\n")
        parts.append("".join(tail).encode())
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class TaskMsg:
    """``task <id>`` + body: run a task."""

    task_id: int
    body: TaskBody

    def encode(self) -> bytes:
        return b"task %d\n" % self.task_id + self.body.encode()


@dataclass(frozen=True, slots=True)
class MiniTaskMsg:
    """``mini_task <outname> <cachename> <level> <size> <mode>`` + body: a recipe that
    produces cache object ``cachename`` from ``outname`` in its sandbox."""

    outname: str
    cachename: str
    level: int
    size: int
    mode: int
    body: TaskBody

    def encode(self) -> bytes:
        head = (f"mini_task {_token(self.outname)} {_token(self.cachename)} {self.level} "
                f"{self.size} {_mode(self.mode)}\n")
        return head.encode() + self.body.encode()


@dataclass(frozen=True, slots=True)
class Put:
    """``put <cachename> <level> <size>``; one item stream follows."""

    cachename: str
    level: int
    size: int

    def encode(self) -> bytes:
        return f"put {_token(self.cachename)} {self.level} {self.size}\n".encode()


@dataclass(frozen=True, slots=True)
class PutUrl:
    """``puturl``/``puturl_now <url> <cachename> <level> <size> <mode> <transfer_id>``."""

    url: str
    cachename: str
    level: int
    size: int
    mode: int
    transfer_id: str
    now: bool = False

    def encode(self) -> bytes:
        verb = "puturl_now" if self.now else "puturl"
        return (f"{verb} {_url(self.url)} {_token(self.cachename)} {self.level} {self.size} "
                f"{_mode(self.mode)} {_token(self.transfer_id)}\n").encode()


@dataclass(frozen=True, slots=True)
class Get:
    """``get <cachename>``: reply with the item stream of that object."""

    cachename: str

    def encode(self) -> bytes:
        return f"get {_token(self.cachename)}\n".encode()


@dataclass(frozen=True, slots=True)
class GetFile:
    """``getfile <cachename>``: reply with a single ``file`` item (or ``error``)."""

    cachename: str

    def encode(self) -> bytes:
        return f"getfile {_token(self.cachename)}\n".encode()


@dataclass(frozen=True, slots=True)
class Unlink:
    cachename: str

    def encode(self) -> bytes:
        return f"unlink {_token(self.cachename)}\n".encode()


@dataclass(frozen=True, slots=True)
class Kill:
    """``kill <id>``: remove the task and its sandbox; a negative id means every task."""

    task_id: int

    def encode(self) -> bytes:
        return b"kill %d\n" % self.task_id


@dataclass(frozen=True, slots=True)
class SendStdout:
    task_id: int

    def encode(self) -> bytes:
        return b"send_stdout %d\n" % self.task_id


@dataclass(frozen=True, slots=True)
class SendResults:
    count: int = -1

    def encode(self) -> bytes:
        return b"send_results %d\n" % self.count


@dataclass(frozen=True, slots=True)
class Check:
    def encode(self) -> bytes:
        return b"check\n"


@dataclass(frozen=True, slots=True)
class Release:
    def encode(self) -> bytes:
        return b"release\n"


@dataclass(frozen=True, slots=True)
class Exit:
    def encode(self) -> bytes:
        return b"exit\n"


@dataclass(frozen=True, slots=True)
class TransferSecret:
    """``transfer-secret <hex>`` (ours, sent only to workers of ours that asked with ``info
    transfer-auth``): the run's secret that peers must prove they hold (``security.py``)."""

    secret: str

    def encode(self) -> bytes:
        return f"transfer-secret {_token(self.secret)}\n".encode()


# --------------------------------------------------------------------------- worker -> manager


@dataclass(frozen=True, slots=True)
class Hello:
    """``taskvine <protocol> <hostname> <os> <arch> <version>``: first line of a worker."""

    protocol: int
    hostname: str
    os: str
    arch: str
    version: str

    def encode(self) -> bytes:
        fields = (self.hostname, self.os, self.arch, self.version)
        return f"taskvine {self.protocol} {' '.join(map(_token, fields))}\n".encode()


@dataclass(frozen=True, slots=True)
class Info:
    """``info <key> <value…>`` (upstream needs a value; we read the bare form too)."""

    key: str
    value: str = ""

    def encode(self) -> bytes:
        if not self.value:
            raise LocalProtocolError(f"info {self.key} needs a value")
        return f"info {_token(self.key)} {self.value}\n".encode()


@dataclass(frozen=True, slots=True)
class CacheUpdate:
    """``cache-update``: an object is ready in the worker cache."""

    cachename: str
    type: int
    level: int
    size: int
    mtime: int
    duration_us: int
    start_us: int
    transfer_id: str = "X"

    def encode(self) -> bytes:
        return (f"cache-update {_token(self.cachename)} {self.type} {self.level} {self.size} "
                f"{self.mtime} {self.duration_us} {self.start_us} {self.transfer_id}\n").encode()


@dataclass(frozen=True, slots=True)
class CacheInvalid:
    """``cache-invalid <cachename> <len> [<transfer_id>]`` + error text."""

    cachename: str
    text: str
    transfer_id: str | None = None

    def encode(self) -> bytes:
        raw = self.text.encode("utf-8", "replace")
        tid = f" {_token(self.transfer_id)}" if self.transfer_id else ""
        return f"cache-invalid {_token(self.cachename)} {len(raw)}{tid}\n".encode() + raw


@dataclass(frozen=True, slots=True)
class Feature:
    name: str

    def encode(self) -> bytes:
        return f"feature {_url(self.name)}\n".encode()


@dataclass(frozen=True, slots=True)
class TransferPort:
    port: int

    def encode(self) -> bytes:
        return b"transfer-port %d\n" % self.port


@dataclass(frozen=True, slots=True)
class TransferHostPort:
    host: str
    port: int

    def encode(self) -> bytes:
        return f"transfer-hostport {_token(self.host)} {self.port}\n".encode()


@dataclass(frozen=True, slots=True)
class Alive:
    def encode(self) -> bytes:
        return b"alive\n"


@dataclass(frozen=True, slots=True)
class AvailableResults:
    def encode(self) -> bytes:
        return b"available_results\n"


@dataclass(frozen=True, slots=True)
class Resources:
    """The ``resources`` … ``end`` block: totals of a worker, plus ``tag`` (last task id)."""

    cores: int
    memory: int
    disk: int
    gpus: int = 0
    workers: int = 1
    tag: int = 0
    extra: dict[str, float] = field(default_factory=dict, compare=False)

    def encode(self) -> bytes:
        return (f"resources\ncores {self.cores:f}\nmemory {self.memory:f}\ndisk {self.disk:f}\n"
                f"gpus {self.gpus:f}\nworkers {self.workers:f}\ntag {self.tag}\nend\n").encode()


@dataclass(frozen=True, slots=True)
class Complete:
    """``complete <result> <exit> <len> <inline_len> <start_us> <end_us> <sandbox_MB> <id>``,
    followed by ``inline_stdout`` when the whole output fits inline (0 < len <= 1024)."""

    result: int
    exit_code: int
    output_length: int
    start_us: int
    end_us: int
    sandbox_mb: int
    task_id: int
    inline_stdout: bytes = b""

    def encode(self) -> bytes:
        inline = self.inline_stdout
        return (b"complete %d %d %d %d %d %d %d %d\n" % (
            self.result, self.exit_code, self.output_length, len(inline), self.start_us,
            self.end_us, self.sandbox_mb, self.task_id)) + inline


@dataclass(frozen=True, slots=True)
class Stdout:
    """``stdout <id> <len>``: reply to ``send_stdout``; exactly ``size`` bytes of output
    follow (decoded as ``Data`` events, like a file's content: it may be large)."""

    task_id: int
    size: int

    def encode(self) -> bytes:
        return b"stdout %d %d\n" % (self.task_id, self.size)


@dataclass(frozen=True, slots=True)
class Update:
    """``update <id> <path> <offset> <len>`` + bytes: new tail of a watched output."""

    task_id: int
    path: str
    offset: int
    data: bytes

    def encode(self) -> bytes:
        head = f"update {self.task_id} {_token(self.path)} {self.offset} {len(self.data)}\n"
        return head.encode() + self.data


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """A status client's first line (``worker_status``, ``task_status``, …)."""

    kind: str

    def encode(self) -> bytes:
        return f"{self.kind}\n".encode()


@dataclass(frozen=True, slots=True)
class HttpGet:
    """``GET <path> HTTP/1.x`` from a browser or ``curl`` on the manager port."""

    path: str

    def encode(self) -> bytes:
        return f"GET {self.path} HTTP/1.1\n".encode()


@dataclass(frozen=True, slots=True)
class PeerGet:
    """``get <cachename>`` sent by a worker to a peer's transfer server."""

    cachename: str

    def encode(self) -> bytes:
        return f"get {_url(self.cachename)}\n".encode()
