"""Live fuzzing of the manager, the worker and the worker's transfer port.

Each test is seeded: the seed is printed (pytest shows it when the test fails) and
``TASKVINE_FUZZ_SEED=<seed>`` replays the same choices (thread timing still varies).

* Manager: a real manager with two real workers runs a stream of tasks while fuzzer threads
  open raw connections to its port and send garbage, malformed protocol, hostile numbers,
  old-protocol hellos, status requests from connections that hold tasks, overlong lines.
* Worker: a real ``vine_worker`` serves a fake manager (this test) that sends hostile but
  well-framed messages (escaping names and paths, absolute paths, out-of-range numbers), and
  closes and accepts the reconnection again and again. The worker must stay alive, keep
  answering, and write nothing outside its workspace.
* Transfer port: hostile requests to the worker's peer transfer server; it must serve nothing
  but its cache entries.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time

import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine import protocol as p
from ndcctools.taskvine import security
from tests.conftest import transfer_request, wait_connected, wait_until
from tests.fuzzing import (
    HOSTILE_NUMBERS,
    NON_UTF8,
    REFUSED_NUMBERS,
    STATUS_KEYWORDS,
    Wire,
    deadline_loop,
    diff_snapshots,
    merge_data,
    seed_from_env,
    snapshot,
    url,
)

pytestmark = pytest.mark.slow

REAL_HOST = socket.gethostname().split()[0] or "localhost"  # what our workers say in hello


def hello_lines(hostname: str = "fuzzhost", cores: str = "1.000000", end_time: str = "0") -> bytes:
    """A complete worker hello (spec §2.3): after it the manager may send tasks."""
    return (f"taskvine 13 {hostname} Linux x86_64 8.0.0\ninfo worker-id worker-fuzz\n"
            f"transfer-port 1\ninfo worker-end-time {end_time}\nalive\nresources\n"
            f"cores {cores}\nmemory 1000.000000\ndisk 1000.000000\ngpus 0.000000\n"
            f"workers 1.000000\ntag 0\nend\n").encode()


# =========================================================================== manager


class ManagerFuzzer(threading.Thread):
    """Opens connection after connection to the manager's port and misbehaves on each.

    Fake workers here never send a well-formed ``complete``/``stdout``/``update`` for a task
    id a real task may have (``Wire(safe_ids=True)``): the manager could not tell such a lie
    from the truth, and that is not what is under test.
    """

    def __init__(self, port: int, rng: random.Random, stop: threading.Event,
                 password: bytes | None = None):
        super().__init__(daemon=True)
        self.port = port
        self.password = password  # a TLS manager with this password: most connections log in
        self.rng = rng
        self.stop = stop
        self.counts: dict[str, int] = {}
        self.failure: BaseException | None = None

    def run(self) -> None:
        scripts = [self.garbage, self.fuzzed_stream, self.fuzzed_stream, self.old_protocol,
                   self.status_client, self.task_thief, self.task_thief, self.hostile_numbers,
                   self.long_line, self.non_utf8_hello, self.open_and_drop]
        try:
            while not self.stop.is_set():
                script = self.rng.choice(scripts)
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                        if self.password is not None and self.rng.random() < 0.7:
                            s = security.wrap_client(s, "localhost", 5)
                            security.exchange_blocking(s, self.password, 5)
                        script(s)
                except OSError:
                    pass  # the manager closed on us: that is its right
                self.counts[script.__name__] = self.counts.get(script.__name__, 0) + 1
                time.sleep(self.rng.choice((0, 0.005, 0.02)))
        except BaseException as e:  # reported by the test
            self.failure = e

    # -- helpers
    def send_in_pieces(self, s: socket.socket, data: bytes) -> None:
        while data:
            n = self.rng.choice((1, 7, 100, 4096, len(data)))
            s.sendall(data[:n])
            data = data[n:]
            if self.rng.random() < 0.1:
                time.sleep(0.005)

    def drain(self, s: socket.socket, seconds: float, until: bytes | None = None) -> bytes:
        """What the manager sends us within ``seconds`` (stops early at EOF or ``until``)."""
        got = b""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            got += chunk
            if until is not None and until in got:
                break
        return got

    def finish(self, s: socket.socket) -> None:
        """Close politely, or abruptly (RST), or after waiting to be closed."""
        r = self.rng.random()
        if r < 0.3:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        elif r < 0.5:
            self.drain(s, 0.2)

    # -- scripts
    def garbage(self, s):
        self.send_in_pieces(s, self.rng.randbytes(self.rng.randint(0, 6000)))
        self.finish(s)

    def fuzzed_stream(self, s):
        wire = Wire(self.rng, mutate=self.rng.choice((0.02, 0.1, 0.3)), safe_ids=True)
        self.send_in_pieces(s, wire.stream("worker", self.rng.randint(1, 15)))
        self.finish(s)

    def old_protocol(self, s):
        host = REAL_HOST if self.rng.random() < 0.5 else "oldhost"
        s.sendall(f"taskvine 12 {host} Linux x86_64 7.0.0\n".encode())
        self.drain(s, 0.3)

    def status_client(self, s):
        ask = self.rng.choice([k.encode() + b"\n" for k in STATUS_KEYWORDS] +
                              [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                               b"GET /task_status HTTP/1.1\r\n\r\n"])
        s.sendall(ask)
        self.drain(s, 0.5)

    def task_thief(self, s):
        """A fake worker that takes tasks, then turns into something else."""
        host = REAL_HOST if self.rng.random() < 0.5 else "thief"
        s.sendall(hello_lines(host, cores=self.rng.choice(("1.000000", "4.000000"))))
        self.drain(s, self.rng.choice((0.05, 0.3, 0.8)), until=b"\nend\n")
        then = self.rng.choice((
            b"task_status\n", b"worker_status\n", b"GET / HTTP/1.1\r\n\r\n", b"manager_status\n",
            b"GET /task_status HTTP/1.1\r\n\r\n", b"garbage line\n", b"taskvine 12 x y z w\n",
            b"complete 0 0 0 0 0 0 0 999999999\n", b"alive\n", b""))
        s.sendall(then)
        self.finish(s)

    def hostile_numbers(self, s):
        value = self.rng.choice(HOSTILE_NUMBERS)
        line = self.rng.choice((
            "resources\ncores {v}\nmemory 1000\ndisk 1000\ngpus 0\nworkers 1\ntag 0\nend\n",
            "resources\ncores 1\nmemory {v}\ndisk {v}\ngpus {v}\nworkers {v}\ntag {v}\nend\n",
            "info worker-end-time {v}\n", "info tasks_running {v}\n",
            "info idle-disconnect-request {v}\n", "info library-update {v} 2\n",
            "transfer-port {v}\n", "transfer-hostport 127.0.0.1 {v}\n",
            "cache-update file-fuzz {v} 0 {v} {v} {v} {v} X\n",
            "cache-update file-fuzz 0 0 {v} 0 0 0 X\n", "cache-invalid file-fuzz {v} X\nab",
            "complete {v} 0 0 0 0 0 0 999999999\n", "complete 0 {v} 0 0 0 0 0 999999999\n",
            "complete 0 0 {v} 0 0 0 0 999999999\n", "complete 0 0 5 {v} 0 0 0 999999999\nhello",
            "complete 0 0 0 0 {v} {v} {v} 999999999\n", "stdout 999999999 {v}\nab",
            "update 999999999 out {v} {v}\nab", "taskvine {v} h Linux x86_64 8.0.0\n"))
        head = hello_lines(self.rng.choice(("fuzzhost", REAL_HOST)),
                           end_time=self.rng.choice(("0", value)))
        self.send_in_pieces(s, head + line.replace("{v}", value).encode("utf-8",
                                                                         "surrogateescape"))
        self.finish(s)

    def long_line(self, s):
        prefix = self.rng.choice((b"", b"taskvine 13 ", hello_lines() + b"info x "))
        s.sendall(prefix + b"y" * self.rng.choice((4096, 5000, 70000)) + b"\n")
        self.finish(s)

    def non_utf8_hello(self, s):
        bad = self.rng.choice(NON_UTF8)
        s.sendall(b"taskvine 13 h" + bad + b" Linux x86_64 8.0.0\ninfo worker-id " + bad +
                  b"\nfeature " + bad + b"\n" + hello_lines()[len(b"taskvine 13 fuzzhost "):])
        self.drain(s, 0.1)

    def open_and_drop(self, s):
        if self.rng.random() < 0.5:
            time.sleep(self.rng.choice((0, 0.1, 0.4)))
        self.finish(s)


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls+password"])
def test_manager_survives_fuzzed_connections(secure, workers, tmp_path):
    seed = seed_from_env()
    print(f"fuzz seed {seed} (replay with TASKVINE_FUZZ_SEED={seed})")
    rng = random.Random(seed)
    with vine.Manager(port=0, run_info_path=str(tmp_path / "vine-run-info"),
                      ssl=secure) as m:
        password = None
        extra: tuple[str, ...] = ()
        if secure:  # most fuzzers log in; the others are refused at the door
            password = b"fuzz password\n"
            (tmp_path / "pw").write_bytes(password)
            m.set_password_file(str(tmp_path / "pw"))
            extra = ("--ssl", "--password", str(tmp_path / "pw"))
        _fuzz_manager(m, workers, tmp_path, rng, seed, password, extra)


def _fuzz_manager(m, workers, tmp_path, rng, seed, password, extra):
    real = [workers.start(m, cores=2, extra=extra) for _ in range(2)]
    wait_connected(m, 2)

    stop = threading.Event()
    fuzzers = [ManagerFuzzer(m.port, random.Random(rng.getrandbits(64)), stop, password)
               for _ in range(3)]
    submitted: dict[int, tuple[vine.Task, bytes, vine.File | None, bytes]] = {}
    returned: set[int] = set()

    def submit_one() -> None:
        i = len(submitted)
        data = f"input {i} {rng.random()}\n".encode()
        t = vine.Task(f"cat in; echo task {i}" + ("; cat in > out" if i % 2 else ""))
        if i % 3:
            t.add_input(m.declare_buffer(data), "in")
        else:
            local = tmp_path / f"input{i}.txt"
            local.write_bytes(data)
            t.add_input(m.declare_file(str(local)), "in")
        out = None
        if i % 2:
            out = m.declare_buffer()
            t.add_output(out, "out")
        submitted[m.submit(t)] = (t, data + f"task {i}\n".encode(), out, data)

    def collect(timeout: int) -> None:
        t = m.wait(timeout)  # any exception escaping wait() fails the test here
        if t is None:
            return
        assert t.id in submitted and t.id not in returned, f"task {t.id} came back twice"
        returned.add(t.id)
        task, stdout, out, data = submitted[t.id]
        assert t.successful(), (seed, t.id, t.result, t.std_output)
        assert t.std_output.encode() == stdout, (seed, t.id, t.std_output)
        if out is not None:
            assert out.contents() == data, (seed, t.id, out.contents())

    def diagnose() -> str:
        status = m.status("manager")[0]
        missing = sorted(set(submitted) - returned)
        return (f"seed {seed}: {len(returned)}/{len(submitted)} tasks back (not {missing[:10]}); "
                f"blocked hosts {status.get('workers_blocked')}; stats {m.stats}")

    for f in fuzzers:
        f.start()
    fuzz_end = time.monotonic() + 15
    late = 0  # tasks back in the last third of the fuzzing
    try:
        while time.monotonic() < fuzz_end:
            while len(submitted) - len(returned) < 4:
                submit_one()
            before = len(returned)
            collect(1)
            if fuzz_end - time.monotonic() < 5:
                late += len(returned) - before
    finally:
        stop.set()
        for f in fuzzers:
            f.join(10)
    for f in fuzzers:
        assert f.failure is None, f.failure
    during = len(returned)
    print(f"{during} tasks done while fuzzing ({late} in the last 5 s); connections: "
          f"{sum(sum(f.counts.values()) for f in fuzzers)}")
    assert late >= 5, "the real workers stopped getting tasks while fuzzed: " + diagnose()

    # after the storm: fresh work still runs on the real workers, everything comes back
    for _ in range(10):
        submit_one()
    deadline = time.monotonic() + 45
    while len(returned) < len(submitted):
        assert time.monotonic() < deadline, "tasks did not come back: " + diagnose()
        collect(1)
    assert returned == set(submitted)
    wait_until(lambda: m.wait(0) is None and m.stats.workers_connected == len(real)
               and m.stats.workers_init == 0, timeout=20)
    assert m.empty()
    stats = m.stats
    assert (stats.tasks_waiting, stats.tasks_running, stats.tasks_on_workers) == (0, 0, 0)
    assert stats.workers_connected == stats.workers_able == len(real), diagnose()
    assert all(w.poll() is None for w in real), "a real worker died"


# =========================================================================== worker


class Session:
    """One connection from the worker: a thread reads and decodes everything it sends."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.decoder = p.Decoder("worker")
        self.raw = bytearray()
        self.events: list = []
        self.error: p.RemoteProtocolError | None = None
        self.eof = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.eof = True
                    self.cond.notify_all()
                    return
                self.raw += data
                if self.error is None:
                    try:
                        self.decoder.feed(data)
                        while (ev := self.decoder.next_event()) is not None:
                            self.events.append(ev)
                    except p.RemoteProtocolError as e:
                        self.error = e
                self.cond.notify_all()

    def count(self, kind) -> int:
        with self.cond:
            return sum(1 for ev in self.events if isinstance(ev, kind))

    def wait_for(self, predicate, timeout: float) -> bool:
        """Wait until ``predicate()`` (called with the lock held) or EOF; True if it holds."""
        with self.cond:
            self.cond.wait_for(lambda: predicate() or self.eof, timeout)
            return bool(predicate())

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(10)


