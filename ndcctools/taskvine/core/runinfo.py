"""The run-info directory of a manager (protocol spec §11.1, api.md §3.3)."""

from __future__ import annotations

import json
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


def write_workflow(logs: str, facts: dict, counters: dict, version: str) -> None:
    """``vine-logs/workflow.json``, written at shutdown: a small provenance record shaped as
    an RO-Crate (``@context``, ``@graph``) naming the run, this TaskVine and the manager
    (``managerInfo``: project, port, times, what it did). The report tool's recursive mode
    looks for it beside the other logs."""
    now = time.time()
    started = facts["started_us"] / 1e6
    crate = {
        "@context": "https://w3id.org/ro/crate/1.1/context",
        "@graph": [
            {"@id": "ro-crate-metadata.json", "@type": "CreativeWork",
             "conformsTo": {"@id": "https://w3id.org/ro/crate/1.1"}, "about": {"@id": "./"}},
            {"@id": "./", "@type": "Dataset", "name": facts.get("name") or "TaskVine run",
             "dateCreated": _iso(started), "hasPart": [{"@id": name} for name in (
                 "debug", "transactions", "performance", "taskgraph")]},
            {"@id": "#taskvine", "@type": "SoftwareApplication", "name": "TaskVine",
             "softwareVersion": version,
             "managerInfo": {"project": facts.get("name"), "port": facts["port"],
                             "uuid": facts["uuid"], "pid": os.getpid(),
                             "started": _iso(started), "ended": _iso(now),
                             "run_info": os.path.dirname(logs),
                             **{k: counters.get(k, 0) for k in (
                                 "tasks_submitted", "tasks_done", "tasks_failed",
                                 "workers_joined", "workers_removed", "bytes_sent",
                                 "bytes_received")}}},
        ],
    }
    try:
        with open(os.path.join(logs, "workflow.json"), "w") as f:
            json.dump(crate, f, indent=2)
            f.write("\n")
    except OSError:
        pass  # a full disk under the logs stops nothing (as the other logs)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch))
