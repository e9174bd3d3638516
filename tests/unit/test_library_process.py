"""The worker's view of a library process: handshake, slots, framing (no real library)."""

import json
import os

import pytest

from ndcctools.taskvine import protocol as p
from ndcctools.taskvine.worker.libraries import (
    INLINE_BUDGET,
    QUEUED_PER_SLOT,
    LibraryError,
    LibraryProcess,
)


def library(mode=2, slots=2):
    body = p.TaskBody(command="python3 library_code.py", provides_library="lib",
                      function_slots=slots, func_exec_mode=mode)
    lib = LibraryProcess(12, body, cores=4)
    a, b = lib.open_pipes()
    return lib, a, b


def say(fd, payload: bytes):
    os.write(fd, b"%d\n" % len(payload) + payload)


@pytest.mark.parametrize("queues,depth", [(False, 2), (True, 2 * QUEUED_PER_SLOT)])
def test_a_library_gets_calls_for_its_slots_or_more_if_it_queues_them(queues, depth):
    lib, a, b = library()
    assert lib.free_slots == 0  # not ready before its handshake
    hello = {"name": "lib", "taskid": 12, "exec_mode": "fork"}
    if queues:
        hello["queues_calls"] = True
    say(b, json.dumps(hello).encode())
    assert lib.receive() == ([], False)
    assert lib.free_slots == depth
    lib.invoke(5, "f", "/sandbox", "/sandbox/.taskvine.stdout", run="the call")
    assert os.read(a, 100) == b"38\n5 f /sandbox /sandbox/.taskvine.stdout"
    say(b, b"5 0")
    assert lib.receive() == ([(5, 0, None)], False)
    os.close(b)
    assert lib.receive() == ([], True)
    lib.close()
    os.close(a)


def test_direct_mode_has_one_slot_and_a_wrong_handshake_is_refused():
    lib, a, b = library(mode=1, slots=4)
    assert lib.slots == 1
    say(b, json.dumps({"name": "other", "taskid": 12, "exec_mode": "direct"}).encode())
    with pytest.raises(LibraryError, match="expected 'lib'"):
        lib.receive()
    lib.close()
    os.close(a)
    os.close(b)


def test_inline_calls_carry_their_files_within_a_budget():
    lib, a, b = library(mode=1)
    assert not lib.takes_inline(1)  # only libraries that say they take them
    say(b, json.dumps({"name": "lib", "taskid": 12, "exec_mode": "direct", "queues_calls": True,
                       "inline_io": True}).encode())
    lib.receive()
    assert lib.takes_inline(INLINE_BUDGET) and not lib.takes_inline(INLINE_BUDGET + 1)
    args = b"\x80pickled\nargs"
    lib.invoke(5, "f", "/s", "/s/out", run="call 5", args=args)
    message = b"5 f /s /s/out\n" + args
    assert os.read(a, 100) == b"%d\n%s" % (len(message), message)
    assert not lib.takes_inline(INLINE_BUDGET - len(args) + 1)  # 5 holds part of it
    assert lib.takes_inline(INLINE_BUDGET - len(args))
    say(b, b"5 0\n\x80result\nbytes")
    assert lib.receive() == ([(5, 0, b"\x80result\nbytes")], False)
    assert lib.takes_inline(INLINE_BUDGET)  # its arguments were read
    say(b, b"6 x")
    with pytest.raises(LibraryError, match="bad result"):
        lib.receive()
    lib.close()
    os.close(a)
    os.close(b)