class GuardedWorker:
    """A real ``vine_worker`` whose workspace sits in a guarded directory full of decoys,
    connected to the test playing its manager.

    ``tmp_path/outer/parent/guard/ws`` is the workspace and the worker's current directory is
    ``guard``: every hostile relative path the fuzzer sends has at most three ``..``, so even a
    worker that followed one would stay inside ``tmp_path``, where any change is seen.
    """

    def __init__(self, tmp_path, marker: bytes):
        self.root = tmp_path
        self.parent = tmp_path / "outer" / "parent"
        self.guard = self.parent / "guard"
        self.ws = self.guard / "ws"
        self.log = self.guard / "worker.log"
        self.stderr = self.guard / "worker.stderr"
        self.guard.mkdir(parents=True)
        self.marker = marker
        self.decoys = [tmp_path / "decoy-t.txt", self.parent / "decoy-p.txt",
                       self.guard / "decoy-g.txt", self.guard / "decoy-dir" / "f"]
        for d in self.decoys:
            d.parent.mkdir(parents=True, exist_ok=True)
            d.write_bytes(marker + b"\n")
        self.source = tmp_path / "outer" / "source.txt"  # a harmless file for file:// URLs
        self.source.write_bytes(b"harmless source\n")
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ndcctools.taskvine.tools.vine_worker", "127.0.0.1",
             str(self.port), "--cores", "2", "--memory", "1000", "--disk", "1000",
             "--workspace", str(self.ws), "--timeout", "60", "-d", "all", "-o", str(self.log),
             "--max-backoff", "0.2"],  # come back quickly: many sessions here end at once
            cwd=self.guard, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.stderr, "wb"), start_new_session=True)
        self.sessions: list[Session] = []
        self.transfer_port = 0

    def accept(self, timeout: float = 20) -> Session:
        """The worker's next connection, once its hello is in (fails if it does not come)."""
        self.srv.settimeout(timeout)
        try:
            sock, _ = self.srv.accept()
        except TimeoutError:
            tail = self.stderr.read_bytes()[-3000:].decode("utf-8", "replace")
            raise AssertionError(f"the worker did not connect within {timeout}s (exit status "
                                 f"{self.proc.poll()}); its stderr ends with:\n{tail}") from None
        s = Session(sock)
        self.sessions.append(s)
        assert s.wait_for(lambda: any(isinstance(e, p.Resources) for e in s.events), 20), \
            f"no hello from the worker: {bytes(s.raw[:300])!r} {s.error}"
        ports = [e.port for e in s.events if isinstance(e, p.TransferPort)]
        if ports:
            self.transfer_port = ports[0]
        return s

    def untouched(self) -> dict:
        return snapshot(self.root, skip=[self.ws, self.log, self.stderr])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tracebacks(self) -> list[str]:
        """Unexpected exceptions the worker caught and logged (it may survive them by
        dropping the connection, but nothing a manager sends should cause one)."""
        text = self.log.read_bytes().decode("utf-8", "replace") if self.log.exists() else ""
        text += self.stderr.read_bytes().decode("utf-8", "replace")
        found = []
        for part in text.split("Traceback (most recent call last):\n")[1:]:
            lines = part.splitlines()
            n = next((i for i, line in enumerate(lines) if not line.startswith(" ")), len(lines))
            found.append("\n".join(lines[max(0, n - 6):n + 1]))  # innermost frames, the error
        return found

    def leaks(self, data: bytes) -> list[str]:
        return [what for what, secret in (("a decoy's content", self.marker),
                                          ("/etc/passwd", b"root:x:0:")) if secret in data]

    def close(self) -> None:
        for s in self.sessions:
            s.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.srv.close()


