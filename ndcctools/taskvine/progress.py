"""Progress bars of DaskVine and FuturesExecutor runs, drawn by ``rich``.

A run says how much there is to do (``set_total`` for the nodes of a graph, ``grow`` for
each future submitted) and how much is done (``advance``); the bar shows ``done/total`` and
the time elapsed. ``rich`` draws it on the terminal, or in a Jupyter notebook, from its own
refresh thread (ten times a second) until ``stop``, which draws it a last time. ``rich`` is
optional: without it ``Progress.start`` returns None and the run goes on without a bar.
"""

from __future__ import annotations

from typing import Any


class Progress:
    """One progress bar (one rich ``Progress`` with one task)."""

    def __init__(self, bar: Any, task_id: Any) -> None:
        self.bar, self.task_id = bar, task_id
        self.total = 0

    @classmethod
    def start(cls, label: str, console: Any = None) -> Progress | None:
        """A bar labelled ``label`` drawn on ``console`` (a ``rich.console.Console``; rich's
        own console by default), or None if rich is not installed."""
        try:
            from rich import progress as rp
        except ImportError:
            return None
        bar = rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(),
                          rp.MofNCompleteColumn(), rp.TimeElapsedColumn(),
                          console=console, transient=False)
        bar.start()
        return cls(bar, bar.add_task(label, total=None))

    def set_total(self, n: int) -> None:
        self.total = n
        self.bar.update(self.task_id, total=n)

    def grow(self, n: int = 1) -> None:
        """``n`` more things to do."""
        self.set_total(self.total + n)

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task_id, n)

    def stop(self) -> None:
        self.bar.stop()
