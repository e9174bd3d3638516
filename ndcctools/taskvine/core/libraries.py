"""Installed libraries and their instances on workers: the manager's side of serverless.

``install_library`` registers a *template* (a ``LibraryTask``). When a function call is
ready and no instance of its library has a free slot, the engine submits a hidden copy of
the template (an *instance*) that is scheduled like any task, one per worker and library.
Calls go to instances with free slots (``function_slots``, else the instance's cores; 1 in
direct mode) and need no resources of their own. Unlike upstream, each instance is sent up
to ``CALLS_PER_SLOT`` calls per slot: the worker queues them and starts the next one the
moment a slot frees, instead of a slot idling for a round trip to the manager.

An instance that ends counts as a failure of its template; after ``max-library-retries``
failures the template is dropped and every call waiting for it ends with ``missing
library``, carrying the library's own output (a traceback, usually) as its ``std_output``.

``LibraryTable`` owns templates, instances and the slots in use; the engine asks it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .tasks import TaskRecord

if TYPE_CHECKING:
    from ..task import Task
    from .workers import WorkerRecord

DIRECT = 1
CALLS_PER_SLOT = 16  # calls sent per slot: the worker queues them, so no slot waits for us


class Template:
    __slots__ = ("task", "failures", "error")

    def __init__(self, task: Task):
        self.task = task
        self.failures = 0
        self.error = b""  # output of the last instance that failed


class Instance:
    __slots__ = ("rec", "worker", "slots", "calls")

    def __init__(self, rec: TaskRecord, worker: WorkerRecord, slots: int):
        self.rec, self.worker, self.slots = rec, worker, slots
        self.calls: set[int] = set()  # ids of the calls sent to it and not yet complete

    @property
    def free(self) -> int:
        return self.slots * CALLS_PER_SLOT - len(self.calls)


class LibraryTable:
    def __init__(self) -> None:
        self.templates: dict[str, Template] = {}
        self.instances: dict[int, Instance] = {}  # instance task id -> instance
        self.pending: dict[str, TaskRecord] = {}  # library -> instance not yet dispatched
        self.dropped: dict[str, bytes] = {}  # library removed for failing -> last output

    # -- templates
    def install(self, task: Task) -> None:
        self.templates[task._library_provided] = Template(task)

    def remove(self, name: str) -> list[Instance]:
        """Forget template ``name``; returns its instances, for the engine to kill."""
        self.templates.pop(name, None)
        self.pending.pop(name, None)
        gone = [i for i in self.instances.values() if i.rec.library == name]
        for inst in gone:
            del self.instances[inst.rec.task_id]
        return gone

    def exists(self, name: str) -> bool:
        return name in self.templates

    def new_instance(self, name: str) -> Task:
        """A copy of template ``name`` to submit as a hidden instance."""
        return self.templates[name].task._unsubmitted_copy()

    # -- instances
    def wants_instance(self, name: str, workers: Iterable[WorkerRecord]) -> bool:
        """Whether a new instance of ``name`` should start: none is waiting to be
        dispatched and some ready worker has none yet."""
        if name in self.pending or name not in self.templates:
            return False
        return any(w.ready and not self.on_worker(w, name) for w in workers)

    def on_worker(self, w: WorkerRecord, name: str) -> Instance | None:
        for inst in self.instances.values():
            if inst.worker is w and inst.rec.library == name:
                return inst
        return None

    def dispatched(self, rec: TaskRecord, w: WorkerRecord, cores: float) -> int:
        """An instance went to ``w``; returns its number of slots."""
        task = rec.task
        slots = 1 if task._exec_mode == DIRECT else (task._function_slots or int(cores) or 1)
        self.instances[rec.task_id] = Instance(rec, w, slots)
        if self.pending.get(rec.library) is rec:
            del self.pending[rec.library]
        return slots

    def slot_for(self, name: str) -> Instance | None:
        """The instance of ``name`` with the most free slots, if any has one."""
        best = None
        for inst in self.instances.values():
            if inst.rec.library == name and inst.free > 0 and not inst.worker.conn.closed and (
                    best is None or inst.free > best.free):
                best = inst
        return best

    def ended(self, rec: TaskRecord, output: bytes, max_failures: int) -> bool:
        """Instance ``rec`` stopped; True if its template was dropped for failing too often."""
        self.instances.pop(rec.task_id, None)
        if self.pending.get(rec.library) is rec:
            del self.pending[rec.library]
        template = self.templates.get(rec.library)
        if template is None:
            return False
        template.failures += 1
        template.error = output or template.error
        if template.failures < max(1, max_failures):
            return False
        del self.templates[rec.library]
        self.dropped[rec.library] = template.error
        return True

    def why_missing(self, name: str) -> bytes:
        """What a call of library ``name``, which is not installed, is told."""
        error = self.dropped.get(name)
        if error is None:
            return f"library {name} is not installed\n".encode()
        return (f"library {name} failed to run and was removed; its last output:\n".encode()
                + error)

    def has_free_slot(self) -> bool:
        return any(i.free > 0 for i in self.instances.values())

    def drop_worker(self, w: WorkerRecord) -> None:
        for inst in [i for i in self.instances.values() if i.worker is w]:
            del self.instances[inst.rec.task_id]

    def idle(self) -> list[Instance]:
        """Instances running no call."""
        return [i for i in self.instances.values() if not i.calls]
