"""The manager's debug log, ``vine-logs/debug`` (protocol spec §11.2).

Line shape: ``YYYY/MM/DD HH:MM:SS.cc vine_manager[<pid>]<flag>: <text>`` in local time with
centiseconds. Every wire line goes through ``tx()``/``rx()`` (the I/O choke point), so the
date prefix is formatted once per second and writes are buffered (``LogFile``: a failing
disk never stops the manager); the buffer is flushed when a second has passed since the last
flush, and at ``close()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .logfile import LogFile


class DebugLog:
    def __init__(self, path: str, pid: int, clock: Callable[[], float] = time.time):
        self._file = LogFile(path)
        self._pid = pid
        self._clock = clock
        self._second = -1
        self._prefix = ""
        self._last_flush = 0.0

    def write(self, flag: str, text: str) -> None:
        now = self._clock()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(second))
        cc = int((now - second) * 100)
        self._file.write(f"{self._prefix}.{cc:02d} vine_manager[{self._pid}]{flag}: {text}\n")
        if now - self._last_flush >= 1.0:
            self._last_flush = now
            self._file.flush()

    def tx(self, host: str, addrport: str, line: str) -> None:
        self.write("vine", f"tx to {host} ({addrport}): {line}")

    def rx(self, host: str, addrport: str, line: str) -> None:
        self.write("vine", f"rx from {host} ({addrport}): {line}")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
