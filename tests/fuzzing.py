"""Shared material for the fuzz tests: hostile values, a generator of protocol-13 traffic, and
a guarded way to run the decoder.

Everything random here is driven by a ``random.Random`` given by the caller, so that a seed
reproduces a run (the live tests print theirs) and hypothesis can drive the same generators
through ``st.randoms()`` and shrink what they produce.

``Wire(rng)`` writes byte streams in the shape of protocol 13 (protocol spec §3-§4, §7): real
keywords, the right number of fields, payloads of the announced length; with probability
``mutate`` a field, a line or a payload is replaced by something hostile (``HOSTILE_NUMBERS``,
``HOSTILE_NAMES``, non-UTF-8 bytes, very long lines, missing or extra fields).
"""

from __future__ import annotations

import math
import os
import random
import signal
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass

from ndcctools.taskvine import protocol as p

INT64_MAX = (1 << 63) - 1

# Numbers a peer may send where the protocol wants one. Some are valid (``-0``, ``1.5``), most
# must be refused: not finite, out of 64-bit range, not numbers at all.
HOSTILE_NUMBERS = (
    "1e400", "-1e400", "1e309", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-Infinity",
    "-0", "-0.0", "-1", "-2", "-9223372036854775808", "-9223372036854775809",
    "9223372036854775807", "9223372036854775808", "18446744073709551616", "1" + "0" * 40,
    "9" * 4000, "1e18", "1e19", "9.3e18", "4.9e-324", "0.5", "1.5", "+7", "1_000", "0x10",
    "0o17", "\u0661\u0662", "", "abc", "1e", "--1", "1-", ".", "e5", "\x00",
)

# Numbers that no reader may accept: where a length frames what follows, a test that needs
# the stream to stay in step (the live worker fuzz) only uses these.
REFUSED_NUMBERS = (
    "1e400", "-1e400", "nan", "inf", "-inf", "-1", "-5", "-9223372036854775809",
    "9223372036854775808", "1" + "0" * 40, "abc", "0x10", "1e",
)

# Names a peer may send where the protocol wants a cache name or a sandbox path.
HOSTILE_NAMES = (
    "..", ".", "../x", "../../x", "../../../x", "a/../../x", "./..", "x/..", "/etc/passwd", "/",
    "//", "x/", "/x", "..%2Fx", "%2E%2E", "%2e%2e%2fx", "%", "%G0", "%0", "a\x00b", " ", "\t",
    "a b", "x" * 255, "x" * 300, "\udcff", "\udcc3\udca9", "\u00e9", "\u2028", "-", "--", "~",
    "$HOME", "`id`", "$(id)", "*", "x.meta", ".meta", "cache", "trash", "task.1",
)

NON_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80abc",
            b"\x00", b"\x1b[2J", b"\xc2\x85", b"\xe2\x80\xa8", b"\xef\xbb\xbf")

STATUS_KEYWORDS = ("manager_status", "task_status", "worker_status", "wable_status",
                   "resources_status")

_URL_SAFE = frozenset(range(0x21, 0x7B)) - frozenset(b"%\\<>'\"")


def url(name: str | bytes) -> bytes:
    """``name`` url-encoded as protocol spec §1 says (our own few lines, not the codec's)."""
    raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
    return b"".join(bytes([c]) if c in _URL_SAFE else b"%%%02X" % c for c in raw)


