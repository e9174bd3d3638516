"""The worker's debug log (``-d FLAG``, ``-o FILE``): one line per wire message and event.

Logging never stops the worker: text that UTF-8 cannot encode (a peer's undecodable bytes,
kept as surrogates) is written as backslash escapes, and a log that cannot be written (a
full disk) is given up with one line on stderr.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


class WorkerLog:
    def __init__(self, enabled: bool, path: str | None):
        self.enabled = enabled
        self._file: TextIO = open(path, "a", buffering=1, errors="backslashreplace") \
            if (enabled and path) else sys.stderr
        self._pid = os.getpid()

    def __call__(self, text: str) -> None:
        if self.enabled:
            now = time.time()
            stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(now))
            try:
                self._file.write(f"{stamp}.{int(now % 1 * 100):02d} vine_worker[{self._pid}]: "
                                 f"{text}\n")
            except OSError as e:
                self.enabled = False
                sys.stderr.write(f"vine_worker: cannot write the debug log ({e}): "
                                 "no more debug lines\n")

    def error(self, text: str) -> None:
        """Always written (stderr when no debug file): something an operator must see."""
        if self.enabled:
            self(text)
        else:
            sys.stderr.write(f"vine_worker: {text}\n")