@pytest.fixture
def guarded(tmp_path):
    seed = seed_from_env()
    print(f"fuzz seed {seed} (replay with TASKVINE_FUZZ_SEED={seed})")
    w = GuardedWorker(tmp_path, marker=b"SECRET-%d-DO-NOT-LEAK" % seed)
    w.seed = seed
    yield w
    w.close()


SAFE_COMMANDS = ("true", "echo hi", "echo out > out", "cat in", "cat in > out", "ls", "exit 3",
                 "sleep 0.1", "mkdir -p d && echo f > d/f", "mkdir -p out && echo f > out/f",
                 "cat in/f", "head -c 3000 /dev/zero", "echo err >&2; false")


class HostileManager:
    """Manager -> worker messages that are framed right (every length exact, or one that no
    reader may accept) and, one message in four, hostile in their content: names and paths
    that escape, absolute paths to the decoys, out-of-range numbers (``1e400``, ``nan``,
    ``-1``, huge). The other messages are valid, so that a session gets somewhere (a worker
    may hang up on a hostile message) and the hostile ones meet a worker with work going on.

    Commands are only ever from ``SAFE_COMMANDS``: this worker really runs them. Whatever can
    write, remove or move (cache names of ``put``/``puturl``/``unlink``/``mini_task``,
    sandbox paths) only ever names something inside the test's directory.
    """

    VALID_NAMES = ("file-a", "dir-b", "buffer-c", "file-out", "url-d", "mini-e", "file-x")
    VALID_PATHS = ("in", "out", "d/f", "in/f", "./in", "d//f", "a b")

    def __init__(self, rng: random.Random, w: GuardedWorker):
        self.rng = rng
        self.w = w
        self.next_id = 1
        self.evil = False  # is the message being made a hostile one?
        decoys = [str(d) for d in w.decoys]
        self.escaping = ["..", ".", "../x", "../../x", "../../../x", "a/../../x", "x/..",
                         "../ws", "../../decoy-g.txt", "../../../decoy-p.txt", "../../decoy-dir",
                         "cache", "trash", "x.meta", "file-a.meta", str(w.guard),
                         str(w.guard / "new"), *decoys]

    # -- fields
    def pick(self, valid, hostile=HOSTILE_NUMBERS, p_hostile: float = 0.3) -> bytes:
        if self.evil and self.rng.random() < p_hostile:
            value = self.rng.choice(hostile)
        else:
            value = self.rng.choice(valid)
        return str(value).encode("utf-8", "surrogateescape")

    def length(self, n: int) -> bytes:
        """A length that frames what follows: exact, or one every reader must refuse."""
        return self.pick([n], REFUSED_NUMBERS, 0.1)

    def name(self, write: bool = True) -> bytes:
        """A cache name; a hostile one only names something inside the test's directory,
        unless nothing is written (``get``)."""
        if not self.evil or self.rng.random() < 0.5:
            return self.rng.choice(self.VALID_NAMES).encode()
        return self.rng.choice(self.escaping if write else
                               [*self.escaping, "/etc/passwd", "/etc", "/"]).encode()

    def path(self) -> bytes:
        if not self.evil or self.rng.random() < 0.5:
            return url(self.rng.choice(self.VALID_PATHS))
        return url(self.rng.choice([*self.escaping, "%00"]))

    def task_id(self) -> bytes:
        self.next_id += 1
        return self.pick([self.next_id], [0, -1, -2, -self.next_id, 1 << 62, *HOSTILE_NUMBERS])

    def any_id(self) -> bytes:
        return self.pick([self.rng.randint(0, self.next_id), -1])

    # -- messages
    def body(self, commands=SAFE_COMMANDS, resources: bool = True) -> bytes:
        rng = self.rng
        cmd = rng.choice(commands).encode()
        lines = [b"cmd %s\n%s" % (self.length(len(cmd)), cmd)]
        if rng.random() < 0.8:
            lines.append(b"category %s\n" % self.pick(  # sent raw: non-UTF-8 bytes too
                ["default", "fuzz"], ["..", "%00", "\udcff", "caf\udcc3", "\udced\udca0\udc80"]))
        if resources:
            for key, valid in ((b"cores", ["1.000", "2.000", "0.500", "0"]),
                               (b"memory", [10, 100, 0]), (b"disk", [10, 100, 0]),
                               (b"gpus", [0])):
                if rng.random() < 0.7:
                    lines.append(b"%s %s\n" % (key, self.pick(valid)))
            if rng.random() < 0.3:  # our extension: measure it (watchdog, time series)
                lines.append(b"monitor %s %s %s\n" % (self.pick(["0.1", "1.000", "5"]),
                                                      self.pick([0, 1]), self.pick([0, 1])))
            for key, valid in ((b"wall_time", ["1.000000", "60.000000", "0.001"]),
                               (b"end_time", [f"{time.time() + 60:.6f}",
                                              f"{time.time() - 60:.6f}"])):
                if rng.random() < (0.8 if self.evil else 0.2):
                    lines.append(b"%s %s\n" % (key, self.pick(valid, p_hostile=0.6)))
        for _ in range(rng.randint(0, 2)):
            var = rng.choice((b"A=1", b"B=x y", b"=x", b"noequals", b"PATH=/nonexistent",
                              b"C=" + rng.choice(NON_UTF8)))
            lines.append(b"env %s\n%s\n" % (self.length(len(var)), var))
        for _ in range(rng.randint(0, 3)):
            kind = rng.choice((b"infile", b"outfile"))
            flags = self.pick([0, 32, 64, 2, 96], p_hostile=0.1)
            lines.append(b"%s %s %s %s\n" % (kind, self.name(), self.path(), flags))
        rng.shuffle(lines)
        return b"".join(lines) + b"end\n"

    def item(self, name: bytes, depth: int = 0) -> bytes:
        rng = self.rng
        kind = rng.choice(("file", "file", "dir", "symlink") if depth < 2 else ("file",))
        if kind == "file":
            content = rng.choice((b"", b"data\n", b"z" * 3000))
            return b"file %s %s %s %s\n%s" % (url(name), self.length(len(content)),
                                             self.pick(["0644", "0755", "0600"], p_hostile=0.1),
                                             self.pick([0, 1700000000], p_hostile=0.1), content)
        if kind == "dir":
            names = [b"f", b"g h", b"\xc3\xa9"]
            if self.evil:
                names += [b"..", b".", b"a/b", b"../x", b"../../decoy-g.txt",
                          str(self.w.decoys[2]).encode()]
            inner = b"".join(self.item(rng.choice(names), depth + 1)
                             for _ in range(rng.randint(0, 3)))
            return b"dir %s %s %s\n%send\n" % (url(name), self.pick(["0755", "40755"]),
                                               self.pick([0, 1], p_hostile=0.1), inner)
        targets = [b"f", b"d/../f", b"x/y"]
        if self.evil:
            # absolute targets are decoys: a worker that wrote through a link it was sent
            # must damage something this test checks, never the machine's own files
            targets += [b"../../decoy-g.txt", str(self.w.decoys[1]).encode(),
                        str(self.w.decoys[0]).encode(), b"a/../../b", b""]
        target = rng.choice(targets)
        return b"symlink %s %s\n%s" % (url(name), self.length(len(target)), target)

    def message(self) -> bytes:
        rng = self.rng
        self.evil = rng.random() < 0.25
        kind = rng.choice(("task", "task", "task", "task", "put", "put", "puturl", "mini_task",
                           "get", "getfile", "unlink", "kill", "send_stdout", "send_results",
                           "release", "garbage"))
        if kind == "task":
            return b"task %s\n" % self.task_id() + self.body()
        if kind == "put":
            name = self.name()
            top = name if rng.random() < 0.8 else self.name()
            return b"put %s %s %s\n" % (name, self.pick([0, 1, 2, 3]), self.pick([0, 5])) + \
                self.item(top)
        if kind == "puturl":
            tp = self.w.transfer_port
            sources = [f"file://{self.w.source}", "http://127.0.0.1:1/x", "file:///nonexistent/x",
                       f"workerip://127.0.0.1:{tp}/file-a", f"workerip://127.0.0.1:{tp}/dir-b"]
            if self.evil:
                sources += [f"workerip://127.0.0.1:{tp}/../../decoy-g.txt",
                            f"workerip://127.0.0.1:{tp}/{self.w.decoys[2]}",
                            f"workerip://127.0.0.1:{tp}/file-a.meta", "ftp://127.0.0.1:1/x",
                            "workerip://127.0.0.1:99999/x", "workerip://127.0.0.1:-1/x",
                            "workerip://127.0.0.1/x", "workerip://:1/x", "http://[::1/x",
                            "weird://x", "x", "file://relative/../x"]
            verb = rng.choice((b"puturl", b"puturl_now"))
            return b"%s %s %s %s %s %s T%d\n" % (
                verb, url(rng.choice(sources)), self.name(), self.pick([0, 1, 2, 3]),
                self.pick([0, 16]), self.pick(["0755", "0644"], p_hostile=0.1),
                rng.randint(0, 99))
        if kind == "mini_task":
            outs = [b"out"] + ([p.encode() for p in self.escaping] if self.evil else [])
            return b"mini_task %s %s %s %s %s\n" % (
                rng.choice(outs), self.name(), self.pick([0, 1, 2]), self.pick([0, 5]),
                self.pick(["0755"], p_hostile=0.1)) + self.body(
                    ("echo m > out", "mkdir -p out && echo m > out/f", "true"), False)
        if kind in ("get", "getfile"):
            return b"%s %s\n" % (kind.encode(), self.name(write=False))
        if kind == "unlink":
            return b"unlink %s\n" % self.name()
        if kind in ("kill", "send_stdout"):
            return b"%s %s\n" % (kind.encode(), self.any_id())
        if kind == "send_results":
            return b"send_results %s\n" % self.pick([-1, 0, 5])
        if kind == "release":
            return b"release\n" if self.evil else b"check\n"
        if not self.evil:
            return b"check\n"
        return rng.choice((b"nonsense\n", b"task\n", b"\xff\xfe\n", b"y" * 5000 + b"\n", b"\n"))


