"""A pool of simulated workers: many TCP connections speaking protocol 13 from one process.

Each connection sends the hello of spec §2.3, then answers every ``task <id>`` body at once
with ``complete 0 0 0 0 <start_us> <end_us> 0 <id>`` (§4.2), answers ``check`` with
``alive`` and a resources block (§4.1), ignores ``kill``/``unlink`` and closes on
``release``/``exit``. No task runs: what is left is the manager's own cost per task.

The framing is our own few lines, written from the spec, not the project's codec, so the
pool can face any manager::

    manager ◄──── TCP × count ────► Pool (selectors, non-blocking; one process)

Connections are opened at most ``PACE`` at a time (the manager's listen backlog is finite).
When every connection is closed, or on SIGTERM/SIGINT, one JSON summary line goes to stdout.
"""

from __future__ import annotations

import errno
import json
import resource
import selectors
import signal
import socket
import time
import uuid

from common import cpu

PACE = 128  # connections in progress (SYN sent, hello not yet written) at one time
RECV = 1 << 16


def now_us() -> int:
    return time.time_ns() // 1000


def raise_nofile(need: int) -> int:
    """Raise this process's open-files soft limit to ``need`` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def hello(index: int, cores: int, memory: int, disk: int) -> bytes:
    """Lines 1, 2, 5, 6, 8 and 9 of the worker hello (spec §2.3)."""
    return (f"taskvine 13 sim{index} Linux x86_64 8.0.0\n"
            f"info worker-id worker-{uuid.uuid4().hex}\n"
            "transfer-port 9\n"
            "info worker-end-time 0\n"
            "alive\n" + resources_block(cores, memory, disk)).encode()


def resources_block(cores: int, memory: int, disk: int, tag: int = 0) -> str:
    return (f"resources\ncores {cores:.6f}\nmemory {memory:.6f}\ndisk {disk:.6f}\n"
            f"gpus 0.000000\nworkers 1.000000\ntag {tag}\nend\n")


class SimWorker:
    """One simulated worker: a receive buffer, a send buffer and the parser state."""

    __slots__ = ("sock", "index", "inbuf", "out", "skip", "body", "tag", "depth", "writing")

    def __init__(self, sock: socket.socket, index: int):
        self.sock, self.index = sock, index
        self.inbuf, self.out = bytearray(), bytearray()
        self.skip = 0  # raw payload bytes still to discard (cmd, env, file contents)
        self.body: int | None = None  # task id whose body is being read; -1 for mini_task
        self.tag = 0  # id of the last task received, for the resources block
        self.depth = 0  # nesting of a `dir` item stream (put)
        self.writing = False  # registered for EVENT_WRITE


class Pool:
    """``count`` simulated workers connected to ``host:port``."""

    def __init__(self, host: str, port: int, count: int, cores: int = 1,
                 memory: int = 1000, disk: int = 1000):
        self.addr = (host, port)
        self.count, self.cores, self.memory, self.disk = count, cores, memory, disk
        self.sel = selectors.DefaultSelector()
        self.opened = 0  # connections started
        self.connecting = 0
        self.live = 0
        self.stats = {"connected": 0, "connect_errors": 0, "tasks": 0, "checks": 0,
                      "released": 0, "exits": 0, "closed_by_manager": 0, "unexpected": 0,
                      "send_errors": 0}
        self.unexpected: list[str] = []
        self.stopping = False

    # -- connections
    def open_more(self) -> None:
        while self.opened < self.count and self.connecting < PACE:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = s.connect_ex(self.addr)
            if err not in (0, errno.EINPROGRESS):
                self.stats["connect_errors"] += 1
                s.close()
                return
            w = SimWorker(s, self.opened)
            self.opened += 1
            self.connecting += 1
            self.sel.register(s, selectors.EVENT_WRITE, (w, True))

    def connected(self, w: SimWorker) -> None:
        self.connecting -= 1
        if w.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.stats["connect_errors"] += 1
            self.sel.unregister(w.sock)
            w.sock.close()
            return
        self.stats["connected"] += 1
        self.live += 1
        w.out += hello(w.index, self.cores, self.memory, self.disk)
        self.sel.modify(w.sock, selectors.EVENT_READ, (w, False))
        self.flush(w)

    def close(self, w: SimWorker, reason: str) -> None:
        self.stats[reason] += 1
        self.live -= 1
        self.sel.unregister(w.sock)
        w.sock.close()

    # -- I/O
    def flush(self, w: SimWorker) -> None:
        if w.out:
            try:
                sent = w.sock.send(w.out)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close(w, "send_errors")
                return
            del w.out[:sent]
        if bool(w.out) != w.writing:
            w.writing = bool(w.out)
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if w.writing else 0)
            self.sel.modify(w.sock, events, (w, False))

    def readable(self, w: SimWorker) -> None:
        try:
            data = w.sock.recv(RECV)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close(w, "closed_by_manager")
            return
        w.inbuf += data
        if self.parse(w):
            self.flush(w)

    # -- protocol (spec §3)
    def parse(self, w: SimWorker) -> bool:
        """Consume what is complete in ``w.inbuf``; False if the connection was closed."""
        buf, pos = w.inbuf, 0
        while True:
            if w.skip:
                n = min(w.skip, len(buf) - pos)
                pos += n
                w.skip -= n
                if w.skip:
                    break
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            line = bytes(buf[pos:nl]).replace(b"\r", b"").decode("latin-1")
            pos = nl + 1
            if not self.line(w, line.split()):
                return False
        del buf[:pos]
        return True

    def line(self, w: SimWorker, f: list[str]) -> bool:
        if not f:
            return True
        if w.body is not None:
            return self.body_line(w, f)
        handler = TOP.get(f[0])
        if handler is None:
            self.stats["unexpected"] += 1
            if len(self.unexpected) < 10:
                self.unexpected.append(" ".join(f)[:80])
            return True
        return handler(self, w, f)

    def body_line(self, w: SimWorker, f: list[str]) -> bool:
        if f[0] == "cmd":
            w.skip = int(f[1])
        elif f[0] == "env":
            w.skip = int(f[1]) + 1
        elif f[0] == "end":
            if w.body >= 0:
                t = now_us()
                w.out += f"complete 0 0 0 0 {t} {t} 0 {w.body}\n".encode()
                self.stats["tasks"] += 1
            w.body = None
        return True

    def on_task(self, w: SimWorker, f: list[str]) -> bool:
        w.body = w.tag = int(f[1])
        return True

    def on_mini_task(self, w: SimWorker, f: list[str]) -> bool:
        w.body = -1
        return True

    def on_check(self, w: SimWorker, f: list[str]) -> bool:
        self.stats["checks"] += 1
        w.out += ("alive\n" + resources_block(self.cores, self.memory, self.disk, w.tag)).encode()
        return True

    def on_release(self, w: SimWorker, f: list[str]) -> bool:
        self.close(w, "released" if f[0] == "release" else "exits")
        return False

    def on_ignore(self, w: SimWorker, f: list[str]) -> bool:
        return True

    def on_item(self, w: SimWorker, f: list[str]) -> bool:
        """Items of a ``put`` stream (§3.3): discard the contents."""
        if f[0] == "file":
            w.skip = int(f[2])
        elif f[0] == "symlink":
            w.skip = int(f[2])
        elif f[0] == "dir":
            w.depth += 1
        elif w.depth:  # "end" of a dir
            w.depth -= 1
        return True

    def on_send_results(self, w: SimWorker, f: list[str]) -> bool:
        w.out += b"end\n"
        return True

    def on_send_stdout(self, w: SimWorker, f: list[str]) -> bool:
        w.out += f"stdout {f[1]} 0\n".encode()
        return True

    def on_get(self, w: SimWorker, f: list[str]) -> bool:
        w.out += f"error {f[1]} 2\n".encode()
        return True

    # -- main loop
    def run(self) -> dict:
        t0, c0 = time.monotonic(), cpu()
        while not self.stopping and (self.opened < self.count or self.live or self.connecting):
            self.open_more()
            for key, ev in self.sel.select(1.0):
                w, connecting = key.data
                if connecting:
                    self.connected(w)
                    continue
                if ev & selectors.EVENT_READ:
                    self.readable(w)
                if ev & selectors.EVENT_WRITE and w.sock.fileno() >= 0:
                    self.flush(w)
        return dict(self.stats, wall_s=round(time.monotonic() - t0, 3),
                    cpu_s=round(cpu() - c0, 3), unexpected_lines=self.unexpected)


TOP = {"task": Pool.on_task, "mini_task": Pool.on_mini_task, "check": Pool.on_check,
       "release": Pool.on_release, "exit": Pool.on_release, "kill": Pool.on_ignore,
       "unlink": Pool.on_ignore, "put": Pool.on_ignore, "puturl": Pool.on_ignore,
       "puturl_now": Pool.on_ignore, "file": Pool.on_item, "dir": Pool.on_item,
       "symlink": Pool.on_item, "end": Pool.on_item, "send_results": Pool.on_send_results,
       "send_stdout": Pool.on_send_stdout, "get": Pool.on_get, "getfile": Pool.on_get}


def main(host: str, port: int, count: int, cores: int) -> int:
    raise_nofile(count + 256)
    pool = Pool(host, port, count, cores)

    def stop(signum, frame):
        pool.stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    summary = pool.run()
    print(json.dumps({"simulator": summary}), flush=True)
    return 0