class Wire:
    """Random protocol-13 traffic in the shape each peer sends, mostly well formed.

    ``mutate``: probability that any one field, line or payload is made hostile.
    ``safe_ids``: task ids in worker messages (``complete``, ``stdout``, ``update``) are never
    small positive numbers, so that a fake worker cannot complete a real task by chance.
    """

    def __init__(self, rng: random.Random, mutate: float = 0.1, safe_ids: bool = False):
        self.rng = rng
        self.mutate = mutate
        self.safe_ids = safe_ids

    # ------------------------------------------------------------------ fields
    def hit(self, factor: float = 1.0) -> bool:
        return self.rng.random() < self.mutate * factor

    def hostile_field(self) -> bytes:
        r = self.rng.random()
        if r < 0.5:
            return self.rng.choice(HOSTILE_NUMBERS).encode("utf-8", "surrogateescape")
        if r < 0.8:
            name = self.rng.choice(HOSTILE_NAMES)
            raw = name.encode("utf-8", "surrogateescape")
            return url(raw) if self.rng.random() < 0.5 else raw
        return self.rng.choice(NON_UTF8) + self.rng.choice((b"", b"x", b"1"))

    def field(self, kind: str) -> bytes:
        """One field of ``kind``: valid, or (with probability ``mutate``) hostile."""
        if self.hit():
            return self.hostile_field()
        rng = self.rng
        if kind == "id":
            if self.safe_ids:
                return b"%d" % rng.choice((rng.randint(10**7, 10**9), -rng.randint(2, 99)))
            return b"%d" % rng.randint(1, 50)
        if kind == "int":
            return b"%d" % rng.choice((0, 1, -1, rng.randint(-10, 10**6), rng.randint(0, 2**40)))
        if kind == "level":
            return b"%d" % rng.randint(0, 3)
        if kind == "size":
            return b"%d" % rng.choice((0, rng.randint(0, 10**6), rng.randint(0, 2**40)))
        if kind == "octal":
            return rng.choice((b"0644", b"0755", b"755", b"40755", b"0600", b"0", b"0777"))
        if kind == "float":
            return rng.choice((b"%.3f", b"%.6f", b"%f", b"%d")) % rng.uniform(0, 2e9) \
                if rng.random() < 0.2 else b"%.3f" % rng.uniform(0, 64)
        if kind == "port":
            return b"%d" % rng.randint(1, 65535)
        if kind == "token":
            return rng.choice((b"file-rnd-a", b"temp-rnd-b", b"url-rnd-c", b"buffer-rnd-d",
                               b"default", b"lib", b"X", b"0803-AB", b"worker-0123", b"h.example"))
        if kind == "name":
            return url(rng.choice(("in", "out", "a.txt", "d/x", "x y", "caf\u00e9", "%", "t\tab")))
        if kind == "url":
            return url(rng.choice(("file:///nonexistent/x", "http://127.0.0.1:1/y",
                                   "workerip://127.0.0.1:1/temp-a", "ftp://[::1]:1/z")))
        if kind == "text":
            return rng.choice((b"1", b"0", b"some text", b"2 2"))
        raise ValueError(kind)

    def length(self, n: int) -> bytes:
        """The length field announcing an ``n``-byte payload (sometimes a hostile one)."""
        return self.hostile_field() if self.hit() else b"%d" % n

    def payload(self, limit: int = 64) -> bytes:
        n = self.rng.randint(0, limit)
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def line(self, *fields: bytes) -> bytes:
        """A control line, sometimes broken: a field dropped or added, odd separators, no
        newline, ``\\r\\n``, non-UTF-8 bytes, over 4096 bytes."""
        words = list(fields)
        rng = self.rng
        if len(words) > 1 and self.hit(0.5):
            del words[rng.randrange(1, len(words))]
        if self.hit(0.5):
            words.insert(rng.randint(1, len(words)), self.hostile_field())
        sep = b" " if not self.hit(0.3) else rng.choice((b"  ", b"\t", b" \r ", b"\x0b"))
        text = sep.join(words)
        if self.hit(0.2):
            text = text.upper() if rng.random() < 0.5 else rng.choice(NON_UTF8) + text
        if self.hit(0.1):
            text += b" " + b"y" * rng.choice((4000, 4096, 5000))
        end = b"\n" if not self.hit(0.3) else rng.choice((b"\r\n", b"\n\n", b"\r", b""))
        return text + end

    # ------------------------------------------------------------------ item streams
    def items(self, depth: int = 0) -> bytes:
        rng = self.rng
        kind = rng.choice(("file", "file", "dir", "symlink", "error"))
        name = self.field("name")
        if kind == "file":
            content = self.payload()
            return self.line(b"file", name, self.length(len(content)), self.field("octal"),
                             self.field("int")) + content
        if kind == "dir":
            inner = b"".join(self.items(depth + 1) for _ in range(rng.randint(0, 3 - depth)))
            return self.line(b"dir", name, self.field("octal"), self.field("int")) + inner + \
                self.line(b"end")
        if kind == "symlink":
            target = rng.choice((b"a.txt", b"../../etc/passwd", b"/etc/passwd", b"", b"x" * 9))
            return self.line(b"symlink", name, self.length(len(target))) + target
        return self.line(b"error", name, self.field("int"))

    # ------------------------------------------------------------------ manager -> worker
    def body(self) -> bytes:
        rng = self.rng
        lines = []
        cmd = rng.choice((b"true", b"echo hi", b"cat in > out", b"")) + self.payload(8)
        lines.append(self.line(b"cmd", self.length(len(cmd))) + cmd)
        for _ in range(rng.randint(0, 6)):
            key = rng.choice((b"category", b"cores", b"gpus", b"memory", b"disk", b"end_time",
                              b"wall_time", b"needs_library", b"provides_library",
                              b"function_slots", b"func_exec_mode", b"groupid", b"env",
                              b"infile", b"outfile"))
            if key == b"env":
                var = rng.choice((b"A=1", b"B=x\ny", b"noequals", b"=", b"")) + self.payload(4)
                lines.append(self.line(b"env", self.length(len(var))) + var + b"\n")
            elif key in (b"infile", b"outfile"):
                lines.append(self.line(key, self.field("token"), self.field("name"),
                                       self.field("int")))
            elif key in (b"cores", b"end_time", b"wall_time"):
                lines.append(self.line(key, self.field("float")))
            elif key in (b"category", b"needs_library", b"provides_library"):
                lines.append(self.line(key, self.field("token")))
            elif key == b"func_exec_mode":  # 0 unspecified, 1 direct, 2 fork
                lines.append(self.line(key, self.field("level") if not self.hit() else b"-1"))
            else:
                lines.append(self.line(key, self.field("int")))
        rng.shuffle(lines)
        return b"".join(lines) + self.line(b"end")

    def manager_message(self) -> bytes:
        rng = self.rng
        kind = rng.choice(("task", "task", "mini_task", "put", "puturl", "puturl_now", "get",
                           "getfile", "unlink", "kill", "send_stdout", "send_results", "check",
                           "release", "exit", "item"))
        f = self.field
        if kind == "task":
            return self.line(b"task", f("id")) + self.body()
        if kind == "mini_task":
            return self.line(b"mini_task", f("token"), f("token"), f("level"), f("size"),
                             f("octal")) + self.body()
        if kind == "put":
            return self.line(b"put", f("token"), f("level"), f("size")) + self.items()
        if kind in ("puturl", "puturl_now"):
            return self.line(kind.encode(), f("url"), f("token"), f("level"), f("size"),
                             f("octal"), f("token"))
        if kind in ("get", "getfile", "unlink"):
            return self.line(kind.encode(), f("token"))
        if kind in ("kill", "send_stdout", "send_results"):
            return self.line(kind.encode(), f("int") if rng.random() < 0.3 else f("id"))
        if kind == "item":
            return self.items()
        return self.line(kind.encode())

    # ------------------------------------------------------------------ worker -> manager
    def hello(self, protocol: int = 13, hostname: bytes = b"fuzzhost") -> bytes:
        return self.line(b"taskvine", b"%d" % protocol, hostname, b"Linux", b"x86_64", b"8.0.0")

    def resources(self) -> bytes:
        rng = self.rng
        keys = [b"cores", b"memory", b"disk", b"gpus", b"workers", b"tag"]
        if rng.random() < 0.3:
            keys.append(rng.choice((b"extra", b"foo", b"cores")))
        rng.shuffle(keys)
        lines = [self.line(k, self.field("float") if k != b"tag" else self.field("int"))
                 for k in keys]
        return self.line(b"resources") + b"".join(lines) + self.line(b"end")

    def worker_message(self) -> bytes:
        rng = self.rng
        f = self.field
        kind = rng.choice(("hello", "info", "cache-update", "cache-invalid", "feature",
                           "transfer-port", "transfer-hostport", "alive", "available_results",
                           "resources", "resources", "complete", "complete", "stdout", "update",
                           "GET", "status", "item"))
        if kind == "hello":
            return self.hello(rng.choice((13, 13, 12, 14, 0)))
        if kind == "info":
            key = rng.choice((b"worker-id", b"worker-end-time", b"tasks_running",
                              b"idle-disconnect-request", b"library-update", b"from-factory",
                              b"transfer_port_bind_failed", b"vacating", b"other"))
            value = rng.choice((f("text"), f("int"), f("float"), b"1 2", b""))
            return self.line(b"info", key, value) if value else self.line(b"info", key)
        if kind == "cache-update":
            return self.line(b"cache-update", f("token"), f("int"), f("level"), f("size"),
                             f("int"), f("int"), f("int"), f("token"))
        if kind == "cache-invalid":
            text = self.payload(40)
            return self.line(b"cache-invalid", f("token"), self.length(len(text)),
                             f("token")) + text
        if kind == "feature":
            return self.line(b"feature", f("name"))
        if kind == "transfer-port":
            return self.line(b"transfer-port", f("port"))
        if kind == "transfer-hostport":
            return self.line(b"transfer-hostport", f("token"), f("port"))
        if kind == "resources":
            return self.resources()
        if kind == "complete":
            out = self.payload(40)
            n = len(out)
            return self.line(b"complete", f("int"), f("int"), self.length(n), self.length(n),
                             f("int"), f("int"), f("int"), f("id")) + out
        if kind == "stdout":
            out = self.payload(40)
            return self.line(b"stdout", f("id"), self.length(len(out))) + out
        if kind == "update":
            data = self.payload(40)
            return self.line(b"update", f("id"), f("token"), f("size"),
                             self.length(len(data))) + data
        if kind == "GET":
            return self.line(b"GET", rng.choice((b"/", b"/manager_status", b"/x" * 9)),
                             b"HTTP/1.1")
        if kind == "status":
            return self.line(rng.choice(STATUS_KEYWORDS).encode())
        if kind == "item":
            return self.items()
        return self.line(kind.encode())

    # ------------------------------------------------------------------ worker -> worker
    def peer_message(self) -> bytes:
        if self.rng.random() < 0.4:
            return self.line(b"get", self.field("name"))
        return self.items()

    # ------------------------------------------------------------------ whole streams
    def stream(self, peer: str, n: int) -> bytes:
        """``n`` messages that a ``peer`` ("worker", "manager" or "transfer") would send."""
        make = {"worker": self.worker_message, "manager": self.manager_message,
                "transfer": self.peer_message}[peer]
        out = [self.hello()] if peer == "worker" and self.rng.random() < 0.7 else []
        out += [make() for _ in range(n)]
        return b"".join(out)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, in order)."""
    if not data:
        return [data]
    points = sorted({c % len(data) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


# --------------------------------------------------------------------------- running the decoder


class DecoderHung(AssertionError):
    """The decoder did not return within its time budget."""


@contextmanager
def time_limit(seconds: float, what: str):
    """Fail with ``DecoderHung`` if the block runs longer than ``seconds`` (main thread only;
    elsewhere the block runs unguarded). An alarm already set (pytest-timeout's) is put back
    afterwards with the time it had left."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise DecoderHung(f"{what} did not return within {seconds}s")

    started = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            left = max(old_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


@dataclass
class Decoded:
    events: list  # with consecutive Data events merged
    error: p.RemoteProtocolError | None


def decode(peer: str, chunks: list[bytes], budget: float = 5.0) -> Decoded:
    """Feed ``chunks`` one by one to a fresh ``Decoder(peer)``, taking every event after each.

    Returns the events and the ``RemoteProtocolError`` that stopped decoding, if any; any other
    exception propagates. Fails if the decoder runs longer than ``budget`` seconds or returns
    more events than it was given bytes (it would then be producing events from nothing).
    """
    d = p.Decoder(peer)
    events: list = []
    fed = 0
    with time_limit(budget, f"Decoder({peer!r})"):
        try:
            for chunk in chunks:
                d.feed(chunk)
                fed += len(chunk)
                while (ev := d.next_event()) is not None:
                    events.append(ev)
                    if len(events) > fed + 1:
                        raise AssertionError(f"{len(events)} events from {fed} bytes: "
                                             f"the decoder makes events from nothing")
        except p.RemoteProtocolError as e:
            return Decoded(merge_data(events), e)
    return Decoded(merge_data(events), None)


def merge_data(events: list) -> list:
    """Join consecutive Data events so that results do not depend on chunking."""
    out: list = []
    for ev in events:
        if isinstance(ev, p.Data) and out and isinstance(out[-1], p.Data):
            out[-1] = p.Data(out[-1].chunk + ev.chunk)
        else:
            out.append(ev)
    return out


# Fields whose value is a length, a size or an offset: never negative.
NON_NEGATIVE = frozenset({"size", "output_length", "offset"})


def out_of_range(event: object) -> list[str]:
    """What is wrong with the numbers a decoded message carries (property (d) of the decoder
    fuzz): every float finite and within 64-bit range, every integer within int64, lengths and
    sizes not negative, modes within 0o777, ports within 0..65535, a ``task`` id not negative
    (negative ids mean "every task" in ``kill`` and are the worker's own mini tasks)."""
    problems: list[str] = []

    def walk(value: object, where: str, name: str) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, float):
            if not math.isfinite(value) or abs(value) > INT64_MAX:
                problems.append(f"{where} = {value!r}")
        elif isinstance(value, int):
            if not -INT64_MAX <= value <= INT64_MAX:
                problems.append(f"{where} = {value} (beyond 64 bits)")
            elif name in NON_NEGATIVE and value < 0:
                problems.append(f"{where} = {value} (negative)")
            elif name == "mode" and not 0 <= value <= 0o777:
                problems.append(f"{where} = {value:o} (not a permission mode)")
            elif name == "port" and not 0 <= value <= 65535:
                problems.append(f"{where} = {value} (not a port)")
        elif is_dataclass(value):
            for f in fields(value):
                walk(getattr(value, f.name), f"{where}.{f.name}", f.name)
        elif isinstance(value, tuple | list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]", name)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}[{k!r}]", str(k))

    walk(event, type(event).__name__, "")
    if isinstance(event, p.TaskMsg) and event.task_id < 0:
        problems.append(f"TaskMsg.task_id = {event.task_id} (negative)")
    return problems


# --------------------------------------------------------------------------- live helpers


def seed_from_env(name: str = "TASKVINE_FUZZ_SEED") -> int:
    """The seed of a live fuzz run: ``$TASKVINE_FUZZ_SEED`` to replay one, else a fresh one."""
    value = os.environ.get(name)
    return int(value) if value else random.SystemRandom().randrange(1 << 32)


def snapshot(root, skip) -> dict[str, tuple]:
    """Every path under ``root`` (itself included) with its type, size and mtime, except the
    paths in ``skip`` and what is below them."""
    skip = {os.path.abspath(s) for s in skip}
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            if path in skip:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
            out[path] = (st.st_mode, size, st.st_mtime_ns)
    return out


def diff_snapshots(before: dict, after: dict) -> list[str]:
    changes = [f"created {k}" for k in after.keys() - before.keys()]
    changes += [f"removed {k}" for k in before.keys() - after.keys()]
    changes += [f"changed {k}: {before[k]} -> {after[k]}" for k in before.keys() & after.keys()
                if before[k] != after[k]]
    return sorted(changes)


def deadline_loop(seconds: float):
    """Yield until ``seconds`` have passed (for loops that run for a fixed time)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield end - time.monotonic()
