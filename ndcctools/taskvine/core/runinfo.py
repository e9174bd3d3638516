"""The run-info directory of a manager (protocol spec §11.1, api.md §3.3)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

default_path = "vine-run-info"  # parent of run-info directories (set_runtime_info_path)


@dataclass(frozen=True)
class RunInfo:
    runtime: str
    logs: str
    staging: str
    library_logs: str
    cache: str


def create_run_info(path: str | None, template: str | None, staging_path: str | None,
                    now: float | None = None) -> RunInfo:
    """Create ``<path>/<template>/{vine-logs,staging,...}`` and the ``most-recent`` link."""
    base = os.path.abspath(path or default_path)
    stamp = time.strftime(template or "%Y-%m-%dT%H%M%S", time.localtime(now))
    runtime = stamp if os.path.isabs(stamp) else os.path.join(base, stamp)
    logs = os.path.join(runtime, "vine-logs")
    staging = (os.path.join(os.path.abspath(staging_path), "vine-staging") if staging_path
               else os.path.join(runtime, "staging"))
    info = RunInfo(runtime, logs, staging, os.path.join(runtime, "library-logs"),
                   os.path.join(base, "vine-cache"))
    for d in (logs, info.cache, *(os.path.join(staging, s) for s in
                                  ("outputs", "arguments", "functions"))):
        os.makedirs(d, exist_ok=True)
    link = os.path.join(base, "most-recent")
    try:
        tmp = f"{link}.{os.getpid()}"
        os.symlink(runtime, tmp)
        os.replace(tmp, link)
    except OSError:
        pass
    os.environ["VINE_RUNTIME_INFO_DIR"] = runtime
    return info
