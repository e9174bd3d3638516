"""Property tests of the protocol-13 decoder (``Decoder(peer)``, ``feed``, ``next_event``).

(a) Any bytes, cut into any chunks, make ``next_event()`` return messages or raise
    ``RemoteProtocolError``: never another exception, never a hang, and the same messages
    whatever the chunking.
(b) The same for protocol-shaped traffic (``tests.fuzzing.Wire``): real keywords of each peer
    with mutated fields (``1e400``, ``nan``, ``-1``, huge integers, missing or extra fields,
    non-UTF-8 bytes, surrogates, very long lines), and for every numeric field of every
    message given every value of ``HOSTILE_NUMBERS``.
(c) Messages built from the dataclasses of ``protocol/messages.py`` with valid fields encode
    and decode back to equal messages, in any chunking.
(d) No decoded message carries a non-finite float or an out-of-range integer
    (``tests.fuzzing.out_of_range``); checked on everything (a) and (b) decode.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st

from ndcctools.taskvine import protocol as p
from tests.fuzzing import (
    HOSTILE_NUMBERS,
    STATUS_KEYWORDS,
    Wire,
    chunked,
    decode,
    out_of_range,
)

PEERS = ("worker", "manager", "transfer")

FUZZ = settings(max_examples=150, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ROUND_TRIP = settings(FUZZ, max_examples=120)

cuts = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12)


def check_stream(peer: str, data: bytes, cut_at: list[int]):
    """Properties (a), (b), (d) for one byte stream; returns what the whole stream decoded to."""
    whole = decode(peer, [data])
    outs = [decode(peer, chunked(data, cut_at))]
    if len(data) <= 512:
        outs.append(decode(peer, [data[i:i + 1] for i in range(len(data))]))  # byte by byte
    for out in (whole, *outs):
        for ev in out.events:
            assert not out_of_range(ev), (ev, out_of_range(ev))
    for parts in outs:
        assert parts.events == whole.events, "the chunking changed what was decoded"
        assert (parts.error is None) == (whole.error is None), (parts.error, whole.error)
    return whole


# --------------------------------------------------------------------------- (a) any bytes


@pytest.mark.parametrize("peer", PEERS)
@FUZZ
@given(data=st.binary(max_size=3000), cut_at=cuts)
@example(data=b"taskvine 13 h Linux x86_64 8.0.0\nresources\n\n\nend\n", cut_at=[14, 40])
def test_any_bytes_in_any_chunks(peer, data, cut_at):
    check_stream(peer, data, cut_at)


# Words and separators of the protocol, to build streams that get past the first keyword.
_SOUP = st.sampled_from([
    b"task", b"mini_task", b"put", b"puturl", b"get", b"getfile", b"unlink", b"kill",
    b"send_stdout", b"send_results", b"check", b"release", b"exit", b"file", b"dir",
    b"symlink", b"error", b"end", b"cmd", b"env", b"infile", b"outfile", b"cores", b"memory",
    b"wall_time", b"end_time", b"category", b"func_exec_mode", b"taskvine", b"info",
    b"cache-update", b"cache-invalid", b"feature", b"transfer-port", b"transfer-hostport",
    b"alive", b"available_results", b"resources", b"complete", b"stdout", b"update", b"GET",
    *(k.encode() for k in STATUS_KEYWORDS),
    b"0", b"1", b"3", b"13", b"-1", b"0644", b"1e400", b"nan", b"inf", b"99999999999999999999",
    b"%2F", b"..", b"a", b"\xff", b" ", b" ", b" ", b"\n", b"\n", b"\n", b"\r", b"\t",
])


@pytest.mark.parametrize("peer", PEERS)
@FUZZ
@given(words=st.lists(_SOUP, max_size=80), cut_at=cuts)
def test_protocol_words_in_any_order(peer, words, cut_at):
    check_stream(peer, b"".join(words), cut_at)


# --------------------------------------------------------------------------- (b) structured fuzz


@pytest.mark.parametrize("peer", PEERS)
# shrinking a random.Random is slow and gains little: the failing stream is noted instead
@settings(FUZZ, max_examples=300, phases=[Phase.explicit, Phase.generate])
@given(rng=st.randoms(use_true_random=False), cut_at=cuts,
       mutate=st.sampled_from([0.0, 0.02, 0.1, 0.3]), n=st.integers(1, 12))
def test_mutated_messages(peer, rng, cut_at, mutate, n):
    data = Wire(rng, mutate=mutate).stream(peer, n)
    note(f"stream: {data!r}")
    out = check_stream(peer, data, cut_at)
    if mutate == 0.0:
        # unmutated traffic is well formed: all of it decodes
        assert out.error is None, out.error


# One line per numeric field of every message; ``{}`` is replaced by a hostile number.
NUMERIC_FIELDS = {
    "manager": [
        b"task {}\ncmd 4\ntrueend\n", b"task 1\ncmd {}\ntrueend\n", b"task 1\nenv {}\nA=1\nend\n",
        *(b"task 1\n%s {}\nend\n" % k for k in (
            b"cores", b"gpus", b"memory", b"disk", b"end_time", b"wall_time", b"function_slots",
            b"func_exec_mode", b"groupid")),
        b"task 1\ninfile file-a in {}\nend\n", b"task 1\noutfile file-a out {}\nend\n",
        b"mini_task o file-m {} 0 0755\ncmd 4\ntrueend\n",
        b"mini_task o file-m 1 {} 0755\ncmd 4\ntrueend\n",
        b"put file-a {} 1\nfile file-a 1 0644 0\nx", b"put file-a 1 {}\nfile file-a 1 0644 0\nx",
        b"puturl file:///x url-a {} 0 0755 T1\n", b"puturl file:///x url-a 1 {} 0755 T1\n",
        b"puturl_now file:///x url-a 1 0 0755 {}\n",
        b"kill {}\n", b"send_stdout {}\n", b"send_results {}\n",
    ],
    "worker": [
        b"taskvine {} h Linux x86_64 8.0.0\n", b"transfer-port {}\n",
        b"transfer-hostport h {}\n", b"info worker-end-time {}\n",
        *(b"cache-update file-a " + b" ".join(b"{}" if i == j else b"1" for j in range(6)) + b"\n"
          for i in range(6)),
        b"cache-invalid url-a {} T1\nno such file",
        *(b"complete " + b" ".join(b"{}" if i == j else b"0" for j in range(8)) + b"\n"
          for i in range(8)),
        b"stdout {} 2\nhi", b"stdout 1 {}\nhi",
        b"update {} log 0 2\nhi", b"update 1 log {} 2\nhi", b"update 1 log 0 {}\nhi",
        *(b"resources\n%s {}\nend\n" % k for k in (
            b"cores", b"memory", b"disk", b"gpus", b"workers", b"tag", b"other")),
    ],
    "transfer": [],
}
ITEM_FIELDS = [b"file f {} 0644 0\nx", b"file f 1 {} 0\nx", b"file f 1 0644 {}\nx",
               b"dir d {} 0\nend\n", b"dir d 0755 {}\nend\n", b"symlink s {}\nab",
               b"error e {}\n"]


@pytest.mark.parametrize("peer,template", [
    (peer, t) for peer in PEERS for t in NUMERIC_FIELDS[peer] + ITEM_FIELDS])
def test_hostile_number_in_every_numeric_field(peer, template):
    for value in HOSTILE_NUMBERS:
        data = template.replace(b"{}", value.encode("utf-8", "surrogateescape"))
        try:
            check_stream(peer, data, [len(data) // 2])
        except Exception as e:
            raise AssertionError(f"Decoder({peer!r}) fed {data[:120]!r}: {e!r}") from e


EDGE_STREAMS = {
    "empty lines in a resources block": b"resources\n" + b"\n" * 3000 + b"end\n",
    "a task body that never ends": b"task 1\n" + b"cores 1\n" * 20000,
    "deep directories": b"dir d 0755 0\n" * 5000,
    "only carriage returns": b"\r" * 5000 + b"\n",
    "surrogate bytes in a hello": b"taskvine 13 \xed\xa0\x80 \xff\xfe a b\n",
    "a name of percents": b"get " + b"%" * 4000 + b"\n",
    "a line of 4095 bytes": b"x" * 4094 + b"\n",
    "a line of 4096 bytes": b"x" * 4095 + b"\n",
    "a line of 4097 bytes": b"x" * 4096 + b"\n",
    "100 kB without a newline": b"x" * 100_000,
}


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("what", EDGE_STREAMS)
def test_edge_streams(peer, what):
    data = EDGE_STREAMS[what]
    try:
        check_stream(peer, data, [1, 4095, 4096, 4097])
    except Exception as e:  # a short report: the stream itself is long
        raise AssertionError(f"Decoder({peer!r}) fed {what} ({data[:60]!r}...): "
                             f"{type(e).__name__}: {str(e)[:300]}") from None


# --------------------------------------------------------------------------- (c) round trip

_INT64 = st.integers(-(1 << 63) + 1, (1 << 63) - 1)
_UINT = st.integers(0, (1 << 63) - 1)
_SMALL = st.integers(0, (1 << 31) - 1)
_text = st.text(max_size=40)  # no surrogates: they cannot be sent as UTF-8
# a field sent as it is: no whitespace (it would split the line), not empty
_token = st.text(min_size=1, max_size=24).filter(lambda s: not any(c.isspace() for c in s))
# a url-encoded name: anything but empty
_name = st.text(min_size=1, max_size=40)
_mode = st.integers(0, 0o777)
_blob = st.binary(max_size=1500)
_content_size = st.integers(0, 3000)


@st.composite
def _body(draw):
    mount = st.builds(p.Mount, cachename=_token, path=_name, flags=_SMALL)
    opt = st.none() | _SMALL
    return p.TaskBody(
        command=draw(_text), category=draw(_token),
        cores=draw(st.none() | st.integers(0, 10**6).map(lambda k: k / 1000)),
        gpus=draw(opt), memory=draw(opt), disk=draw(opt),
        # sent with 6 decimals, only when > 0
        end_time=draw(st.none() | st.integers(1, 4 * 10**15).map(lambda k: k / 10**6)),
        wall_time=draw(st.none() | st.integers(1, 10**12).map(lambda k: k / 10**6)),
        env=tuple(draw(st.lists(_text, max_size=3))),
        infiles=tuple(draw(st.lists(mount, max_size=3))),
        outfiles=tuple(draw(st.lists(mount, max_size=3))),
        needs_library=draw(st.none() | _token), provides_library=draw(st.none() | _token),
        function_slots=draw(opt), func_exec_mode=draw(st.none() | st.integers(0, 2)),
        groupid=draw(opt))


def _stdout():
    names = {f.name for f in dataclasses.fields(p.Stdout)}
    if "size" in names:  # the output follows as Data events
        return st.builds(p.Stdout, task_id=_UINT, size=_content_size)
    return st.builds(p.Stdout, task_id=_UINT, data=_blob)


ITEMS = [
    st.builds(p.FileItem, name=_name, size=_content_size, mode=_mode, mtime=_INT64),
    st.builds(p.DirItem, name=_name, mode=_mode, mtime=_INT64),
    st.builds(p.SymlinkItem, name=_name, target=_text),
    st.builds(p.ErrorItem, name=_name, errno=_INT64),
    st.just(p.End()),
]

MESSAGES = {
    "manager": st.one_of(
        st.builds(p.TaskMsg, task_id=_UINT, body=_body()),
        st.builds(p.MiniTaskMsg, outname=_token, cachename=_token, level=st.integers(0, 3),
                  size=_UINT, mode=_mode, body=_body()),
        st.builds(p.Put, cachename=_token, level=st.integers(0, 3), size=_UINT),
        st.builds(p.PutUrl, url=_name, cachename=_token, level=st.integers(0, 3), size=_UINT,
                  mode=_mode, transfer_id=_token, now=st.booleans()),
        st.builds(p.Get, cachename=_token), st.builds(p.GetFile, cachename=_token),
        st.builds(p.Unlink, cachename=_token), st.builds(p.Kill, task_id=_INT64),
        st.builds(p.SendStdout, task_id=_UINT), st.builds(p.SendResults, count=_INT64),
        st.just(p.Check()), st.just(p.Release()), st.just(p.Exit()),
        *ITEMS),
    "worker": st.one_of(
        st.builds(p.Hello, protocol=_INT64, hostname=_token, os=_token, arch=_token,
                  version=_token),
        st.builds(p.Info, key=_token,
                  value=st.lists(_token, min_size=1, max_size=3).map(" ".join)),
        st.builds(p.CacheUpdate, cachename=_token, type=_INT64, level=st.integers(0, 3),
                  size=_UINT, mtime=_INT64, duration_us=_INT64, start_us=_INT64,
                  transfer_id=_token),
        st.builds(p.CacheInvalid, cachename=_token, text=_text,
                  transfer_id=st.none() | _token),
        st.builds(p.Feature, name=_name),
        st.builds(p.TransferPort, port=st.integers(0, 65535)),
        st.builds(p.TransferHostPort, host=_token, port=st.integers(0, 65535)),
        st.just(p.Alive()), st.just(p.AvailableResults()),
        # totals are printed as doubles: integers up to 2**53 come back exactly
        st.builds(p.Resources, cores=st.integers(0, 1 << 53), memory=st.integers(0, 1 << 53),
                  disk=st.integers(0, 1 << 53), gpus=st.integers(0, 1 << 53),
                  workers=st.integers(0, 1 << 53), tag=_INT64),
        st.builds(p.Complete, result=_INT64, exit_code=_INT64, output_length=_UINT,
                  start_us=_INT64, end_us=_INT64, sandbox_mb=_INT64, task_id=_UINT,
                  inline_stdout=_blob),
        _stdout(),
        st.builds(p.Update, task_id=_UINT, path=_token, offset=_UINT, data=_blob),
        st.builds(p.StatusRequest, kind=st.sampled_from(STATUS_KEYWORDS)),
        st.builds(p.HttpGet, path=_token),
        *ITEMS),
    "transfer": st.one_of(st.builds(p.PeerGet, cachename=_name), *ITEMS),
}


def _wire(peer: str, msg) -> tuple[bytes, list]:
    """The bytes of ``msg`` with the content that follows it, and the events they decode to."""
    head = msg.encode()
    d = p.Decoder(peer)
    d.feed(head)
    d.next_event()
    n = d.raw_left  # a file item or a stdout reply: content follows as Data events
    content = bytes((i * 7 + 3) % 256 for i in range(n))
    return head + content, [msg] + ([p.Data(content)] if n else [])


@pytest.mark.parametrize("peer", PEERS)
@ROUND_TRIP
@given(data=st.data(), cut_at=cuts)
def test_round_trip(peer, data, cut_at):
    msgs = data.draw(st.lists(MESSAGES[peer], min_size=1, max_size=8))
    wire, expected = b"", []
    for msg in msgs:
        raw, events = _wire(peer, msg)
        wire += raw
        expected += events
    out = decode(peer, chunked(wire, cut_at))
    assert out.error is None, out.error
    assert out.events == expected
    for ev in out.events:  # Resources.extra is not compared: it must be empty here
        if isinstance(ev, p.Resources):
            assert ev.extra == {}


_MAX = (1 << 63) - 1
BOUNDARY_MESSAGES = {
    "manager": [
        p.TaskMsg(_MAX, p.TaskBody(command="x", gpus=_MAX, memory=_MAX, disk=0, groupid=_MAX,
                                   function_slots=_MAX, end_time=4e15, wall_time=1e-6,
                                   infiles=(p.Mount("c", "p", _MAX),))),
        p.MiniTaskMsg("o", "c", 3, _MAX, 0o777, p.TaskBody()),
        p.Put("c", 3, _MAX), p.PutUrl("u", "c", 0, _MAX, 0, "t"), p.Kill(-_MAX), p.Kill(_MAX),
        p.SendStdout(_MAX), p.SendResults(-1), p.FileItem("f", 0, 0o777, _MAX),
        p.FileItem("f", 0, 0, -_MAX), p.DirItem("d", 0, _MAX), p.ErrorItem("e", -_MAX),
    ],
    "worker": [
        p.Hello(_MAX, "h", "o", "a", "v"),
        p.CacheUpdate("c", _MAX, 3, _MAX, _MAX, _MAX, _MAX, "t"),
        p.CacheUpdate("c", -_MAX, 0, 0, -_MAX, -_MAX, -_MAX, "t"),
        p.TransferPort(65535), p.TransferHostPort("h", 0),
        p.Resources(cores=1 << 53, memory=1 << 53, disk=1 << 53, gpus=0, workers=1, tag=_MAX),
        p.Resources(cores=0, memory=0, disk=0, gpus=0, workers=1, tag=(1 << 53) + 1),
        p.Complete(_MAX, -_MAX, _MAX, _MAX, _MAX, _MAX, _MAX, b"x"),
        p.Update(_MAX, "p", _MAX, b"y"),
    ],
    "transfer": [p.PeerGet("x"), p.FileItem("f", 0, 0o644, _MAX)],
}


@pytest.mark.parametrize("peer,msg", [
    (peer, msg) for peer, msgs in BOUNDARY_MESSAGES.items() for msg in msgs], ids=repr)
def test_round_trip_at_the_bounds(peer, msg):
    """(c) at the edges of the valid ranges (64-bit integers, sizes, ports, modes)."""
    raw, expected = _wire(peer, msg)
    out = decode(peer, chunked(raw, [3]))
    assert out.error is None, out.error
    assert out.events == expected
