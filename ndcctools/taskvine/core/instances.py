"""Library instances as the engine runs them: started when calls wait, stopped, and counted
when they end.

``LibraryTable`` (``libraries.py``) owns templates, instances and the slots in use; these
functions are what the engine does with them. An instance is a hidden task, a copy of its
template, submitted when a ready call finds no free slot (``start``). It never ends of its
own accord: when it does (``ended``) or cannot start (``failed``), that counts against its
template, and after ``max-library-retries`` the template goes and the calls waiting for it
end with missing library (``end_calls_of``). With ``watch-library-logfiles`` an instance's
output is watched into ``library-task-<id>.log`` while it runs (``log_mount``).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from .. import cvine
from .. import protocol as p
from ..file import File
from ..task import Mounting
from .retrieval import StdoutReply
from .tasks import READY, TaskRecord

if TYPE_CHECKING:
    from .engine import Engine
    from .workers import WorkerRecord


def start(e: Engine, name: str) -> None:
    """Submit a hidden copy of library ``name``'s template, if a worker could take it."""
    if not e.libraries.wants_instance(name, e.workers.values()):
        return
    clone = e.libraries.new_instance(name)
    clone._priority = math.inf  # ahead of the calls waiting for it
    rec = e.tasks.submit(clone, library=name)
    clone._record = rec
    e.libraries.pending[name] = rec
    e.debug.write("vine", f"starting an instance of library {name} as task {rec.task_id}")
    e._dirty = True


def stop(e: Engine, rec: TaskRecord) -> None:
    """Kill a dispatched library instance (not a failure of its library)."""
    e.release(rec)
    e.send(rec.worker, p.Kill(rec.task_id))
    e.tasks.finish(rec, cvine.VINE_RESULT_CANCELLED)


def failed(e: Engine, rec: TaskRecord, output: bytes, where: str) -> None:
    """Count the end of library instance ``rec`` against its template (``output``
    explains it); after ``max-library-retries`` the template goes and its waiting calls
    end with missing library."""
    limit = int(e.tuning.max_library_retries)
    if e.libraries.ended(rec, output, limit):
        e.debug.write("vine", f"library {rec.library} failed {limit} times: removed; "
                      "its calls end with 'missing library'")
        end_calls_of(e, rec.library)
    e.debug.write("vine", f"library instance {rec.task_id} ({rec.library}) ended "
                  f"{where}: {output[-2000:].decode('utf-8', 'replace')}")


def ended(e: Engine, w: WorkerRecord, rec: TaskRecord, msg: p.Complete) -> None:
    """A library instance stopped (it never ends of its own accord): count the failure
    against its template, keeping its output to explain it."""
    e.release(rec)

    def settle(output: bytes) -> None:
        failed(e, rec, output, f"on {w.label()}")
        e.txn.library(rec.task_id, "FAILURE", w.worker_id)
        if e.tuning.watch_library_logfiles and e.library_logs:
            write_whole(_log_path(e, rec.task_id), output)
        e.send(w, p.Kill(rec.task_id))
        e.tasks.finish(rec, msg.result)
        e._dirty = True

    if msg.output_length == 0 or msg.inline_stdout:
        settle(msg.inline_stdout)
    else:
        e.request(w, rec, p.SendStdout(rec.task_id), StdoutReply(
            rec, int(e.tuning.max_task_stdout_storage),
            lambda r, ok: settle(r.stdout or b"")))


def end_calls_of(e: Engine, name: str) -> None:
    """Calls waiting for library ``name``, which is gone, end with missing library
    (calls running in its instances come back forsaken and end the same way)."""
    for rec in list(e.tasks.records.values()):
        if rec.state == READY and rec.task._library_required == name:
            rec.stdout = e.libraries.why_missing(name)
            e.tasks.finish(rec, cvine.VINE_RESULT_MISSING_LIBRARY)
    e._dirty = True


def log_mount(e: Engine, rec: TaskRecord) -> p.Mount:
    """Watch the output of library instance ``rec`` into its log while it runs."""
    path = _log_path(e, rec.task_id)
    log = File(cvine.VINE_FILE, path, f"library-log-{rec.task_id}", 0, 0)
    write_whole(path, b"")
    rec.task._outputs.append(Mounting(log, ".taskvine.stdout", cvine.VINE_WATCH))
    return p.Mount(log._cachename, ".taskvine.stdout", cvine.VINE_WATCH)


def _log_path(e: Engine, task_id: int) -> str:
    return os.path.join(e.library_logs, f"library-task-{task_id}.log")


def write_whole(path: str, data: bytes) -> None:
    """Replace the local file at ``path`` with ``data`` (watched outputs start empty, library
    logs end whole); a failure shows when the output is retrieved or the log is read."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    except OSError:
        pass
