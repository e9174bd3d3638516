"""Incremental decoder: bytes in, messages out (protocol spec §1, §3, §4).

Theory of operation. ``feed()`` appends bytes to a receive buffer; ``next_event()`` returns
the next complete message, or ``None`` when more bytes are needed. The decoder is in one of
three places:

* reading a control line, looked up by its first word in a keyword table (one table per
  peer kind, plus a table for task bodies and one for resources blocks);
* waiting for the payload a line announced (``cmd N``, ``stdout id N``, …): the message is
  produced once all N bytes are buffered;
* inside the content of a ``file`` item or of a ``stdout`` reply: ``Data`` events are
  produced as bytes arrive, ``raw_left`` bytes at most, so a large file never has to sit in
  memory.

Multi-line messages (``task … end``, ``mini_task … end``, ``resources … end``) are assembled
into one message. Anything that breaks the framing rules raises ``RemoteProtocolError``; the
decoder must not be used after that.

Whatever a peer sends, the decoder either returns messages whose fields are in range or raises
``RemoteProtocolError``: numbers must be finite and fit in 64 bits (``1e400``, ``nan`` and
``inf`` are refused), lengths are non-negative, and a payload held in memory (a command, an
environment variable, a link target, an error text, inline stdout, an ``update``) is at most
``PAYLOAD_MAX`` bytes. What may be large (file contents, a task's stdout) streams as ``Data``.
"""

from __future__ import annotations

from collections.abc import Callable

from . import messages as m
from .errors import RemoteProtocolError
from .urlcode import decode as _unurl

Handler = Callable[["Decoder", list], object]

NUMBER_MAX = (1 << 63) - 1  # numbers on the wire are C int64s or doubles used as such
PAYLOAD_MAX = 64 << 20  # bytes of one payload kept in memory (not file contents nor stdout)


def _int(text: str) -> int:
    """An integer field; upstream prints some as doubles (``5.000000``): their integer part."""
    try:
        n = int(text)
    except ValueError:
        n = int(parse_number(text))
    if not -NUMBER_MAX <= n <= NUMBER_MAX:
        raise RemoteProtocolError(f"number out of range: {text[:40]!r}")
    return n


def parse_number(text: str) -> float:
    """A finite number of at most 64-bit magnitude."""
    try:
        x = float(text)
    except ValueError:
        raise RemoteProtocolError(f"expected a number, got {text[:40]!r}") from None
    if not -NUMBER_MAX <= x <= NUMBER_MAX:  # also false for nan
        raise RemoteProtocolError(f"number out of range: {text[:40]!r}")
    return x


def _octal(text: str) -> int:
    try:
        return int(text, 8) & 0o777
    except ValueError:
        raise RemoteProtocolError(f"expected an octal mode, got {text!r}") from None


def _size(text: str) -> int:
    n = _int(text)
    if n < 0:
        raise RemoteProtocolError(f"negative length {n}")
    return n


def _port(text: str) -> int:
    n = _int(text)
    if not 0 <= n <= 65535:
        raise RemoteProtocolError(f"not a port: {n}")
    return n


def _payload(text: str) -> int:
    """The length of a payload that is kept in memory."""
    n = _size(text)
    if n > PAYLOAD_MAX:
        raise RemoteProtocolError(f"payload of {n} bytes, more than {PAYLOAD_MAX}")
    return n


def _arity(fields: list, low: int, high: int | None = None) -> None:
    n = len(fields) - 1
    if n < low or (high is not None and n > high):
        raise RemoteProtocolError(f"wrong number of fields in {' '.join(fields)!r}")


def _text(payload: bytes) -> str:
    return payload.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- item streams


def _file(d: Decoder, f: list) -> m.FileItem:
    _arity(f, 3, 4)
    item = m.FileItem(_unurl(f[1]), _size(f[2]), _octal(f[3]), _int(f[4]) if len(f) > 4 else 0)
    d._raw_left = item.size
    return item


def _dir(d: Decoder, f: list) -> m.DirItem:
    _arity(f, 2, 3)
    return m.DirItem(_unurl(f[1]), _octal(f[2]), _int(f[3]) if len(f) > 3 else 0)


def _symlink(d: Decoder, f: list) -> None:
    _arity(f, 2, 2)
    name = _unurl(f[1])
    d._expect(_payload(f[2]), lambda p: m.SymlinkItem(name, _text(p)))


def _error(d: Decoder, f: list) -> m.ErrorItem:
    _arity(f, 2)
    return m.ErrorItem(_unurl(" ".join(f[1:-1])), _int(f[-1]))


