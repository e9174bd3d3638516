"""A live dashboard of a running manager: ``Manager(..., dashboard_port=N)``.

Theory of operation::

    browser ──GET /api/state, every second──▶ _server (daemon thread) ──▶ _app.App
       ▲  keeps the series over time             │ one thread per request   │ observe.*
       └──────── JSON of the moment ◀────────────┘                          ▼
                                                               the manager's live tables

The manager does no work for the dashboard on its own thread: ``start`` turns on the
bounded history of finished tasks (``observe.watch``) and starts a daemon thread that serves
HTTP on 127.0.0.1 (by default). Each request reads the manager as it is, through
``observe``'s readers, which take no lock and read again if the manager changed a table
under them. The server keeps no time series: the page (``static/``) polls ``/api/state``
and accumulates what it draws (tasks by state, throughput, cores in use) in the browser,
with uPlot, vendored under ``static/vendor/`` (no network is needed at run time).

``_app`` decides every answer without sockets (static files, JSON, 404, 405, 500);
``_server`` is the thin I/O shell around it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import observe
from ._server import DashboardServer

if TYPE_CHECKING:
    from ..manager import Manager

__all__ = ["DashboardServer", "start"]


def start(manager: Manager, port: int, host: str = "127.0.0.1") -> DashboardServer:
    """Serve ``manager``'s dashboard on ``host``:``port`` (0: any free port) until the
    returned server's ``close()``. Pass a weak proxy: the server must not keep the manager
    alive."""
    observe.watch(manager)
    return DashboardServer(manager, port, host)
