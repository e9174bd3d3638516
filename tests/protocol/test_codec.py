"""Byte tables for the protocol-13 codec (protocol spec §1–§5)."""

import pytest

from ndcctools.taskvine import protocol as p
from tests.fuzzing import merge_data


def decode_all(peer, data, chunk=None):
    """Decode ``data`` fed at once, or ``chunk`` bytes at a time; returns the events."""
    d = p.Decoder(peer)
    out = []
    pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        d.feed(piece)
        while (ev := d.next_event()) is not None:
            out.append(ev)
    assert d.buffered == 0
    return out


# --------------------------------------------------------------------------- encoding

ENCODED = [
    (p.Put("file-meta-362e", 0, 6), b"put file-meta-362e 0 6\n"),
    (p.FileItem("file-meta-362e", 6, 0o644, 1795569196),
     b"file file-meta-362e 6 0644 1795569196\n"),
    (p.FileItem("out dir", 0, 0o100755, 0), b"file out%20dir 0 0755 0\n"),
    (p.DirItem("d", 0o40755, 17), b"dir d 0755 17\n"),
    (p.SymlinkItem("link", "a.txt"), b"symlink link 5\na.txt"),
    (p.ErrorItem("o.txt", 2), b"error o.txt 2\n"),
    (p.End(), b"end\n"),
    (p.PutUrl("file:///data/in put.txt", "url-rnd-a", 2, 0, 0o755, "0803-AB"),
     b"puturl file:///data/in%20put.txt url-rnd-a 2 0 0755 0803-AB\n"),
    (p.PutUrl("workerip://10.0.0.2:1025/temp-rnd-l", "temp-rnd-l", 0, 42, 0o755, "5D", now=True),
     b"puturl_now workerip://10.0.0.2:1025/temp-rnd-l temp-rnd-l 0 42 0755 5D\n"),
    (p.Get("file-rnd-y"), b"get file-rnd-y\n"),
    (p.GetFile("buffer-rnd-l"), b"getfile buffer-rnd-l\n"),
    (p.Unlink("file-rnd-y"), b"unlink file-rnd-y\n"),
    (p.Kill(1), b"kill 1\n"),
    (p.Kill(-1), b"kill -1\n"),
    (p.SendStdout(3), b"send_stdout 3\n"),
    (p.SendResults(), b"send_results -1\n"),
    (p.Check(), b"check\n"),
    (p.Release(), b"release\n"),
    (p.Exit(), b"exit\n"),
    (p.Hello(13, "vm", "Linux", "x86_64", "8.0.0"), b"taskvine 13 vm Linux x86_64 8.0.0\n"),
    (p.Info("worker-id", "worker-b5f7"), b"info worker-id worker-b5f7\n"),
    (p.CacheUpdate("file-rnd-y", 0, 0, 32, 1795569197, 10326, 1795569197606878),
     b"cache-update file-rnd-y 0 0 32 1795569197 10326 1795569197606878 X\n"),
    (p.CacheInvalid("url-rnd-a", "curl: (6) no host\n", "0803-AB"),
     b"cache-invalid url-rnd-a 18 0803-AB\ncurl: (6) no host\n"),
    (p.CacheInvalid("url-rnd-a", ""), b"cache-invalid url-rnd-a 0\n"),
    (p.Feature("gpu x"), b"feature gpu%20x\n"),
    (p.TransferPort(1024), b"transfer-port 1024\n"),
    (p.TransferHostPort("h.example", 9), b"transfer-hostport h.example 9\n"),
    (p.Alive(), b"alive\n"),
    (p.AvailableResults(), b"available_results\n"),
    (p.Resources(cores=4, memory=15872, disk=30163, gpus=0, workers=1, tag=0),
     b"resources\ncores 4.000000\nmemory 15872.000000\ndisk 30163.000000\ngpus 0.000000\n"
     b"workers 1.000000\ntag 0\nend\n"),
    (p.Complete(0, 0, 3, 10, 20, 0, 1, b"hi\n"), b"complete 0 0 3 3 10 20 0 1\nhi\n"),
    (p.Complete(0, 0, 2000, 10, 20, 0, 1), b"complete 0 0 2000 0 10 20 0 1\n"),
    (p.Complete(56, 9, 0, 10, 20, 0, 4), b"complete 56 9 0 0 10 20 0 4\n"),
    (p.Stdout(3, 0), b"stdout 3 0\n"),
    (p.Stdout(3, 3), b"stdout 3 3\n"),
    (p.Update(3, "log.txt", 10, b"more"), b"update 3 log.txt 10 4\nmore"),
]