ITEMS: dict[str, Handler] = {
    "file": _file,
    "dir": _dir,
    "symlink": _symlink,
    "error": _error,
    "end": lambda d, f: m.End(),
}

# --------------------------------------------------------------------------- manager -> worker


class _BodyBuilder:
    """Collects the lines of a task body until ``end``."""

    __slots__ = ("head", "fields", "env", "infiles", "outfiles")

    def __init__(self, head: Callable[[m.TaskBody], object]):
        self.head = head
        self.fields: dict = {}
        self.env: list[str] = []
        self.infiles: list[m.Mount] = []
        self.outfiles: list[m.Mount] = []

    def build(self) -> object:
        body = m.TaskBody(env=tuple(self.env), infiles=tuple(self.infiles),
                          outfiles=tuple(self.outfiles), **self.fields)
        return self.head(body)


def _task(d: Decoder, f: list) -> None:
    _arity(f, 1, 1)
    task_id = _size(f[1])  # negative ids are the worker's own mini tasks
    d._open_body(lambda body: m.TaskMsg(task_id, body))


def _mini_task(d: Decoder, f: list) -> None:
    _arity(f, 5, 5)
    out, cachename, level, size, mode = f[1], f[2], _int(f[3]), _size(f[4]), _octal(f[5])
    d._open_body(lambda body: m.MiniTaskMsg(out, cachename, level, size, mode, body))


def _puturl(now: bool) -> Handler:
    def handler(d: Decoder, f: list) -> m.PutUrl:
        _arity(f, 6, 6)
        return m.PutUrl(_unurl(f[1]), f[2], _int(f[3]), _size(f[4]), _octal(f[5]), f[6], now)
    return handler


def _one(cls: type, convert: Callable = str) -> Handler:
    def handler(d: Decoder, f: list) -> object:
        _arity(f, 1, 1)
        return cls(convert(f[1]))
    return handler


def _bare(cls: type) -> Handler:
    def handler(d: Decoder, f: list) -> object:
        return cls()
    return handler


FROM_MANAGER: dict[str, Handler] = {
    "task": _task,
    "mini_task": _mini_task,
    "put": lambda d, f: (_arity(f, 3, 3), m.Put(f[1], _int(f[2]), _size(f[3])))[1],
    "puturl": _puturl(False),
    "puturl_now": _puturl(True),
    "get": _one(m.Get),
    "getfile": _one(m.GetFile),
    "unlink": _one(m.Unlink),
    "kill": _one(m.Kill, _int),
    "send_stdout": _one(m.SendStdout, _int),
    "send_results": _one(m.SendResults, _int),
    "check": _bare(m.Check),
    "release": _bare(m.Release),
    "exit": _bare(m.Exit),
    "transfer-secret": _one(m.TransferSecret),
    **ITEMS,
}


def _body_field(key: str, convert: Callable) -> Handler:
    def handler(d: Decoder, f: list) -> None:
        if len(f) != 2:
            _arity(f, 1, 1)
        d._body.fields[key] = convert(f[1])
    return handler


def _body_cmd(d: Decoder, f: list) -> None:
    _arity(f, 1, 1)
    body = d._body
    d._expect(_payload(f[1]), lambda p: body.fields.__setitem__("command", _text(p)))


def _body_env(d: Decoder, f: list) -> None:
    _arity(f, 1, 1)
    body = d._body
    # upstream sends one extra newline after the variable; it is not part of the value
    d._expect(_payload(f[1]) + 1, lambda p: body.env.append(_text(p[:-1])))


def _body_mount(kind: str) -> Handler:
    def handler(d: Decoder, f: list) -> None:
        _arity(f, 3, 3)
        getattr(d._body, kind).append(m.Mount(f[1], _unurl(f[2]), _int(f[3])))
    return handler


def _body_exec_mode(d: Decoder, f: list) -> None:
    _arity(f, 1, 1)
    mode = _int(f[1])
    if mode < 0:
        raise RemoteProtocolError(f"invalid func_exec_mode {mode}")
    d._body.fields["func_exec_mode"] = mode


def _body_monitor(d: Decoder, f: list) -> None:
    _arity(f, 3, 3)
    interval = parse_number(f[1])
    if not 0 < interval <= 86400:
        raise RemoteProtocolError(f"monitor interval out of range: {f[1]!r}")
    d._body.fields["monitor"] = m.Monitor(interval, _int(f[2]) != 0, _int(f[3]) != 0)


def _body_end(d: Decoder, f: list) -> object:
    body, d._body = d._body, None
    d._table = d._top
    return body.build()


