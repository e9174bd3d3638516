"""The real worker against a scripted fake manager: exact bytes in, exact replies out."""

import os
import socket
import subprocess
import sys
import time

import pytest

from ndcctools.taskvine import protocol as p

DEADLINE = 20.0


class FakeManager:
    """A listening socket that plays the manager's side, byte by byte."""

    def __init__(self, tmp_path, *worker_args, cores=2, memory=1000, disk=1000):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.srv.settimeout(DEADLINE)
        self.workspace = tmp_path / "ws"
        self.log = tmp_path / "worker.log"
        port = self.srv.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ndcctools.taskvine.tools.vine_worker", "127.0.0.1",
             str(port), "--cores", str(cores), "--memory", str(memory), "--disk", str(disk),
             "--workspace", str(self.workspace), "-d", "all", "-o", str(self.log),
             "--timeout", "30", *worker_args],
            stdin=subprocess.DEVNULL)
        self.accept()

    def accept(self):
        self.conn, _ = self.srv.accept()
        self.conn.settimeout(DEADLINE)
        self.decoder = p.Decoder("worker")
        self.raw = b""

    def send(self, *msgs):
        self.conn.sendall(b"".join(m if isinstance(m, bytes) else m.encode() for m in msgs))

    def next(self):
        """The next message from the worker (fails at the deadline)."""
        while (ev := self.decoder.next_event()) is None:
            data = self.conn.recv(65536)
            if not data:
                raise EOFError("worker closed the connection")
            self.raw += data
            self.decoder.feed(data)
        return ev

    def until(self, kind):
        """Skip messages until one of type ``kind``; returns it."""
        while not isinstance(ev := self.next(), kind):
            pass
        return ev

    def hello(self):
        """The hello without the ``info transfer-auth 1`` and ``info monitor 1`` lines (our
        own, after worker-id)."""
        msgs = [self.next() for _ in range(8)]
        assert msgs[2:4] == [p.Info("transfer-auth", "1"), p.Info("monitor", "1")]
        return msgs[:2] + msgs[4:]

    def closed(self) -> bool:
        try:
            while self.conn.recv(65536):
                pass
        except (ConnectionResetError, TimeoutError):
            return False
        return True

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.srv.close()


@pytest.fixture
def fake(tmp_path):
    f = FakeManager(tmp_path, "--single-shot")
    yield f
    f.close()


def task(task_id, cmd, **kw):
    kw.setdefault("cores", 1)
    kw.setdefault("memory", 100)
    kw.setdefault("disk", 100)
    return p.TaskMsg(task_id, p.TaskBody(command=cmd, **kw))


def test_hello_lines_in_order(fake):
    hello = fake.hello()
    assert isinstance(hello[0], p.Hello) and hello[0].protocol == 13
    assert hello[1].key == "worker-id" and hello[1].value.startswith("worker-")
    assert len(hello[1].value) == len("worker-") + 32
    assert isinstance(hello[2], p.TransferPort) and hello[2].port > 0
    assert hello[3] == p.Info("worker-end-time", "0")
    assert hello[4] == p.Alive()
    assert hello[5] == p.Resources(cores=2, memory=1000, disk=1000, gpus=0, workers=1, tag=0)
    assert fake.raw.startswith(b"taskvine 13 ")


def test_hello_names_the_factory_before_alive(tmp_path):
    f = FakeManager(tmp_path, "--single-shot", "--from-factory", "fac-7")
    try:
        hello = f.hello()
        assert hello[3:5] == [p.Info("worker-end-time", "0"), p.Info("from-factory", "fac-7")]
        assert hello[5] == p.Alive()
    finally:
        f.close()


def test_check_answers_alive_and_resources(fake):
    fake.hello()
    fake.send(task(7, "true"), p.Check())
    assert isinstance(fake.until(p.Alive), p.Alive)
    assert fake.next().tag == 7