@pytest.mark.parametrize("msg,wire", ENCODED, ids=[type(m).__name__ for m, _ in ENCODED])
def test_encode_exact_bytes(msg, wire):
    assert msg.encode() == wire


def test_task_body_in_upstream_order():
    body = p.TaskBody(
        command="echo hi > out.txt", cores=1, gpus=0, memory=100, disk=200, wall_time=60,
        env=("FOO=bar baz",), infiles=(p.Mount("file-meta-1", "in dir/in.txt", 0),),
        outfiles=(p.Mount("file-rnd-2", "out.txt", 0), p.Mount("temp-rnd-3", "t.txt", 0)))
    assert p.TaskMsg(1, body).encode() == (
        b"task 1\ncmd 17\necho hi > out.txtcategory default\ncores 1.000\ngpus 0\nmemory 100\n"
        b"disk 200\nwall_time 60.000000\nenv 11\nFOO=bar baz\n"
        b"infile file-meta-1 in%20dir/in.txt 0\noutfile file-rnd-2 out.txt 0\n"
        b"outfile temp-rnd-3 t.txt 0\nend\n")


def test_library_and_function_call_bodies():
    lib = p.TaskBody(command="python lib.py", provides_library="geom", function_slots=2,
                     func_exec_mode=2, cores=2)
    assert lib.encode() == (b"cmd 13\npython lib.pyprovides_library geom\nfunction_slots 2\n"
                            b"func_exec_mode 2\ncategory default\ncores 2.000\nend\n")
    call = p.TaskBody(command="area", needs_library="geom", cores=0, gpus=0, memory=0, disk=0)
    assert call.encode() == (b"cmd 4\nareaneeds_library geom\ncategory default\ncores 0.000\n"
                             b"gpus 0\nmemory 0\ndisk 0\nend\n")


def test_mini_task_header():
    msg = p.MiniTaskMsg("output", "task-rnd-v", 1, 0, 0o755, p.TaskBody(command="tar xf t"))
    assert msg.encode().startswith(b"mini_task output task-rnd-v 1 0 0755\ncmd 8\ntar xf t")


@pytest.mark.parametrize("bad", [
    lambda: p.Put("has space", 0, 1).encode(),
    lambda: p.TaskBody(category="my cat").encode(),
    lambda: p.Info("tasks_running", "").encode(),
    lambda: p.Hello(13, "my host", "Linux", "x86_64", "1").encode(),
])
def test_encode_refuses_what_cannot_travel(bad):
    with pytest.raises(p.LocalProtocolError):
        bad()


# --------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("msg,wire", [
    (m, w) for m, w in ENCODED if not isinstance(m, (p.Hello, p.Resources, p.Info))])
def test_roundtrip_through_the_right_decoder(msg, wire):
    peer = "worker" if type(msg).__name__ in {
        "CacheUpdate", "CacheInvalid", "Feature", "TransferPort", "TransferHostPort", "Alive",
        "AvailableResults", "Complete", "Stdout", "Update"} else "manager"
    events = decode_all(peer, wire)
    if isinstance(msg, p.FileItem):
        assert events[0] == p.FileItem(msg.name, msg.size, msg.mode & 0o777, msg.mtime)
    elif isinstance(msg, p.Stdout):
        assert events == [msg]  # its bytes follow as Data events (none sent here)
    elif isinstance(msg, p.DirItem):
        assert events == [p.DirItem(msg.name, msg.mode & 0o777, msg.mtime)]
    else:
        assert events == [msg]


