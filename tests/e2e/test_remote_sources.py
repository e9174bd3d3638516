"""End-to-end: ``declare_xrootd`` and ``declare_chirp`` inputs fetched by mini tasks from a
real XRootD server (``xrootd``, Debian's ``xrootd-server``, fetched with ``xrdcp`` from
``xrootd-client``) and a real Chirp server (``chirp_server``/``chirp_get``, Debian's
``coop-computing-tools``), both started here on 127.0.0.1 with ports they pick themselves.

The servers keep their files (configuration, logs, served data) in a short directory under
/tmp rather than in tmp_path: xrootd refuses an admin path longer than a unix socket's, and
both servers refuse to run as root, so when the tests do they drop to ``nobody``, who cannot
enter pytest's private tmp_path. Without the programs these tests skip, unless
``VINE_TEST_SYSTEMS=required`` (CI), where they fail.
"""

from __future__ import annotations

import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine import cvine
from tests.conftest import wait_tasks, wait_until

PAYLOAD = random.Random(13).randbytes(300_000)  # binary: every byte value, no newline luck


def program(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed: apt-get install {package} (tests/systems/install.sh)"
        if os.environ.get("VINE_TEST_SYSTEMS") == "required":
            pytest.fail(message)
        pytest.skip(message)
    return path


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class Server:
    """One server process in its own session, with its files in ``base``."""

    user = "nobody" if os.geteuid() == 0 else None  # whom the server runs as, if not us

    def __init__(self, base: Path):
        self.base = base
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self, cmd: list[str], port: Callable[[], int | None], log: Path) -> None:
        """Run ``cmd`` and wait until ``port()`` names a port that accepts connections."""
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.proc = subprocess.Popen(
            cmd, cwd=self.base, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.base / "server.stderr", "wb"), start_new_session=True)

        def ready() -> bool:
            self.port = port() or 0
            return self.proc.poll() is not None or self.port > 0 and accepts(self.port)
        wait_until(ready, 10)
        assert self.proc.poll() is None, f"{cmd[0]} exited at start: {self.log_text(log)}"

    @staticmethod
    def log_text(log: Path) -> str:
        return log.read_text(errors="replace") if log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)


class XRootD(Server):
    """``xrootd`` exporting ``data/`` (the URL root) on a port it picks (``xrd.port any``)."""

    def __init__(self, base: Path):
        super().__init__(base)
        self.data = base / "data"
        self.data.mkdir(parents=True)

    def run(self) -> XRootD:
        admin = self.base / "admin"
        admin.mkdir()
        config = self.base / "xrootd.cfg"
        config.write_text(f"xrd.port any\nall.export /\noss.localroot {self.data}\n"
                          f"all.adminpath {admin}\nall.pidpath {admin}\n")
        log = admin / "xrootd.log"
        cmd = [program("xrootd", "xrootd-server"), "-c", str(config), "-l", str(log)]
        self.start(cmd + (["-R", self.user] if self.user else []), lambda: self._port(log), log)
        return self

    def _port(self, log: Path) -> int | None:
        found = re.search(r"xrootd \S+:(\d+) initialization completed", self.log_text(log))
        return int(found.group(1)) if found else None

    def url(self, path: str) -> str:
        return f"root://127.0.0.1:{self.port}//{path}"