@pytest.mark.parametrize("size", [0, 1024, 1025])
def test_stdout_inline_up_to_1024_bytes(fake, size):
    fake.hello()
    fake.send(task(1, f"head -c {size} /dev/zero | tr '\\0' a"))
    done = fake.until(p.Complete)
    assert (done.result, done.exit_code, done.output_length, done.task_id) == (0, 0, size, 1)
    if size <= 1024:
        assert done.inline_stdout == b"a" * size
    else:
        assert done.inline_stdout == b""
        fake.send(p.SendStdout(1))
        assert fake.until(p.Stdout) == p.Stdout(1, size)
        received = b""
        while len(received) < size:
            received += fake.next().chunk
        assert received == b"a" * size


def test_stdout_with_nul_bytes_is_exact(fake):
    fake.hello()
    fake.send(task(1, "printf 'a\\000b\\000'"))
    assert fake.until(p.Complete).inline_stdout == b"a\x00b\x00"


def test_exit_codes_signals_and_wall_time(fake):
    fake.hello()
    fake.send(task(1, "exit 3"), task(2, "kill -9 $$"))
    results = {c.task_id: (c.result, c.exit_code) for c in (fake.until(p.Complete),
                                                             fake.until(p.Complete))}
    assert results == {1: (0, 3), 2: (0, 9)}
    fake.send(task(3, "sleep 30", wall_time=1))
    done = fake.until(p.Complete)
    assert (done.task_id, done.result, done.exit_code) == (3, 56, 9)


def test_put_file_dir_and_buffer_then_get_them_back(fake, tmp_path):
    fake.hello()
    fake.send(p.Put("file-a", 1, 5), p.FileItem("file-a", 5, 0o644, 1), b"hello",
              p.Put("dir-b", 1, 3), p.DirItem("dir-b", 0o755, 1), p.FileItem("x y", 3, 0o600, 1),
              b"abc", p.SymlinkItem("ln", "x y"), p.End(),
              p.Put("buffer-c", 0, 0), p.FileItem("buffer-c", 0, 0o755, 0))
    updates = [fake.until(p.CacheUpdate) for _ in range(3)]
    assert [(u.cachename, u.size, u.level) for u in updates] == [
        ("file-a", 5, 1), ("dir-b", 3 + len("x y"), 1), ("buffer-c", 0, 0)]
    fake.send(task(1, "cat in/d/'x y' in/a > out && ls -l in/d/ln | grep -q 'x y'",
                   infiles=(p.Mount("file-a", "in/a"), p.Mount("dir-b", "in/d")),
                   outfiles=(p.Mount("file-out", "out"),)))
    assert fake.until(p.CacheUpdate).cachename == "file-out"
    assert fake.until(p.Complete).exit_code == 0
    fake.send(p.Get("file-out"))
    assert fake.until(p.FileItem).size == 8
    assert fake.next() == p.Data(b"abchello")
    fake.send(p.GetFile("dir-b"), p.Get("nothing"))
    assert fake.next() == p.ErrorItem("dir-b", 21)
    assert fake.next() == p.ErrorItem("nothing", 2)


def test_missing_output_and_kill(fake):
    fake.hello()
    fake.send(task(1, "true", outfiles=(p.Mount("file-none", "none"),)))
    assert fake.until(p.Complete).result == 0
    fake.send(p.Get("file-none"))
    assert fake.until(p.ErrorItem) == p.ErrorItem("file-none", 2)
    fake.send(task(2, "sleep 30"), p.Kill(2), p.Check())
    fake.until(p.Alive)
    assert fake.next().tag == 2
    fake.send(task(3, "echo after"))
    done = fake.until(p.Complete)
    assert done.task_id == 3, "no complete may come for a killed task"


def test_two_one_core_tasks_run_at_once_and_too_big_is_forsaken(fake, tmp_path):
    fake.hello()
    marker = tmp_path / "m"
    # each task waits until the other has started: only possible if both run together
    fake.send(task(1, f"touch {marker}.1; while [ ! -e {marker}.2 ]; do sleep 0.05; done"),
              task(2, f"touch {marker}.2; while [ ! -e {marker}.1 ]; do sleep 0.05; done"),
              task(3, "true", cores=3))
    done = {c.task_id: c.result for c in (fake.until(p.Complete) for _ in range(3))}
    assert done == {1: 0, 2: 0, 3: 40}


def test_release_makes_a_single_shot_worker_exit_0(fake):
    fake.hello()
    fake.send(p.Release())
    assert fake.proc.wait(DEADLINE) == 0
    assert not fake.workspace.exists()