DECODED_FROM_WORKER = [
    (b"taskvine 13 vm Linux x86_64 8.0.0\n", [p.Hello(13, "vm", "Linux", "x86_64", "8.0.0")]),
    (b"info worker-end-time 0\n", [p.Info("worker-end-time", "0")]),
    (b"info transfer_port_bind_failed\n", [p.Info("transfer_port_bind_failed", "")]),
    (b"info idle-disconnect-request 5\r\n", [p.Info("idle-disconnect-request", "5")]),
    (b"info library-update 4 2\n", [p.Info("library-update", "4 2")]),
    (b"resources\ncores 2.000000\nmemory 15872.500000\ndisk 30163.000000\ngpus 0.000000\n"
     b"workers 1.000000\ntag 0\nend\n",
     [p.Resources(cores=2, memory=15872, disk=30163, gpus=0, workers=1, tag=0)]),
    (b"resources\ntag 5\nworkers 1\ncores 2\nmystery 7\nend\n",
     [p.Resources(cores=2, memory=0, disk=0, gpus=0, workers=1, tag=5)]),
    (b"complete 0 0 341 0 1 2 0\n", [p.Complete(0, 0, 341, 1, 2, 0, -1)]),
    (b"complete 0 9 0 0 1 2 0 7\n", [p.Complete(0, 9, 0, 1, 2, 0, 7)]),
    (b"cache-update t 2 1 10 5 6 7\n", [p.CacheUpdate("t", 2, 1, 10, 5, 6, 7, "X")]),
    (b"error process unknown: no stdout 3\n", [p.ErrorItem("process unknown: no stdout", 3)]),
    (b"worker_status\n", [p.StatusRequest("worker_status")]),
    (b"GET /manager_status HTTP/1.1\r\n", [p.HttpGet("/manager_status")]),
    (b"dir d 40755 17\nfile a%20b 3 0644\nabcend\n",
     [p.DirItem("d", 0o755, 17), p.FileItem("a b", 3, 0o644, 0), p.Data(b"abc"), p.End()]),
    (b"symlink l 0\n", [p.SymlinkItem("l", "")]),
]


@pytest.mark.parametrize("wire,events", DECODED_FROM_WORKER)
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_decode_from_worker(wire, events, chunk):
    assert merge_data(decode_all("worker", wire, chunk)) == events


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 4096, 100_000])
def test_inline_stdout_payload_sizes(size):
    out = bytes(i % 251 for i in range(size))
    inline = out if 0 < size <= p.INLINE_STDOUT_MAX else b""
    msg = p.Complete(0, 0, size, 1, 2, 0, 9, inline)
    wire = msg.encode()
    assert wire.startswith(b"complete 0 0 %d %d " % (size, len(inline)))
    assert decode_all("worker", wire + b"alive\n", chunk=509) == [msg, p.Alive()]


def test_payload_bytes_that_look_like_lines_are_not_parsed():
    out = b"end\ncomplete 1 2 3\n\x00"
    wire = p.Stdout(1, len(out)).encode() + out + b"alive\n"
    assert merge_data(decode_all("worker", wire, chunk=3)) == [p.Stdout(1, len(out)),
                                                               p.Data(out), p.Alive()]


def test_file_content_streams_as_data_events():
    content = bytes(range(256)) * 40
    wire = p.FileItem("f", len(content), 0o600, 5).encode() + content + b"end\n"
    events = decode_all("manager", wire, chunk=1000)
    assert events[0] == p.FileItem("f", len(content), 0o600, 5)
    data = [e for e in events if isinstance(e, p.Data)]
    assert len(data) > 1 and b"".join(e.chunk for e in data) == content
    assert events[-1] == p.End()


