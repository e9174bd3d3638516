"""The taskgraph log, ``vine-logs/taskgraph`` (protocol spec §11.5): which files each task
read and wrote, for drawing the workflow afterwards.

One ``FILE`` line per declaration, a ``TASK T-<n>`` line for the recipe of each mini-task
file, and a ``TASK T<id>`` line whenever a task is done; ``# end`` when the manager closes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .logfile import LogFile

if TYPE_CHECKING:
    from ..file import File
    from ..task import Task

HEADER = """\
# taskvine taskgraph version 2
# TASK taskid "program" INPUTS fileid1 fileid fileid3 ... OUTPUTS fileid4 fileid5 ...
# FILE fileid "source" size
"""


class TaskGraphLog:
    def __init__(self, path: str):
        self._out = LogFile(path, truncate=True)
        self._out.write(HEADER)
        self._minitasks = 0

    def file(self, file: File) -> None:
        self._out.write(f'FILE {file._cachename} "{file._source}" {len(file)}\n')
        if file._minitask is not None:
            self._minitasks += 1
            self._task(f"T-{self._minitasks}", file._source, file._minitask, [file._cachename])

    def task(self, task_id: int, task: Task) -> None:
        words = task._command.split(maxsplit=1)
        self._task(f"T{task_id}", words[0] if words else "", task,
                   [m.file._cachename for m in task._outputs])

    def _task(self, label: str, program: str, task: Task, outputs: list[str]) -> None:
        inputs = "".join(f"{m.file._cachename} " for m in task._inputs)
        outs = "".join(f"{name} " for name in outputs)
        self._out.write(f'TASK {label} "{program}" INPUTS {inputs}OUTPUTS {outs}\n')

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        if not self._out.closed:
            self._out.write("# end\n")
            self._out.close()