@pytest.mark.parametrize("mount", [
    p.Mount("file-a", "../escape"), p.Mount("file-a", "/tmp/abs"), p.Mount("../x", "in"),
])
def test_task_paths_that_escape_are_refused(fake, tmp_path, mount):
    fake.hello()
    fake.send(p.Put("file-a", 1, 1), p.FileItem("file-a", 1, 0o644, 0), b"x",
              task(1, "true", infiles=(mount,)))
    done = fake.until(p.Complete)
    assert (done.task_id, done.result) == (1, 1)
    assert not (tmp_path / "escape").exists() and not (fake.workspace / "escape").exists()


def test_symlink_output_pointing_out_is_not_served(fake, tmp_path):
    fake.hello()
    secret = tmp_path / "secret"
    secret.write_text("do not leak")
    fake.send(task(1, f"ln -s {secret} out", outfiles=(p.Mount("file-o", "out"),)))
    done = fake.until(p.Complete)
    assert done.result == 0
    fake.send(p.Get("file-o"))
    assert fake.until(p.ErrorItem).errno == 2


def test_put_with_an_escaping_name_closes_the_connection(tmp_path):
    fake = FakeManager(tmp_path)  # not single-shot: it must survive and reconnect
    try:
        fake.hello()
        fake.send(p.Put("../evil", 1, 1).encode() + b"file ../evil 1 0644 0\nx")
        assert fake.closed()
        assert not any(p.name == "evil" for p in tmp_path.rglob("*"))
        fake.accept()  # the worker comes back after its back-off
        assert isinstance(fake.next(), p.Hello)
    finally:
        fake.close()


def test_put_with_an_escaping_name_inside_is_refused_and_the_session_goes_on(fake, tmp_path):
    fake.hello()
    fake.send(p.Put("dir-e", 1, 1).encode() +
              b"dir dir-e 0755 0\nfile ..%2F..%2Fevil 1 0644 0\nxend\n", p.Check())
    refused = fake.until(p.CacheInvalid)
    assert refused.cachename == "dir-e" and "refused" in refused.text
    assert isinstance(fake.until(p.Alive), p.Alive)  # still in step, still connected
    assert not any(p.name == "evil" for p in tmp_path.rglob("*"))


def test_a_put_named_like_metadata_closes_the_connection(tmp_path):
    """As for an escaping name: ``x.meta`` would be the metadata file of object ``x`` (a
    link there once made the worker write its metadata outside the workspace)."""
    victim = tmp_path / "victim"
    victim.write_text("mine")
    fake = FakeManager(tmp_path)  # not single-shot: it must survive and reconnect
    try:
        fake.hello()
        fake.send(p.Put("x.meta", 3, 7).encode() + b"symlink x.meta %d\n" % len(str(victim))
                  + str(victim).encode())
        assert fake.closed()
        assert not os.path.lexists(fake.workspace / "cache" / "x.meta")
        fake.accept()  # the worker comes back after its back-off
        assert isinstance(fake.next(), p.Hello)
        assert victim.read_text() == "mine"
    finally:
        fake.close()


def test_links_in_a_put_are_kept_as_links_and_never_followed(fake, tmp_path):
    victim = tmp_path / "victim"  # what the link leads to, from a sandbox: ws/task.1/d/s
    victim.write_text("mine")
    fake.hello()
    fake.send(p.Put("dir-s", 1, 1).encode() + b"dir dir-s 0755 0\nsymlink s 8\n../../..end\n",
              task(1, "true", infiles=(p.Mount("dir-s", "d"),),
                   outfiles=(p.Mount("file-v", "d/s/victim"),)))
    assert fake.until(p.CacheUpdate).cachename == "dir-s"
    assert os.readlink(fake.workspace / "cache" / "dir-s" / "s") == "../../.."
    assert fake.until(p.Complete).task_id == 1
    fake.send(p.Get("file-v"))
    assert fake.until(p.ErrorItem).errno == 2  # the output through the link was not taken
    assert victim.read_text() == "mine"