BODY: dict[str, Handler] = {
    "cmd": _body_cmd,
    "env": _body_env,
    "infile": _body_mount("infiles"),
    "outfile": _body_mount("outfiles"),
    "category": _body_field("category", str),
    "cores": _body_field("cores", parse_number),
    "gpus": _body_field("gpus", _int),
    "memory": _body_field("memory", _int),
    "disk": _body_field("disk", _int),
    "end_time": _body_field("end_time", parse_number),
    "wall_time": _body_field("wall_time", parse_number),
    "needs_library": _body_field("needs_library", str),
    "provides_library": _body_field("provides_library", str),
    "function_slots": _body_field("function_slots", _int),
    "func_exec_mode": _body_exec_mode,
    "groupid": _body_field("groupid", _int),
    "monitor": _body_monitor,
    "end": _body_end,
}

# --------------------------------------------------------------------------- worker -> manager


def _hello(d: Decoder, f: list) -> m.Hello:
    _arity(f, 5)
    return m.Hello(_int(f[1]), f[2], f[3], f[4], f[5])


def _info(d: Decoder, f: list) -> m.Info:
    _arity(f, 1)
    return m.Info(f[1], " ".join(f[2:]))


def _cache_update(d: Decoder, f: list) -> m.CacheUpdate:
    _arity(f, 7, 8)
    tid = f[8] if len(f) > 8 else "X"
    return m.CacheUpdate(f[1], _int(f[2]), _int(f[3]), _size(f[4]), _int(f[5]), _int(f[6]),
                         _int(f[7]), tid)


def _cache_invalid(d: Decoder, f: list) -> None:
    _arity(f, 2, 3)
    name, tid = f[1], (f[3] if len(f) > 3 else None)
    d._expect(_payload(f[2]), lambda p: m.CacheInvalid(name, _text(p), tid))


def _complete(d: Decoder, f: list) -> object:
    _arity(f, 7, 8)
    v = [_int(x) for x in f[1:]]
    if len(v) == 7:
        v.append(-1)
    result, code, length, inline, start, end, sandbox, task_id = v
    if length < 0:
        raise RemoteProtocolError(f"negative output length in {' '.join(f)[:200]!r}")
    if not 0 <= inline <= PAYLOAD_MAX:
        raise RemoteProtocolError(f"bad inline length in {' '.join(f)[:200]!r}")
    d._expect(inline, lambda p: m.Complete(result, code, length, start, end, sandbox, task_id,
                                           bytes(p)))
    return None


def _measured(d: Decoder, f: list) -> None:
    _arity(f, 2, 2)
    task_id = _int(f[1])
    d._expect(_payload(f[2]), lambda p: m.Measured(task_id, bytes(p)))


def _stdout(d: Decoder, f: list) -> m.Stdout:
    _arity(f, 2, 2)
    item = m.Stdout(_int(f[1]), _size(f[2]))
    d._raw_left = item.size  # the output follows as Data events, like a file's content
    return item


def _update(d: Decoder, f: list) -> None:
    _arity(f, 4, 4)
    task_id, path, offset = _int(f[1]), f[2], _size(f[3])
    d._expect(_payload(f[4]), lambda p: m.Update(task_id, path, offset, bytes(p)))


def _resources(d: Decoder, f: list) -> None:
    d._resources = {}
    d._table = RESOURCES


def _resources_end(d: Decoder, f: list) -> m.Resources:
    values, d._resources = d._resources, None
    d._table = d._top
    known = {k: values.pop(k, 0) for k in ("cores", "memory", "disk", "gpus", "workers")}
    tag = values.pop("tag", 0)
    return m.Resources(tag=tag, extra=values, **known)


def _resources_line(d: Decoder, f: list) -> None:
    _arity(f, 1)
    d._resources[f[0]] = _int(f[1])  # upstream prints doubles; their integer part is used


def _http_get(d: Decoder, f: list) -> m.HttpGet:
    _arity(f, 1, 2)
    return m.HttpGet(f[1])


FROM_WORKER: dict[str, Handler] = {
    "taskvine": _hello,
    "info": _info,
    "cache-update": _cache_update,
    "cache-invalid": _cache_invalid,
    "feature": lambda d, f: (_arity(f, 1, 1), m.Feature(_unurl(f[1])))[1],
    "transfer-port": _one(m.TransferPort, _port),
    "transfer-hostport": lambda d, f: (_arity(f, 2, 2), m.TransferHostPort(f[1], _port(f[2])))[1],
    "alive": _bare(m.Alive),
    "available_results": _bare(m.AvailableResults),
    "resources": _resources,
    "complete": _complete,
    "measured": _measured,
    "stdout": _stdout,
    "update": _update,
    "GET": _http_get,
    **{k: (lambda kind: lambda d, f: m.StatusRequest(kind))(k) for k in (
        "manager_status", "task_status", "worker_status", "wable_status", "resources_status")},
    **ITEMS,
}

