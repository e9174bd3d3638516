"""The manager shown to a person: its HTML summary in a notebook (``_repr_html_``), the
notebook widget's refresh, and the progress line of terminal ``wait`` loops."""

import io
import re
from types import SimpleNamespace

import ndcctools.taskvine as vine
from ndcctools.taskvine import display
from tests.conftest import wait_connected, wait_tasks


class AppManager(vine.Manager):
    def application_info(self):
        return {"application_info": {"values": {"events": 42}, "units": {"events": "k"}}}


def test_the_html_summary_and_the_progress_line_follow_the_run(workers, tmp_path):
    with AppManager(port=0, run_info_path=str(tmp_path / "info")) as m:
        workers.start(m, cores=2)
        wait_connected(m, 1)
        out = io.StringIO()
        m.show_progress(stream=out)
        for i in range(12):
            t = vine.Task(f"exit {int(i % 4 == 0)}")
            t.set_category("odd" if i % 2 else "even")
            m.submit(t)
        wait_tasks(m, 12)
        page = m._repr_html_()
        assert "12 returned (3 failed)" in page
        assert "1 connected" in page and "<td>odd</td>" in page and "<td>even</td>" in page
        assert "42 k" in page  # the program's own application_info
        m.show_progress(False)  # draws a last line, then a newline
        lines = out.getvalue().split("\r")
        assert re.search(r"12 done \(3 failed\) \| workers: 1", lines[-1])
        assert out.getvalue().endswith("\n") and len(lines) >= 2
        m.wait(0)
        assert out.getvalue().endswith("\n")  # off: nothing more


def test_a_notebook_widget_is_refreshed_from_wait_at_most_once_per_interval(manager):
    widget = display.Widget(manager, 3600, SimpleNamespace(value=""))
    manager._displays.append(widget)
    manager.wait(0)
    first = widget.widget.value
    assert first.startswith("<div class='taskvine-manager'>")
    widget.widget.value = "stale"
    manager.wait(0)
    assert widget.widget.value == "stale"  # not again within the interval
    assert display.Widget.start(manager, 5) is None  # not in a notebook kernel
    assert display.Widget.start(manager, None) is None


def test_a_display_that_fails_is_switched_off_not_raised(manager):
    class Broken:
        def tick(self):
            raise OSError("terminal gone")

    manager._displays.append(Broken())
    assert manager.wait(0) is None
    assert manager._displays == []
