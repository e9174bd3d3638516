"""``vine.Factory``: keep a pool of workers for a manager, from Python.

It runs the ``vine_factory`` program (``daemon.py`` is its loop) as a child process::

    Factory --(command line + config.json)--> vine_factory --(jobs)--> batch system
       |  rewrites config.json when a dynamic option changes    |
       +-- waits for state.json at start; SIGTERM at stop ------+

Options are attributes named like the program's flags (``max_workers`` is
``--max-workers``); the table is ``options.OPTIONS``. The factory exits with its parent
(``--parent-death``), so a program that dies does not leave a factory, nor its workers,
behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from .options import DYNAMIC, FLAG, LIST, OPTIONS, flag_name, write_config

START_PATIENCE = 30.0  # seconds for vine_factory to check its options and start
STOP_PATIENCE = 60.0  # seconds for it to remove its jobs before it is killed
SET_AT_CONSTRUCTION = ("batch_type", "manager_name")


class Factory:
    """A pool of workers on a batch system (``"local"`` for this machine) for a manager.

    Give the manager as ``manager`` (a ``Manager``), ``manager_host_port="host:port"`` or
    ``manager_name`` (found through the catalog)."""

    def __init__(self, batch_type: str = "local", manager: Any = None,
                 manager_host_port: str | None = None, manager_name: str | None = None,
                 factory_binary: str | None = None, worker_binary: str | None = None,
                 log_file: str = os.devnull) -> None:
        object.__setattr__(self, "_opts", {})
        self._set("_proc", None)
        self._set("_dir", None)
        self._set("_environment", None)
        self._set("_log_file", log_file)
        self._set("_manager", manager)
        self._set("_address", _address(batch_type, manager, manager_host_port, manager_name))
        self._set("_binary", _program(factory_binary or "vine_factory"))
        self._opts["worker_binary"] = _program(worker_binary or "vine_worker")
        self._opts["batch_type"] = batch_type
        if manager_name or (manager is not None and not self._address):
            self._opts["manager_name"] = manager_name or manager.name
        if getattr(manager, "using_ssl", False):
            self._opts["ssl"] = True

    # ------------------------------------------------------------------ options
    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in OPTIONS:
            raise AttributeError(f"{type(self).__name__} has no option {name!r}")
        return self._opts[name]  # a valid option never set: KeyError, as upstream

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in OPTIONS:
            raise AttributeError(f"{type(self).__name__} has no option {name!r}")
        if name in SET_AT_CONSTRUCTION and (not self.running or name == "batch_type"):
            raise AttributeError(f"give {name} to the constructor")
        if self.running and name not in DYNAMIC:
            raise AttributeError(f"{name} cannot change while the factory runs; the options "
                                 f"that can: {', '.join(sorted(DYNAMIC))}")
        self._opts[name] = value
        if self.running:
            write_config(self._config_path, self._opts)

    def set_environment(self, env: Any) -> None:
        """Kept for upstream's API; the value is not used."""
        self._set("_environment", env)

    # ------------------------------------------------------------------ life
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def _config_path(self) -> str:
        return os.path.join(self._dir, "config.json")

    def start(self) -> Factory:
        if self.running:
            write_config(self._config_path, self._opts)
            return self
        scratch = self._opts.get("scratch_dir") or self._default_scratch()
        os.makedirs(scratch, exist_ok=True)
        self._set("_dir", tempfile.mkdtemp(prefix="vine-factory-", dir=scratch))
        self._share_password()
        write_config(self._config_path, self._opts)
        argv = [self._binary, "--parent-death", "--config-file", self._config_path,
                "--scratch-dir", self._dir, *self._flags(), *self._address]
        error_log = os.path.join(self._dir, "error.log")
        with open(self._log_file, "ab") as out, open(error_log, "wb") as err:
            self._set("_proc", subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=err, start_new_session=True))
        self._wait_started(error_log)
        return self

    def _share_password(self) -> None:
        """Workers of a ``Manager`` with a password get it in a file of the factory's own
        (owner-only), unless a password file was given."""
        password = getattr(self._manager, "_password", None)
        if password and not self._opts.get("password"):
            path = os.path.join(self._dir, "password")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(password)
            self._opts["password"] = path

    def _flags(self) -> list[str]:
        flags = []
        for name, value in self._opts.items():
            if name in ("scratch_dir", "config_file") or value is None or value is False:
                continue
            if OPTIONS[name].kind == FLAG:
                flags.append(flag_name(name))
            elif OPTIONS[name].kind == LIST:
                flags += [f"{flag_name(name)}={v}" for v in value]
            else:
                flags.append(f"{flag_name(name)}={value}")
        return flags

    def _default_scratch(self) -> str:
        if self._manager is not None:
            return self._manager.runtime_directory
        return os.path.abspath(f"vine-factory-{os.getuid()}")

    def _wait_started(self, error_log: str) -> None:
        state = os.path.join(self._dir, "state.json")
        deadline = time.monotonic() + START_PATIENCE
        while not os.path.exists(state):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(error_log, errors="replace") as f:
                    said = f.read().strip()
                raise RuntimeError(f"vine_factory did not start: {said or 'no message'} "
                                   f"(logs in {self._dir})")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the factory; it removes every worker it started first."""
        proc = self._proc
        if proc is None:
            return
        self._set("_proc", None)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_PATIENCE)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                sys.stderr.write(f"vine_factory {proc.pid} did not stop in {STOP_PATIENCE}s; "
                                 f"killed (logs in {self._dir})\n")

    def __enter__(self) -> Factory:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to tell
            pass


def _address(batch_type: str, manager: Any, host_port: str | None,
             name: str | None) -> list[str]:
    """The HOST PORT words of the command line (empty when the catalog finds the manager)."""
    if host_port is not None:
        host, sep, port = str(host_port).rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"manager_host_port must be 'host:port', not {host_port!r}")
        return [host, port]
    if manager is not None:
        if batch_type == "local":
            return ["localhost", str(manager.port)]
        if manager.name:
            return []
        return [socket.getfqdn(), str(manager.port)]
    if name:
        return []
    raise ValueError("Factory needs a manager: manager=, manager_host_port= or manager_name=")


def _program(name: str) -> str:
    path = shutil.which(name) if os.sep not in name else name
    if path is None or not os.path.exists(path):
        raise OSError(errno.ENOENT, f"{name} is not on PATH", name)
    if not os.access(path, os.X_OK):
        raise OSError(errno.EPERM, f"{name} is not executable", name)
    return os.path.abspath(path)