RESOURCES: dict[str, Handler] = {"end": _resources_end}

FROM_PEER: dict[str, Handler] = {
    "get": lambda d, f: (_arity(f, 1, 1), m.PeerGet(_unurl(f[1])))[1],
    **ITEMS,
}

TABLES = {"worker": FROM_WORKER, "manager": FROM_MANAGER, "transfer": FROM_PEER}


# --------------------------------------------------------------------------- the decoder


class Decoder:
    """Decode the byte stream sent by one peer (``"worker"``, ``"manager"`` or
    ``"transfer"``) into messages."""

    def __init__(self, peer: str, trace: Callable[[str], None] | None = None):
        self.trace = trace  # called with every control line read (for debug logs)
        try:
            self._top = TABLES[peer]
        except KeyError:
            raise ValueError(f"unknown peer kind {peer!r}") from None
        self._table = self._top
        self._buf = bytearray()
        self._pos = 0
        self._raw_left = 0
        self._want = 0
        self._finish: Callable[[bytes], object] | None = None
        self._body: _BodyBuilder | None = None
        self._resources: dict | None = None

    # -- input
    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 1 << 16:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    @property
    def raw_left(self) -> int:
        """Content bytes of the current ``file`` item still to come."""
        return self._raw_left

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded."""
        return len(self._buf) - self._pos

    def take_buffered_raw(self) -> bytes:
        """Remove and return the already-buffered content bytes of the current file item."""
        k = min(self._raw_left, len(self._buf) - self._pos)
        chunk = bytes(self._buf[self._pos:self._pos + k])
        self._pos += k
        self._raw_left -= k
        return chunk

    def consume_raw(self, n: int) -> None:
        """Account for ``n`` content bytes the caller read from the socket itself."""
        if n > self._raw_left or self.buffered:
            raise ValueError("consume_raw: more bytes than the item holds, or bytes buffered")
        self._raw_left -= n

    # -- output
    def next_event(self) -> object | None:
        """The next complete message, or ``None`` if more bytes are needed."""
        while True:
            if self._raw_left:
                chunk = self.take_buffered_raw()
                return m.Data(chunk) if chunk else None
            if self._finish is not None:
                if len(self._buf) - self._pos < self._want:
                    return None
                payload = bytes(self._buf[self._pos:self._pos + self._want])
                self._pos += self._want
                finish, self._finish = self._finish, None
                event = finish(payload)
            else:
                fields = self._next_fields()
                if fields is None:
                    return None
                if not fields:
                    continue  # an empty line inside a resources block
                event = self._dispatch(fields)
            if event is not None and self._body is None:
                return event

    def _next_fields(self) -> list | None:
        """The words of the next line (an empty list for a blank line inside a resources
        block); None when no whole line is buffered."""
        buf, pos = self._buf, self._pos
        nl = buf.find(b"\n", pos)
        if nl < 0:
            if len(buf) - pos >= m.LINE_MAX:
                raise RemoteProtocolError(f"line longer than {m.LINE_MAX} bytes")
            return None
        if nl - pos >= m.LINE_MAX:
            raise RemoteProtocolError(f"line longer than {m.LINE_MAX} bytes")
        text = buf[pos:nl].decode("utf-8", "surrogateescape")
        self._pos = nl + 1
        if "\r" in text:
            text = text.replace("\r", "")
        if self.trace is not None:
            self.trace(text)
        fields = text.split()
        if not fields:
            if self._resources is not None:
                return []  # tolerate a stray empty line in a block
            raise RemoteProtocolError("empty line")
        return fields

    def _dispatch(self, fields: list) -> object:
        handler = self._table.get(fields[0])
        if handler is None:
            if self._table is RESOURCES:
                return _resources_line(self, fields)
            where = "task body" if self._body is not None else "message"
            raise RemoteProtocolError(f"unknown {where} line {' '.join(fields)[:200]!r}")
        return handler(self, fields)

    # -- used by handlers
    def _expect(self, n: int, finish: Callable[[bytes], object]) -> None:
        self._want = n
        self._finish = finish

    def _open_body(self, head: Callable[[m.TaskBody], object]) -> None:
        self._body = _BodyBuilder(head)
        self._table = BODY