def test_garbage_line_closes_and_the_worker_reconnects(tmp_path):
    fake = FakeManager(tmp_path)
    try:
        fake.hello()
        fake.send(b"hello there\n")
        assert fake.closed()
        fake.accept()
        assert isinstance(fake.next(), p.Hello)
        assert "bad message from manager" in open(fake.log).read()
    finally:
        fake.close()


def test_environment_of_a_task(fake):
    fake.hello()
    fake.send(task(1, 'echo "$CORES $MEMORY $DISK $OMP_NUM_THREADS $MKL_NUM_THREADS $A"; '
                      'test -d "$TMPDIR" && test -z "$DISPLAY" && echo ok', cores=2,
                   memory=300, disk=40, env=("A=x y",)))
    out = fake.until(p.Complete).inline_stdout.decode().splitlines()
    assert out == ["2 300 40 2 2 x y", "ok"]


def test_end_time_passed_while_running(fake):
    fake.hello()
    fake.send(task(1, "sleep 30", end_time=time.time() + 1))
    done = fake.until(p.Complete)
    assert (done.result, done.exit_code) == (24, 9)


def test_failed_url_answers_cache_invalid_and_forsakes_its_task(fake):
    fake.hello()
    fake.send(p.PutUrl("http://127.0.0.1:1/x", "url-x", 1, 0, 0o755, "T1"),
              task(3, "cat x", infiles=(p.Mount("url-x", "x"),)))
    bad = fake.until(p.CacheInvalid)
    assert (bad.cachename, bad.transfer_id) == ("url-x", "T1")
    assert "http://127.0.0.1:1/x" in bad.text
    assert isinstance(fake.next(), p.Alive)
    assert isinstance(fake.next(), p.Resources)
    done = fake.next()
    assert (done.task_id, done.result) == (3, 40)


