"""End-to-end: ``Manager(dashboard_port=0)``, the live dashboard.

Over HTTP without a browser: the pages and the JSON API, what a bad path (404), a bad method
(405) or a foreign ``Host`` (403) gets, a reader's error (500, the manager carries on), the
API's numbers against ``m.stats``, and the port closed by ``m.close()``. Then in a real
headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium) during
a run of a few hundred tasks on real workers, some failing: the page loads without console
errors, follows the run while it goes on, ends with the counts of ``m.stats``, lists the
workers and the failures; its screenshot is kept (tmp_path, and ``$VINE_TEST_ARTIFACTS`` if
set). Without Chromium the browser test skips, unless ``VINE_TEST_SYSTEMS=required`` (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.error
import urllib.request
import weakref
from pathlib import Path

import pytest

import ndcctools.taskvine as vine
from ndcctools.taskvine import observe
from ndcctools.taskvine.dashboard import _app
from tests.conftest import wait_connected, wait_tasks

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,2300")
TASKS, FAILING_EVERY = 300, 25
COUNTS = ("tasks_submitted", "tasks_done", "tasks_successful", "tasks_failed",
          "tasks_waiting", "tasks_running", "workers_connected")


def request(url: str, method: str = "GET", host: str | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, method=method, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def state(m: vine.Manager) -> dict:
    status, _, body = request(m.dashboard_url + "api/state")
    assert status == 200, body
    return json.loads(body)


def task(i: int) -> vine.Task:
    """Every FAILING_EVERY-th task fails with a word on its output; a few take a while."""
    if i % FAILING_EVERY == 0:
        t = vine.Task(f"echo 'failing task {i}: boom'; exit 3")
    else:
        t = vine.Task("sleep 0.3" if i % 60 == 1 else f"echo {i}")
    t.set_cores(1)
    return t


def run(m: vine.Manager, n: int) -> list[vine.Task]:
    for i in range(n):
        m.submit(task(i))
    return wait_tasks(m, n)


@pytest.fixture
def dashboard(tmp_path):
    with vine.Manager(port=0, dashboard_port=0, run_info_path=str(tmp_path / "run")) as m:
        yield m


def test_no_dashboard_unless_asked(manager):
    assert manager.dashboard_url is None


def test_pages_and_what_bad_requests_get(dashboard):
    url = dashboard.dashboard_url
    assert url == f"http://127.0.0.1:{dashboard._observers['dashboard'].port}/"
    status, headers, body = request(url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'id="stat-tasks_done"' in body and b"http" not in body.split(b"<body>")[0]
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for path, kind in (("dashboard.js", "text/javascript"), ("vendor/uPlot.iife.min.js",
                       "text/javascript"), ("vendor/uPlot.min.css", "text/css"),
                       ("api/overview", "application/json")):
        status, headers, _ = request(url + path)
        assert (status, headers["Content-Type"].split(";")[0]) == (200, kind), path
    assert request(url, "HEAD")[::2] == (200, b"")
    for path in ("nope", "api/nope", "api/", "static/index.html", "../pyproject.toml"):
        assert request(url + path)[0] == 404, path
    for method in ("POST", "DELETE", "PUT", "PATCH"):
        status, headers, _ = request(url + "api/state", method)
        assert (status, headers["Allow"]) == (405, "GET, HEAD"), method
    # a page of another site that resolves its own name to 127.0.0.1 reads nothing
    assert request(url + "api/state", host="evil.example:80")[0] == 403
    assert request(url + "api/state", host=f"localhost:{dashboard.port}")[0] == 200


def test_the_api_counts_what_the_manager_counts(dashboard, workers):
    m = dashboard
    workers.start(m, cores=2)
    wait_connected(m, 1)
    done = run(m, 40)
    s = m.stats
    data = state(m)
    o = data["overview"]
    for name in COUNTS + ("tasks_with_results", "total_cores", "bytes_sent", "bytes_received"):
        assert o[name] == getattr(s, name), name
    assert s.tasks_failed == 2 and s.tasks_done == len(done) == 40
    assert data["finished"]["results"] == {"success": 40}
    assert data["finished"]["executed"] == 40
    assert sorted(f["task_id"] for f in data["finished"]["failures"]) == sorted(
        t.id for t in done if t.exit_code == 3)
    assert all("boom" in f["output"] for f in data["finished"]["failures"])
    assert data["finished"]["slowest"][0]["seconds"] >= 0.25
    assert [w["addrport"] for w in data["workers"]] == [w["addrport"] for w in observe.workers(m)]
    assert data["workers"][0]["cores_total"] == 2
    assert data["transfers"] == [] and data["libraries"] == []


def test_the_api_lists_libraries(dashboard, workers):
    def doubled(x):  # nested: cloudpickle sends it by value (workers cannot import tests)
        return 2 * x

    m = dashboard
    workers.start(m)
    wait_connected(m, 1)
    lib = m.create_library_from_functions("dash", doubled, add_env=False)
    lib.set_cores(1)
    m.install_library(lib)
    for i in range(3):
        m.submit(vine.FunctionCall("dash", "doubled", i))
    assert sorted(t.output for t in wait_tasks(m, 3)) == [0, 2, 4]
    libraries = state(m)["libraries"]
    assert [(lib["name"], lib["instances"], lib["dropped"]) for lib in libraries] == [
        ("dash", 1, False)]
    assert libraries[0]["workers"] == [w["addrport"] for w in observe.workers(m)]
    assert state(m)["overview"]["library_instances"] == 1


def test_a_failing_reader_is_a_500_and_the_manager_carries_on(dashboard, workers, monkeypatch):
    def broken(m):
        raise KeyError("a bug in a reader")

    monkeypatch.setitem(_app.READERS, "workers", broken)
    m = dashboard
    status, _, body = request(m.dashboard_url + "api/workers")
    assert status == 500 and b"KeyError" in body
    assert request(m.dashboard_url + "api/state")[0] == 500
    assert request(m.dashboard_url + "api/overview")[0] == 200
    workers.start(m)
    wait_connected(m, 1)
    assert len(run(m, 3)) == m.stats.tasks_done == 3


def test_a_manager_gone_is_a_503():
    class Gone:
        pass

    target = Gone()
    app = _app.App(weakref.proxy(target), loopback_only=True, static={})
    del target
    assert app.respond("GET", "/api/overview", "127.0.0.1:1").status == 503
    assert app.respond("GET", "/", None).status == 404


def test_close_closes_the_port(tmp_path):
    m = vine.Manager(port=0, dashboard_port=0, run_info_path=str(tmp_path / "run"))
    server = m._observers["dashboard"]
    assert request(m.dashboard_url)[0] == 200
    m.close()
    assert m.dashboard_url is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    server.close()  # idempotent
    assert not server._thread.is_alive()


# -- in a real browser

@pytest.fixture
def browser(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install '.[test]')")
    if missing:
        message = (f"missing {', '.join(missing)}: apt-get install chromium chromium-driver "
                   "(tests/systems/install.sh)")
        if os.environ.get("VINE_TEST_SYSTEMS") == "required":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


def shown(driver, element_id: str) -> int | None:
    """The number the page shows in element ``element_id`` (None: none yet)."""
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.ID, element_id).text.replace(",", "")
    return int(text) if text.isdigit() else None


def keep_screenshot(driver, tmp_path: Path) -> Path:
    path = tmp_path / "dashboard.png"
    assert driver.save_screenshot(str(path))
    artifacts = os.environ.get("VINE_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)
    return path


@pytest.mark.slow
def test_the_page_follows_a_run_in_chromium(dashboard, workers, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    m = dashboard
    for _ in range(2):
        workers.start(m, cores=2)
    wait_connected(m, 2)
    page = WebDriverWait(browser, 30, poll_frequency=0.1)
    browser.get(m.dashboard_url)
    page.until(lambda d: shown(d, "stat-workers_connected") == 2)
    for i in range(TASKS):
        m.submit(task(i))
    wait_tasks(m, TASKS // 2)
    # the manager stands still: the page, polling on its own, must come to what it counts
    page.until(lambda d: shown(d, "stat-tasks_done") == m.stats.tasks_done)
    assert 0 < shown(browser, "stat-tasks_done") < TASKS
    wait_tasks(m, TASKS - TASKS // 2)
    s = m.stats
    assert (s.tasks_done, s.tasks_failed) == (TASKS, TASKS // FAILING_EVERY)
    page.until(lambda d: all(shown(d, f"stat-{name}") == getattr(s, name) for name in COUNTS))

    rows = browser.find_elements(By.CSS_SELECTOR, "#workers tbody tr")
    assert sorted(r.find_elements(By.TAG_NAME, "td")[1].text for r in rows) == sorted(
        w["addrport"] for w in observe.workers(m))
    failures = browser.find_element(By.ID, "failures").text
    assert "boom" in failures and "exit 3" in failures
    assert len(browser.find_elements(By.CSS_SELECTOR, "#slowest tbody tr")) == 10
    assert len(browser.find_elements(By.CSS_SELECTOR, "#charts canvas")) == 3
    samples = browser.execute_script("return window.taskvineDashboard.samples.done")
    assert len(samples) >= 2 and samples[-1] == TASKS and min(samples) < TASKS
    keep_screenshot(browser, tmp_path)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
