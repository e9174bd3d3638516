"""What the manager knows about one connected worker.

A ``WorkerRecord`` is owned by the engine's worker table: identity from the hello, resource
totals from ``resources`` blocks, what is committed to running tasks, which cache objects it
holds, and the tasks it runs. The readiness gate of protocol spec §2.3 is ``ready``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..resources import Resources

if TYPE_CHECKING:
    from ..file import File
    from .connection import Connection
    from .tasks import TaskRecord


class WorkerRecord:
    __slots__ = ("conn", "addrport", "hostname", "os", "arch", "version", "worker_id",
                 "total", "committed", "has_resources", "end_time", "features", "tasks",
                 "cache", "file_users", "transfer_port", "start_time", "tasks_done",
                 "last_heard", "check_sent", "cache_bytes", "draining", "factory", "building",
                 "paused_until", "forsaken_streak", "peer_auth", "slow_tasks", "task_wall_us",
                 "monitors", "told_unmonitored")

    def __init__(self, conn: Connection, addrport: str, now: float):
        self.conn = conn
        self.addrport = addrport
        self.hostname = "unknown"
        self.os = self.arch = self.version = ""
        self.worker_id: str | None = None
        self.total = Resources()
        self.committed = Resources()
        self.has_resources = False
        self.end_time = -1.0
        self.features: set[str] = set()
        self.tasks: dict[int, TaskRecord] = {}
        self.cache: dict[str, int] = {}  # cachename -> size, objects put or announced
        self.file_users: dict[str, int] = {}  # cachename -> tasks here that use it
        self.transfer_port = 0
        self.start_time = now
        self.tasks_done = 0
        self.task_wall_us = 0  # wall time of the tasks_done, in all (the "time" scheduler)
        self.last_heard = now
        self.check_sent = 0.0
        self.cache_bytes = 0
        self.draining = False
        self.factory: str | None = None
        self.building: dict[str, File] = {}  # mini-task products being built there
        self.paused_until = 0.0  # clock time: no tasks are sent before (it could not store
        # an input)
        self.forsaken_streak = 0  # tasks it forsook since it last completed one
        self.peer_auth = False  # holds the run's transfer secret: its peers must prove it
        self.slow_tasks = 0  # its tasks taken back as slow (enable_disconnect_slow_workers)
        self.monitors = False  # it measures its tasks (``info monitor``): monitoring.py
        self.told_unmonitored = False  # the debug log said it cannot

    @property
    def ready(self) -> bool:
        """Tasks may be sent: resources and end time have arrived (spec §2.3)."""
        return self.has_resources and self.end_time >= 0 and not self.draining

    def free(self, multiplier: float = 1.0) -> Resources:
        t, c = self.total, self.committed
        return Resources(t.cores * multiplier - c.cores, int(t.memory * multiplier) - c.memory,
                         int(t.disk * multiplier) - c.disk, int(t.gpus * multiplier) - c.gpus)

    def has_room(self, multiplier: float = 1.0) -> bool:
        """A free core or GPU (or memory, on a worker without cores): ``free`` without
        building its result, since every scheduling pass asks this of every worker."""
        t, c = self.total, self.committed
        return (t.cores * multiplier - c.cores > 0 or int(t.gpus * multiplier) - c.gpus > 0
                or (t.cores == 0 and int(t.memory * multiplier) - c.memory > 0))

    def finished(self, wall_us: int) -> None:
        """A task ended here after ``wall_us`` microseconds."""
        self.tasks_done += 1
        self.task_wall_us += wall_us

    def average_wall_us(self) -> float:
        """The average wall time of the tasks that ended here (0 before the first)."""
        return self.task_wall_us / self.tasks_done if self.tasks_done else 0.0

    def label(self) -> str:
        return f"{self.hostname} ({self.addrport})"