def hostile_probes(w: GuardedWorker) -> list[bytes]:
    """One of each hostile case, sent every run before the random ones (each may end a
    session, so each gets a batch of its own)."""
    decoy = str(w.decoys[2]).encode()

    def task(task_id: bytes, *lines: bytes, cmd: bytes = b"true") -> bytes:
        return b"task %s\ncmd %d\n%s%send\n" % (task_id, len(cmd), cmd, b"".join(lines))

    return [
        task(b"101", b"cores nan\n"), task(b"102", b"cores inf\n"), task(b"103", b"cores 1e400\n"),
        task(b"104", b"wall_time inf\n"), task(b"105", b"wall_time nan\n"),
        task(b"106", b"end_time nan\n"), task(b"107", b"end_time inf\n"),
        task(b"108", b"end_time 1e400\n"), task(b"109", b"end_time %.6f\n" % (time.time() - 60)),
        task(b"110", b"memory 1e400\ndisk -1\ngpus 1e300\n"), task(b"-3"), task(b"-1"),
        task(b"1e400"), task(b"9223372036854775808"), task(b"111", b"category \xff\xfe\n"),
        task(b"112", b"env 2\n=x\n"), task(b"113", b"env 3\nA=\xff\n"),
        task(b"114", b"outfile file-o %s 0\n" % url(decoy), cmd=b"echo x > out"),
        task(b"115", b"infile file-a ../../decoy-g.txt 0\n"),
        task(b"116", b"outfile ../../decoy-g.txt out 0\n", cmd=b"echo x > out"),
        b"put file-p 1 1e400\nfile file-p 1 0644 0\nx",
        b"put file-q 1 1\nfile file-q 1e400 0644 0\n",
        b"put ../../decoy-g.txt 1 1\nfile ../../decoy-g.txt 1 0644 0\nx",
        b"put %s 1 1\nfile x 1 0644 0\nx" % decoy,
        b"mini_task out file-m 0 1e400 0755\ncmd 12\necho m > outend\n",
        b"mini_task %s file-n 0 0 0755\ncmd 4\ntrueend\n" % decoy,
        b"puturl file:///nonexistent url-z 1 1e400 0755 T1\n",
        b"puturl file:///nonexistent ../../decoy-g.txt 1 0 0755 T2\n",
        b"kill 1e400\n", b"kill -5\n", b"send_stdout -1\n", b"send_stdout 1e400\n",
        b"unlink ../../decoy-g.txt\n", b"unlink %s\n" % decoy, b"get /etc/passwd\n",
        b"getfile %s\n" % decoy, b"\xff\xfe\n", b"y" * 5000 + b"\n",
    ]


