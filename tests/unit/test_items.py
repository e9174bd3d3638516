"""Item streams on disk: what is sent for a tree, and refusing names that escape."""

import os
import socket

import pytest

from ndcctools.taskvine import protocol as p
from ndcctools.taskvine.items import (
    FileSegment,
    ItemReceiver,
    UnsafeName,
    check_relative,
    outgoing,
)
from ndcctools.taskvine.transport import Outbox
from ndcctools.taskvine.worker.transfer_server import send_file


def materialize(pieces):
    out = b""
    for piece in pieces:
        if isinstance(piece, FileSegment):
            piece = open(piece.path, "rb").read(piece.length)
        out += piece
    return out


def receive(dest, wire):
    d = p.Decoder("manager")
    d.feed(wire)
    r = ItemReceiver(str(dest))
    done = False
    while (ev := d.next_event()) is not None:
        done = r.feed(ev)
    return r, done


def test_tree_roundtrip(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "empty").write_bytes(b"")
    os.symlink("a.txt", src / "link")
    wire = materialize(outgoing(str(src), "top"))
    assert wire.startswith(b"dir top 0")
    r, done = receive(tmp_path / "dst", wire)
    assert done and r.error is None
    assert (tmp_path / "dst" / "a.txt").read_bytes() == b"alpha"
    assert (tmp_path / "dst" / "sub" / "empty").read_bytes() == b""
    assert os.readlink(tmp_path / "dst" / "link") == "a.txt"
    assert r.size == 5 + len("a.txt")


def test_missing_path_sends_an_error_item(tmp_path):
    assert materialize(outgoing(str(tmp_path / "none"), "x")) == b"error x 2\n"
    r, done = receive(tmp_path / "dst", b"error x 2\n")
    assert done and r.error == p.ErrorItem("x", 2) and not (tmp_path / "dst").exists()


@pytest.mark.parametrize("wire", [
    b"dir top 0755 0\nfile ..%2Fx 1 0644 0\nxend\n",
    b"dir top 0755 0\nfile .. 1 0644 0\nxend\n",
    b"dir top 0755 0\ndir .. 0755 0\nfile x 1 0644 0\nxend\nend\n",
    b"dir top 0755 0\nsymlink %2Fl 2\n..end\n",
])
def test_escaping_names_are_refused_and_the_stream_followed(tmp_path, wire):
    r, done = receive(tmp_path / "dst", wire)
    assert done and isinstance(r.write_error, UnsafeName)
    assert sorted(os.listdir(tmp_path)) == ["dst"] and os.listdir(tmp_path / "dst") == []


def test_links_are_kept_as_links_whatever_their_target(tmp_path):
    """A directory output holding absolute or upward links (a virtualenv) is received whole:
    the links are recreated, never followed."""
    wire = (b"dir top 0755 0\nsymlink abs 4\n/etcsymlink up 7\n../../x"
            b"file abs 3 0644 0\nxyzdir up 0755 0\nend\nend\n")
    r, done = receive(tmp_path / "dst", wire)
    assert done
    assert os.readlink(tmp_path / "dst" / "abs") == "/etc"
    assert os.readlink(tmp_path / "dst" / "up") == "../../x"
    # writing a file or a directory through a received link is refused, and written nowhere
    assert isinstance(r.write_error, OSError)
    assert sorted(os.listdir(tmp_path)) == ["dst"]


@pytest.mark.parametrize("path", ["../x", "/abs", "a/../../b", "", "."])
def test_check_relative_refuses(path):
    with pytest.raises(UnsafeName):
        check_relative(path)


def test_check_relative_normalises():
    assert check_relative("a//b/./c") == "a/b/c"


def test_a_receiver_that_cannot_write_follows_the_stream_to_its_end(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    wire = b"dir top 0755 0\nfile a 5 0644 0\nhellosymlink l 1\naend\ncheck\n"
    d = p.Decoder("manager")
    d.feed(wire)
    r = ItemReceiver(str(blocker / "dest"))
    finished = [r.feed(d.next_event()) for _ in range(5)]
    assert finished == [False, False, False, False, True]
    assert isinstance(r.write_error, NotADirectoryError)
    assert r.size == 6  # sizes are still counted
    assert isinstance(d.next_event(), p.Check)  # the connection is in step for what follows


def test_outgoing_applies_a_mode_override_to_a_top_level_file(tmp_path):
    f = tmp_path / "s.sh"
    f.write_text("echo\n")
    os.chmod(f, 0o644)
    assert materialize(outgoing(str(f), "s", mode=0o755)).startswith(b"file s 5 0755 ")


@pytest.mark.parametrize("replacement", ["link", "fifo", "new file"])
def test_content_comes_only_from_the_file_whose_header_was_sent(tmp_path, replacement):
    """A cache object replaced between its header and its content (a ``put`` of a link to
    a file elsewhere, say) must not have that other file's bytes sent under the old header."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"SECRET" * 500)
    obj = tmp_path / "obj"
    obj.write_bytes(b"z" * 3000)
    header, segment = list(outgoing(str(obj), "obj", follow_top=False))
    assert isinstance(segment, FileSegment) and segment.length == 3000
    os.rename(obj, tmp_path / "old")
    if replacement == "link":
        os.symlink(secret, obj)
    elif replacement == "fifo":
        os.mkfifo(obj)  # opening it for reading must not block
    else:
        obj.write_bytes(b"y" * 3000)
    a, b = socket.socketpair()
    with a, b:
        box = Outbox()
        box.append(header)
        box.append(segment)
        with pytest.raises(OSError, match="replaced"):
            box.flush(a)
        with pytest.raises(OSError, match="replaced"):
            send_file(a, segment)
        a.shutdown(socket.SHUT_WR)
        sent = b.recv(1 << 16)
    assert sent == header and b"SECRET" not in sent
