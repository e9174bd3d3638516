"""Showing a manager to the person running it: in a notebook and on a terminal.

* ``summary_html(m)`` is what a ``Manager`` renders as in Jupyter (``_repr_html_``): the
  run, its tasks by state, its workers and their resources, the categories and the
  program's own ``application_info()``.
* ``Widget`` keeps such a summary on screen and current: with ``status_display_interval``
  of 1 s or more, inside an IPython kernel that has ``ipywidgets``, the manager shows one
  HTML widget and ``wait`` refreshes it at most once per interval.
* ``ProgressLine`` is the terminal's version (``Manager.show_progress()``, off by default):
  one line, rewritten in place by ``wait`` at most every half second, with the tasks by
  state, the workers and the rate of tasks returned.

Both are refreshed from ``wait`` on the manager's own thread, never from a thread of their
own, and a failure to draw never reaches the program: the display is switched off instead.
"""

from __future__ import annotations

import html
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from . import observe

if TYPE_CHECKING:
    from .manager import Manager

PROGRESS_EVERY = 0.5  # seconds between two progress lines


def summary_html(m: Manager) -> str:
    o = observe.overview(m)
    states = o["tasks_by_state"]
    rows = [("run", m.runtime_directory), ("port", m.port)]
    if o["name"]:
        rows.insert(0, ("project", o["name"]))
    rows += [
        ("tasks", f"{states['waiting']} waiting, {states['running']} running, "
                  f"{states['waiting_retrieval'] + states['retrieved']} with results, "
                  f"{o['tasks_done']} returned ({o['tasks_failed']} failed)"),
        ("workers", f"{o['workers_connected']} connected ({o['workers_busy']} busy)"),
        ("cores", f"{_number(o['committed_cores'])} of {_number(o['total_cores'])} in use"),
        ("memory", f"{o['committed_memory']:,} of {o['total_memory']:,} MB in use"),
        ("disk", f"{o['committed_disk']:,} of {o['total_disk']:,} MB in use"),
    ]
    if o["library_instances"]:
        rows.append(("libraries", f"{', '.join(o['libraries'])} "
                                  f"({o['library_instances']} instances)"))
    parts = [_table("TaskVine manager", rows)]
    categories = [r for r in m.status("categories") if r.get("category")]
    if categories:
        parts.append(_grid("categories", ["category", "waiting", "running", "done", "mode"],
                           [[c.get("category"), c.get("tasks_waiting", 0),
                             c.get("tasks_running", 0), c.get("tasks_done", 0),
                             c.get("mode", "")] for c in categories]))
    info = _application_rows(m)
    if info:
        parts.append(_table("application", info))
    return "<div class='taskvine-manager'>" + "".join(parts) + "</div>"


def _application_rows(m: Manager) -> list[tuple[str, Any]]:
    info = m.application_info()
    values = (info or {}).get("application_info", {}).get("values", {})
    units = (info or {}).get("application_info", {}).get("units", {})
    return [(name, f"{value} {units.get(name, '')}".strip()) for name, value in values.items()]


def _table(title: str, rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                   f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<table><caption style='text-align:left'><b>{html.escape(title)}</b></caption>" \
           f"{body}</table>"


def _grid(title: str, header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><caption style='text-align:left'><b>{html.escape(title)}</b></caption>" \
           f"<tr>{head}</tr>{body}</table>"


def _number(x: float) -> str:
    return f"{x:g}"


class Widget:
    """The summary in a notebook, as an ipywidgets HTML widget refreshed by ``tick``."""

    def __init__(self, m: Manager, interval: float, widget: Any):
        self.m, self.interval, self.widget = m, interval, widget
        self.next = 0.0

    @classmethod
    def start(cls, m: Manager, interval: Any) -> Widget | None:
        """A widget on screen now, or None: no interval of 1 s or more, not in an IPython
        kernel, or no ipywidgets."""
        if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval < 1:
            return None
        try:
            from IPython import get_ipython
            from IPython.display import display
            if get_ipython() is None or not hasattr(get_ipython(), "kernel"):
                return None
            import ipywidgets
            widget = ipywidgets.HTML(value=summary_html(m))
            display(widget)
        except Exception:  # noqa: BLE001 - no notebook display: none at all
            return None
        return cls(m, float(interval), widget)

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self.next:
            self.next = now + self.interval
            self.widget.value = summary_html(self.m)


class ProgressLine:
    """One line on a terminal: tasks by state, workers, tasks returned per second."""

    def __init__(self, m: Manager, stream: TextIO | None = None):
        self.m = m
        self.stream = stream or sys.stderr
        self.next = 0.0
        self.last = (time.monotonic(), observe.overview(m)["tasks_done"])

    def tick(self) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + PROGRESS_EVERY
        o = observe.overview(self.m)
        then, done_then = self.last
        rate = (o["tasks_done"] - done_then) / max(now - then, 1e-9)
        self.last = (now, o["tasks_done"])
        s = o["tasks_by_state"]
        line = (f"tasks: {s['waiting']} waiting, {s['running']} running, "
                f"{o['tasks_done']} done ({o['tasks_failed']} failed) | workers: "
                f"{o['workers_connected']} | {rate:,.0f} tasks/s")
        self.stream.write("\r" + line.ljust(79) + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        self.next = 0.0
        self.tick()
        self.stream.write("\n")
        self.stream.flush()