def test_worker_survives_a_hostile_manager(guarded):
    w = guarded
    rng = random.Random(w.seed)
    gen = HostileManager(rng, w)
    session = w.accept()
    before = w.untouched()
    sessions = batches = 0
    fresh = True

    def plan():
        for probe in hostile_probes(w):
            yield [probe]
        for _ in deadline_loop(15):
            yield [gen.message() for _ in range(rng.randint(1, 10))]

    for batch in plan():
        if fresh:  # a valid object or two for tasks to read
            session.send(b"put file-a 1 5\nfile file-a 5 0644 0\nhello"
                         b"put dir-b 1 1\ndir dir-b 0755 0\nfile f 1 0644 0\nxend\n")
            fresh = False
        # a check inside the batch is answered too: only the last one says it read it all
        checks = session.count(p.Alive) + 1 + batch.count(b"check\n")
        sent = all(session.send(msg) for msg in batch) and session.send(b"check\n")
        batches += 1
        # the worker answers the check (so it read the whole batch), or hangs up
        answered = session.wait_for(lambda s=session, n=checks: sum(
            isinstance(e, p.Alive) for e in s.events) >= n, 20)
        assert answered or session.eof or not sent, (
            f"seed {w.seed}: the worker neither answered nor closed after {batch!r}")
        assert w.alive(), f"seed {w.seed}: the worker died after {batch!r}"
        assert session.error is None, f"seed {w.seed}: worker sent bad bytes: {session.error}"
        if session.eof or rng.random() < 0.2:  # hung up on, or hang up ourselves
            session.close()
            assert w.alive(), f"seed {w.seed}: the worker died after {batch!r}"
            session, fresh = w.accept(), True
            sessions += 1
    print(f"{sessions} sessions, {batches} batches")

    # still serving: a plain task runs (on a new session if the last batch ended this one
    # and its end reaches us only now)
    for _ in range(2):
        session.send(b"task 999999\ncmd 7\necho okcategory default\ncores 1\nmemory 10\n"
                     b"disk 10\nend\n")
        if session.wait_for(lambda s=session: any(
                isinstance(e, p.Complete) and e.task_id == 999999 for e in s.events), 20):
            break
        assert session.eof, f"seed {w.seed}: the worker neither ran a plain task nor hung up"
        session.close()
        session = w.accept()
    else:
        raise AssertionError(f"seed {w.seed}: a plain task did not run on a new session")
    done = [e for e in session.events if isinstance(e, p.Complete) and e.task_id == 999999]
    assert (done[0].result, done[0].inline_stdout) == (0, b"ok\n")
    assert w.alive()
    for s in w.sessions:
        assert not w.leaks(bytes(s.raw)), (w.seed, w.leaks(bytes(s.raw)))
    changes = diff_snapshots(before, w.untouched())
    assert not changes, f"seed {w.seed}: the worker wrote outside its workspace: {changes}"
    assert not w.tracebacks(), f"seed {w.seed}: the worker hit an exception: {w.tracebacks()}"