def test_zero_copy_receiver_reads_file_bytes_itself():
    d = p.Decoder("manager")
    d.feed(b"file f 10 0644 0\n0123")
    assert d.next_event() == p.FileItem("f", 10, 0o644, 0)
    assert d.raw_left == 10
    assert d.take_buffered_raw() == b"0123"
    d.consume_raw(6)  # the caller read "456789" from the socket into the file
    assert d.raw_left == 0
    d.feed(b"end\n")
    assert d.next_event() == p.End()


def test_task_from_manager_with_every_body_line():
    wire = (b"task 12\ncmd 11\nls -l > o $category big\ncores 1.500\ngpus 1\nmemory 100\n"
            b"disk 200\nend_time 1795569197.5\nwall_time 60.000000\nenv 12\nA=1\nline two\n"
            b"infile file-md5-1 my%20in 32\noutfile file-rnd-2 o 64\ngroupid 3\n"
            b"needs_library lib\nend\ncheck\n")
    task, check = decode_all("manager", wire, chunk=5)
    assert check == p.Check()
    assert task == p.TaskMsg(12, p.TaskBody(
        command="ls -l > o $", category="big", cores=1.5, gpus=1, memory=100, disk=200,
        end_time=1795569197.5, wall_time=60.0, env=("A=1\nline two",),
        infiles=(p.Mount("file-md5-1", "my in", 32),), outfiles=(p.Mount("file-rnd-2", "o", 64),),
        groupid=3, needs_library="lib"))


def test_mini_task_from_manager():
    wire = b"mini_task output task-rnd-v 1 0 0755\ncmd 3\nfoocategory default\nend\n"
    assert decode_all("manager", wire) == [
        p.MiniTaskMsg("output", "task-rnd-v", 1, 0, 0o755, p.TaskBody(command="foo"))]


def test_line_of_exactly_4096_bytes_is_accepted_and_4097_refused():
    name = "x" * (4096 - len("unlink \n"))
    assert decode_all("manager", f"unlink {name}\n".encode()) == [p.Unlink(name)]
    d = p.Decoder("manager")
    d.feed(f"unlink {name}y\n".encode())
    with pytest.raises(p.RemoteProtocolError, match="longer than 4096"):
        d.next_event()


def test_endless_line_is_refused_before_its_newline():
    d = p.Decoder("worker")
    d.feed(b"x" * 5000)
    with pytest.raises(p.RemoteProtocolError):
        d.next_event()


@pytest.mark.parametrize("peer,wire", [
    ("worker", b"hello there\n"),
    ("worker", b"complete 0 zero 0 0 1 2 0 1\n"),
    ("worker", b"complete 0 0 0 -5 1 2 0 1\n"),
    ("worker", b"cache-update onlyname\n"),
    ("worker", b"\n"),
    ("worker", b"taskvine 13 host\n"),
    ("manager", b"task 1\nbogus 3\nend\n"),
    ("manager", b"task 1\nfunc_exec_mode -1\nend\n"),
    ("manager", b"file f -3 0644 0\n"),
    ("manager", b"file f 3 0999 0\n"),
    ("manager", b"status\n"),
    ("transfer", b"put x 0 1\n"),
])
def test_malformed_input_raises_remote_protocol_error(peer, wire):
    d = p.Decoder(peer)
    d.feed(wire)
    with pytest.raises(p.RemoteProtocolError):
        while d.next_event() is not None:
            pass


def test_peer_get_is_url_decoded():
    assert decode_all("transfer", b"get temp-rnd-abc\n") == [p.PeerGet("temp-rnd-abc")]


@pytest.mark.parametrize("name,wire", [
    ("plain.txt", "plain.txt"),
    ("out dir/o.txt", "out%20dir/o.txt"),
    ("tab\there", "tab%09here"),
    ("100%", "100%25"),
    ("q'\"<>\\", "q%27%22%3C%3E%5C"),
    ("{}|~", "%7B%7D%7C%7E"),
    ("é", "%C3%A9"),
])
def test_url_encoding_table(name, wire):
    assert p.url_encode(name) == wire
    assert p.url_decode(wire) == name


def test_url_decoding_accepts_upstream_space_padding():
    assert p.url_decode("a% 9b") == "a\tb"