def test_url_fetched_into_the_cache_before_its_task_runs(fake, tmp_path):
    import functools
    import http.server
    import threading
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "page.txt").write_bytes(b"from http\n")
    (tmp_path / "local.txt").write_bytes(b"from file\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(tmp_path / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fake.hello()
        url = f"http://127.0.0.1:{server.server_address[1]}/page.txt"
        fake.send(p.PutUrl(url, "url-a", 1, 0, 0o644, "T1"),
                  p.PutUrl(f"file://{tmp_path}/local.txt", "url-b", 1, 0, 0o755, "T2"),
                  task(4, "cat a b", infiles=(p.Mount("url-a", "a"), p.Mount("url-b", "b"))))
        updates = {u.transfer_id: u for u in (fake.until(p.CacheUpdate) for _ in range(2))}
        assert (updates["T1"].cachename, updates["T1"].type, updates["T1"].size) == (
            "url-a", 2, len(b"from http\n"))
        assert (updates["T2"].cachename, updates["T2"].type) == ("url-b", 2)
        done = fake.until(p.Complete)
        assert (done.result, done.inline_stdout) == (0, b"from http\nfrom file\n")
        assert (fake.workspace / "cache" / "url-b").stat().st_mode & 0o777 == 0o755
    finally:
        server.shutdown()


def test_peer_fetch_through_the_transfer_server(fake):
    port = fake.hello()[2].port
    fake.send(p.Put("dir-a", 1, 3), p.DirItem("dir-a", 0o755, 1),
              p.FileItem("f", 3, 0o600, 1), b"abc", p.SymlinkItem("l", "f"), p.End())
    assert fake.until(p.CacheUpdate).cachename == "dir-a"
    fake.send(p.PutUrl(f"workerip://127.0.0.1:{port}/dir-a", "dir-copy", 1, 0, 0o755, "T9"),
              p.PutUrl(f"workerip://127.0.0.1:{port}/nothing", "no-copy", 1, 0, 0o755, "T8"))
    got = {}
    for _ in range(2):
        ev = fake.until((p.CacheUpdate, p.CacheInvalid))
        got[ev.transfer_id] = ev
    assert isinstance(got["T9"], p.CacheUpdate) and got["T9"].size == 3 + 1
    assert os.readlink(fake.workspace / "cache" / "dir-copy" / "l") == "f"
    assert (fake.workspace / "cache" / "dir-copy" / "f").read_bytes() == b"abc"
    assert isinstance(got["T8"], p.CacheInvalid) and "No such file" in got["T8"].text


def test_a_small_object_stays_in_memory_until_a_task_needs_its_file(fake):
    port = fake.hello()[2].port
    fake.send(p.Put("buffer-m", 0, 5), p.FileItem("buffer-m", 5, 0o755, 1), b"hello")
    assert fake.until(p.CacheUpdate).size == 5
    on_disk = fake.workspace / "cache" / "buffer-m"
    fake.send(p.GetFile("buffer-m"))
    item = fake.until(p.FileItem)
    assert (item.name, item.size, item.mode) == ("buffer-m", 5, 0o755)
    assert fake.next() == p.Data(b"hello")
    assert not on_disk.exists()  # served from memory
    fake.send(p.PutUrl(f"workerip://127.0.0.1:{port}/buffer-m", "buffer-copy", 0, 0, 0o755, "T1"))
    assert fake.until(p.CacheUpdate).transfer_id == "T1"
    assert not on_disk.exists()  # a peer got it from memory too
    fake.send(task(1, "cat in > out", infiles=(p.Mount("buffer-m", "in"),),
                   outfiles=(p.Mount("file-out", "out"),)))
    assert fake.until(p.Complete).exit_code == 0
    assert on_disk.read_bytes() == b"hello" and on_disk.stat().st_mode & 0o777 == 0o755
    fake.send(p.Get("file-out"), p.Get("buffer-copy"))
    for _ in range(2):
        fake.until(p.FileItem)
        assert fake.next() == p.Data(b"hello")
    fake.send(p.Unlink("buffer-m"), p.Check())
    fake.until(p.Alive)
    assert not on_disk.exists()


@pytest.mark.parametrize("request_line,errno", [
    (b"get ..\n", 22), (b"get a%2Fb\n", 22), (b"get dir-a.meta\n", 22),
    (b"get missing\n", 2)])
def test_transfer_server_refuses_what_is_not_a_cache_entry(fake, request_line, errno):
    port = fake.hello()[2].port
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
        s.sendall(request_line)
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    d = p.Decoder("transfer")
    d.feed(reply)
    assert d.next_event().errno == errno


def test_forever_objects_survive_a_worker_restart(tmp_path):
    first = FakeManager(tmp_path, "--single-shot")
    try:
        first.hello()
        first.send(p.Put("file-forever", 3, 2), p.FileItem("file-forever", 2, 0o644, 1), b"ok",
                   p.Put("file-workflow", 1, 2), p.FileItem("file-workflow", 2, 0o644, 1), b"no")
        first.until(p.CacheUpdate)
        first.until(p.CacheUpdate)
        first.send(p.Release())
        assert first.proc.wait(DEADLINE) == 0
    finally:
        first.close()
    second = FakeManager(tmp_path, "--single-shot")
    try:
        hello = [second.next() for _ in range(5)]
        assert hello[2:4] == [p.Info("transfer-auth", "1"), p.Info("monitor", "1")]
        hello = hello[:2] + hello[4:]
        assert hello[2] == p.CacheUpdate("file-forever", 0, 3, 2, hello[2].mtime,
                                         hello[2].duration_us, hello[2].start_us, "X")
        assert isinstance(second.next(), p.TransferPort)
        second.send(task(1, "cat f", infiles=(p.Mount("file-forever", "f"),)))
        assert second.until(p.Complete).inline_stdout == b"ok"
        assert not (second.workspace / "cache" / "file-workflow").exists()
    finally:
        second.close()


def test_kill_leaves_no_sandbox_behind(fake):
    fake.hello()
    # stdout too long to go inline: the sandbox stays until ``kill`` (one whose stdout went
    # inline is recycled as soon as ``complete`` is out)
    fake.send(task(5, f"echo hi > f; mkdir d; printf '%{p.INLINE_STDOUT_MAX + 1}s' x"))
    assert fake.until(p.Complete).output_length > p.INLINE_STDOUT_MAX
    assert (fake.workspace / "task.5").is_dir()
    fake.send(p.Kill(5), p.Check())
    fake.until(p.Alive)
    assert not (fake.workspace / "task.5").exists()
    assert os.listdir(fake.workspace / "trash") == []


# ---------------------------------------------------------------- hardening (issue 9)

def test_a_mini_task_without_its_recipe_input_forsakes_its_waiting_tasks(fake):
    """The failed recipe takes the waiting tasks out of the queue while the queue is walked
    (the worker died with ``ValueError: ... not in deque``)."""
    fake.hello()
    recipe = p.TaskBody(command="tar xf input.tar", infiles=(p.Mount("file-never-put",
                                                                      "input.tar"),))
    fake.send(p.MiniTaskMsg("output", "task-untar", 1, 0, 0o755, recipe),
              *(task(i, "ls env", infiles=(p.Mount("task-untar", "env"),)) for i in (1, 2)))
    assert fake.until(p.CacheInvalid).cachename == "task-untar"
    forsaken = {fake.until(p.Complete).task_id for _ in range(2)}
    assert forsaken == {1, 2}
    fake.send(task(3, "echo alive"))
    assert fake.until(p.Complete).inline_stdout == b"alive\n"


@pytest.mark.parametrize("wire", [
    b"task 1\ncmd 4\ntruecores inf\nend\n",
    b"task 1\ncmd 4\ntruecores nan\nend\n",
    b"task 1\ncmd 4\ntruewall_time 1e400\nend\n",
    b"task 1\ncmd 4\ntrueend_time nan\nend\n",
    b"task -5\ncmd 4\ntrueend\n",
    b"task 0\ncmd 4\ntrueend\n",
    b"put file-x 0 1e400\n",
    b"put file-x 0 -1\n",
    b"send_stdout 1e400\n",
    b"task 1\ncmd 99999999999999999999\n",
])
def test_hostile_numbers_close_the_connection_and_the_worker_comes_back(tmp_path, wire):
    fake = FakeManager(tmp_path)
    try:
        fake.hello()
        fake.send(wire)
        assert fake.closed()
        fake.accept()  # it did not die: it reconnects
        assert isinstance(fake.next(), p.Hello)
    finally:
        fake.close()


def test_a_task_id_still_running_closes_the_connection(tmp_path):
    fake = FakeManager(tmp_path)
    try:
        fake.hello()
        fake.send(task(1, "sleep 30"), task(1, "true"))
        assert fake.closed()
        fake.accept()
        assert isinstance(fake.next(), p.Hello)
    finally:
        fake.close()


def test_a_finished_task_sent_again_without_kill_runs_again(fake):
    fake.hello()
    fake.send(task(1, "echo first"))
    assert fake.until(p.Complete).inline_stdout == b"first\n"
    fake.send(task(1, "echo again"))
    assert fake.until(p.Complete).inline_stdout == b"again\n"


def test_a_put_the_disk_refuses_is_answered_and_the_session_goes_on(tmp_path):
    """A file too large for the disk (here: for the worker's file size limit), received
    both ways: spliced (small) and with direct writes (large)."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, limit[1]))  # inherited by the worker
    try:
        fake = FakeManager(tmp_path, "--single-shot")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    try:
        fake.hello()
        for name, size in (("file-small", 3 << 20), ("file-large", 80 << 20)):
            fake.send(p.Put(name, 1, size), p.FileItem(name, size, 0o644, 0))
            chunk = b"z" * (1 << 20)
            for _ in range(size >> 20):
                fake.send(chunk)
            fake.send(task(1 if name == "file-small" else 2, "true",
                           infiles=(p.Mount(name, "in"),)))
            refused = fake.until(p.CacheInvalid)
            assert refused.cachename == name and "cannot store" in refused.text
            assert fake.until(p.Complete).result == 40  # forsaken: another worker may do it
            fake.send(p.Check())
            assert isinstance(fake.until(p.Alive), p.Alive)
        assert fake.proc.poll() is None
    finally:
        fake.close()


def test_tasks_get_the_signals_python_ignores(fake):
    """SIGPIPE ends a writer whose reader went away, as in any shell (the worker, a Python
    program, ignores it, and ignored signals are inherited)."""
    fake.hello()
    fake.send(task(1, "yes | head -1"))
    done = fake.until(p.Complete)
    assert (done.exit_code, done.inline_stdout) == (0, b"y\n")