# =========================================================================== transfer port




def transfer_reply(reply: bytes) -> list:
    """The events of a transfer server's reply (``RemoteProtocolError`` if it is broken)."""
    d = p.Decoder("transfer")
    d.feed(reply)
    events = []
    while (ev := d.next_event()) is not None:
        events.append(ev)
    return merge_data(events)


def test_transfer_port_serves_only_its_cache(guarded):
    w = guarded
    rng = random.Random(w.seed)
    s = w.accept()
    decoy = str(w.decoys[2])
    # cache entries: plain ones, and task outputs that are links pointing out of the cache
    s.send(b"put file-good 1 13\nfile file-good 13 0644 0\ngood content\n"
           b"put dir-good 1 1\ndir dir-good 0755 0\nfile f 1 0644 0\nxsymlink l 1\nfend\n")
    for tid, cmd, name in ((1, f"ln -s {decoy} out", "file-link"),
                           (2, f"mkdir out; echo a > out/f; ln -s {decoy} out/abs; "
                               f"ln -s ../../../decoy-g.txt out/rel", "dir-evil"),
                           (3, f"ln -s {w.guard / 'decoy-dir'} out", "dir-link")):
        s.send(p.TaskMsg(tid, p.TaskBody(command=cmd, cores=1, memory=10, disk=10, outfiles=(
            p.Mount(name, "out"),))).encode())
    assert s.wait_for(lambda: sum(isinstance(e, p.Complete) for e in s.events) == 3, 20)
    port = w.transfer_port
    good = transfer_reply(transfer_request(port, b"get file-good\n"))
    assert [type(e) for e in good] == [p.FileItem, p.Data], good
    assert (good[0].name, good[0].size, good[1].chunk) == ("file-good", 13, b"good content\n")

    hostile = [b"get ../../etc/passwd\n", b"get /etc/passwd\n", b"get %2Fetc%2Fpasswd\n",
               b"get ..%2F..%2F..%2Fetc%2Fpasswd\n", b"get ../decoy-g.txt\n",
               b"get ../../decoy-g.txt\n", b"get " + url(decoy) + b"\n",
               b"get " + decoy.encode() + b"\n", b"get file-good.meta\n", b"get .meta\n",
               b"get ..\n", b"get .\n", b"get %2E%2E\n", b"get dir-good%2Ff\n",
               b"get dir-good/f\n", b"get cache\n", b"get %00\n", b"get file-good%00\n",
               b"get \xff\xfe\n"]
    linked = [b"get file-link\n", b"get dir-evil\n", b"get dir-link\n"]
    malformed = [b"get\n", b"get \n", b"get a b\n", b"GET / HTTP/1.1\r\n\r\n", b"\n", b"nonsense",
                 b"get file-good extra\n", b"y" * 5000 + b"\n", rng.randbytes(300),
                 b"\xff" * 100 + b"\n", b"get " + b"%" * 4090 + b"\n"]
    replies: list[tuple[bytes, bytes]] = []
    lock = threading.Lock()

    def client(requests: list[bytes]) -> None:
        for req in requests:
            pause = rng.choice((0, 0, 0.2)) if req.endswith(b"\n") else 0
            reply = transfer_request(port, req, pause)
            with lock:
                replies.append((req, reply))

    end = time.monotonic() + 10
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        pool = hostile + linked + malformed + [b"get file-good\n"]
        threads = [threading.Thread(target=client, args=(rng.sample(pool, 8),))
                   for _ in range(6)]
        # many connections at once, some never sending a full line
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10)
                for _ in range(rng.randint(10, 40))]
        for sock in idle[::3]:
            sock.sendall(b"get fi")
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for sock in idle:
            sock.close()
        assert w.alive(), f"seed {w.seed}: the worker died"

    assert replies
    for req, reply in replies:
        assert not w.leaks(reply), (w.seed, req, reply[:200])
        try:
            events = transfer_reply(reply)
        except p.RemoteProtocolError as e:
            raise AssertionError(f"seed {w.seed}: the reply to {req[:100]!r} breaks the "
                                 f"protocol: {reply[:100]!r}...: {e}") from None
        if req in hostile:
            assert [type(e) for e in events] == [p.ErrorItem], (w.seed, req, reply[:200])
        elif req == b"get file-good\n" and events:  # (empty: refused, too many clients)
            assert events[1:] == [p.Data(b"good content\n")], (req, reply)
        elif req in linked:  # served as links, never as what they point to
            assert not any(isinstance(e, p.FileItem) and e.size == len(w.marker) + 1
                           for e in events), (req, reply)
        else:  # malformed requests get an error item or nothing
            assert all(isinstance(e, p.ErrorItem) for e in events), (req, reply[:200])
    # a flood of silent connections, more than a server should hold at once, then gone
    flood = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]
    for sock in flood:
        sock.close()
    # still the same worker, still serving its manager and its peers
    s.send(b"check\n")
    assert s.wait_for(lambda: s.count(p.Alive) >= 2, 20)
    wait_until(lambda: transfer_request(port, b"get file-good\n").endswith(b"good content\n"),
               timeout=20, step=0.2)
    print(f"{rounds} rounds, {len(replies)} requests")
    assert not w.tracebacks(), f"seed {w.seed}: the worker hit an exception: {w.tracebacks()}"