class Chirp(Server):
    """``chirp_server`` serving ``root/``: by default to 127.0.0.1 by address, read-only."""

    def __init__(self, base: Path):
        super().__init__(base)
        self.data = base / "root"
        self.data.mkdir(parents=True)

    def run(self, auth: tuple[str, ...] = ("address",),
            acl: str = "address:127.0.0.1 rl\n") -> Chirp:
        acl_file, portfile, log = self.base / "acl", self.base / "port", self.base / "chirp.log"
        acl_file.write_text(acl)
        portfile.unlink(missing_ok=True)  # from an earlier run
        cmd = [program("chirp_server", "coop-computing-tools"), "-r", str(self.data),
               "-Z", str(portfile), "-I", "127.0.0.1", "-A", str(acl_file),
               "-u", "127.0.0.1:1", "-o", str(log)]  # -u: no updates to the public catalog
        cmd += [arg for method in auth for arg in ("-a", method)]

        def port() -> int | None:
            text = portfile.read_text().strip() if portfile.exists() else ""
            return int(text) if text.isdigit() else None
        self.start(cmd + (["-i", self.user] if self.user else []), port, log)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def base() -> Iterator[Path]:
    """A short directory for the servers of one test, that their user can reach."""
    directory = Path(tempfile.mkdtemp(prefix="vine-remote-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def xrootd(base) -> Iterator[XRootD]:
    program("xrdcp", "xrootd-client")
    server = XRootD(base / "xrootd")
    yield server
    server.stop()


@pytest.fixture
def chirp(base) -> Iterator[Chirp]:
    program("chirp_get", "coop-computing-tools")
    server = Chirp(base / "chirp")
    yield server
    server.stop()


def read_back(m: vine.Manager, remote: vine.File, tmp_path: Path, n: int) -> list[bytes]:
    """Run ``n`` tasks that copy ``remote`` into local outputs; their bytes."""
    outs = []
    for i in range(n):
        t = vine.Task("cp remote copy")
        t.add_input(remote, "remote")
        outs.append(tmp_path / f"copy{i}")
        t.add_output(m.declare_file(str(outs[-1])), "copy")
        m.submit(t)
    done = wait_tasks(m, n, timeout=30)
    assert [t.result for t in done] == ["success"] * n, [t.std_output for t in done]
    return [out.read_bytes() for out in outs]


def test_xrootd_input_reaches_tasks_byte_for_byte(manager, workers, xrootd, tmp_path):
    (xrootd.data / "dir").mkdir(parents=True)
    (xrootd.data / "dir" / "event data.root").write_bytes(PAYLOAD)
    xrootd.run()
    workers.start(manager)
    remote = manager.declare_xrootd(xrootd.url("dir/event data.root"), cache=True)
    assert read_back(manager, remote, tmp_path, 2) == [PAYLOAD, PAYLOAD]
    assert manager.fetch_file(remote) == PAYLOAD.decode("utf-8", "replace")


def test_chirp_input_reaches_tasks_byte_for_byte(manager, workers, chirp, tmp_path):
    (chirp.data / "sub").mkdir()
    (chirp.data / "sub" / "blob.bin").write_bytes(PAYLOAD)
    chirp.run()
    workers.start(manager)
    remote = manager.declare_chirp(chirp.address, "/sub/blob.bin", cache=True)
    assert read_back(manager, remote, tmp_path, 2) == [PAYLOAD, PAYLOAD]


def test_chirp_input_with_a_ticket(manager, workers, chirp, tmp_path):
    """The local user makes a read-only ticket; then the server accepts only tickets."""
    (chirp.data / "blob.bin").write_bytes(PAYLOAD)
    me = pwd.getpwuid(os.geteuid()).pw_name
    chirp.run(auth=("unix", "ticket"), acl=f"unix:{me} rlwa\n")
    ticket = tmp_path / "my.ticket"
    subprocess.run([program("chirp", "coop-computing-tools"), "-a", "unix", chirp.address,
                    "ticket_create", "-output", str(ticket), "-bits", "1024",
                    "-duration", "600", "/", "rl"], check=True, capture_output=True, timeout=30)
    chirp.stop()
    chirp.run(auth=("ticket",), acl=f"unix:{me} rlwa\n")
    workers.start(manager)
    remote = manager.declare_chirp(chirp.address, "/blob.bin", ticket=manager.declare_file(
        str(ticket)))
    assert read_back(manager, remote, tmp_path, 1) == [PAYLOAD]


def test_missing_remote_files_end_tasks_with_input_missing(manager, workers, xrootd, chirp):
    xrootd.run()
    chirp.run()
    workers.start(manager)
    inputs = {"xrootd": manager.declare_xrootd(xrootd.url("no/such.root")),
              "chirp": manager.declare_chirp(chirp.address, "/no/such.file")}
    tasks = {}
    for kind, remote in inputs.items():
        t = vine.Task("cat remote")
        t.add_input(remote, "remote")
        tasks[manager.submit(t)] = kind
    done = {tasks[t.id]: t for t in wait_tasks(manager, 2, timeout=30)}
    for kind, t in done.items():
        assert t.result == "input missing", kind
        assert "could not be built" in t.std_output, kind
    assert "Unable to open /no/such.root; no such file or directory" in \
        done["xrootd"].std_output
    assert f"couldn't get {chirp.address}:/no/such.file: No such file or directory" in \
        done["chirp"].std_output


def tool_environment(m: vine.Manager, tmp_path: Path, tool: str) -> vine.File:
    """An execution context whose ``run_in_env`` puts its own fake ``tool`` first in PATH;
    the fake writes its name and arguments into its last argument."""
    bin_dir = tmp_path / "env" / "bin"
    bin_dir.mkdir(parents=True)
    scripts = {"run_in_env": 'PATH="$(cd "$(dirname "$0")" && pwd):$PATH" exec "$@"\n',
               tool: f'for last; do :; done; echo "env {tool} $*" > "$last"\n'}
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    return m.declare_file(str(tmp_path / "env"), cache=True)


@pytest.mark.parametrize("tool", ["xrdcp", "chirp_get"])
def test_the_environment_provides_the_tool(manager, workers, tmp_path, tool):
    env = tool_environment(manager, tmp_path, tool)
    if tool == "xrdcp":
        remote = manager.declare_xrootd("root://127.0.0.1:1//f", env=env)
        expected = "env xrdcp root://127.0.0.1:1//f output.root\n"
    else:
        remote = manager.declare_chirp("127.0.0.1:1", "/f", env=env)
        expected = "env chirp_get 127.0.0.1:1 /f output.chirp\n"
    workers.start(manager)
    t = vine.Task("cat remote")
    t.add_input(remote, "remote")
    manager.submit(t)
    (done,) = wait_tasks(manager, 1, timeout=10)
    assert (done.result, done.std_output) == ("success", expected)


# ------------------------------------------------------------- the recipes and their checks

def recipe(file: vine.File) -> tuple[str, dict[str, str], dict[str, str]]:
    """(command, inputs by sandbox name -> cachename, environment) of a mini-task file."""
    t = file._minitask
    return (t._command, {m.remote_name: m.file.cachename for m in t._inputs},
            {k: v for k, v in t._env.items() if v is not None})


def test_xrootd_recipe_mounts_the_proxy_and_quotes_the_source(manager, tmp_path, monkeypatch):
    monkeypatch.delenv("X509_USER_PROXY", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "none"))
    plain = manager.declare_xrootd("root://host//a file?x=1&y=2")
    assert recipe(plain) == ("xrdcp 'root://host//a file?x=1&y=2' output.root", {}, {})
    assert plain.type() == cvine.VINE_MINI_TASK and plain.source() == "output.root"
    proxy = manager.declare_buffer(b"a proxy")
    given = manager.declare_xrootd("root://host//f", proxy=proxy)
    assert recipe(given)[1:] == ({"proxy509.pem": proxy.cachename},
                                 {"X509_USER_PROXY": "proxy509.pem"})


@pytest.mark.parametrize("where", ["X509_USER_PROXY", "TMPDIR"])
def test_xrootd_finds_the_users_proxy(manager, tmp_path, monkeypatch, where):
    monkeypatch.delenv("X509_USER_PROXY", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    path = tmp_path / (f"x509up_u{os.getuid()}" if where == "TMPDIR" else "myproxy")
    path.write_text("proxy")
    if where == "X509_USER_PROXY":
        monkeypatch.setenv("X509_USER_PROXY", str(path))
    _, inputs, env = recipe(manager.declare_xrootd("root://host//f"))
    assert list(inputs) == ["proxy509.pem"] and env == {"X509_USER_PROXY": "proxy509.pem"}
    assert inputs["proxy509.pem"] == manager.declare_file(str(path)).cachename


def test_chirp_recipe_with_a_ticket_and_an_environment(manager):
    plain = manager.declare_chirp("host:9094", "/a b")
    assert recipe(plain) == ("chirp_get host:9094 '/a b' output.chirp", {}, {})
    assert plain.source() == "output.chirp"
    ticket, env = manager.declare_buffer(b"ticket"), manager.declare_buffer(b"env")
    f = manager.declare_chirp("host:9094", "/f", ticket=ticket, env=env)
    command, inputs, _ = recipe(f)
    assert command == "chirp_get --auth=ticket --tickets=ticket.chirp host:9094 /f output.chirp"
    assert inputs["ticket.chirp"] == ticket.cachename
    assert f._minitask._contexts == [f"__vine_env_{env.cachename}"]
    assert inputs[f"__vine_env_{env.cachename}"] == env.cachename


@pytest.mark.parametrize("call,error,words", [
    (lambda m: m.declare_xrootd(b"root://h//f"), TypeError, "source"),
    (lambda m: m.declare_xrootd(""), ValueError, "source"),
    (lambda m: m.declare_xrootd("/local/path"), ValueError, "root://"),
    (lambda m: m.declare_xrootd("root://h//f", proxy="/tmp/x509up"), TypeError, "proxy"),
    (lambda m: m.declare_xrootd("root://h//f", env=3), TypeError, "env"),
    (lambda m: m.declare_xrootd("root://h//f", cache="sometimes"), ValueError, "cache"),
    (lambda m: m.declare_chirp(9094, "/f"), TypeError, "server"),
    (lambda m: m.declare_chirp("h:9094", None), TypeError, "source"),
    (lambda m: m.declare_chirp("h:9094", " "), ValueError, "source"),
    (lambda m: m.declare_chirp("h:9094", "/f", ticket=b"t"), TypeError, "ticket"),
    (lambda m: m.declare_chirp("h:9094", "/f", env=object()), TypeError, "env"),
])
def test_wrong_arguments_are_named(manager, call, error, words):
    with pytest.raises(error, match=words):
        call(manager)
