"""The yardstick (``../shared/bench``) with a feature on, beside the same run without.

    python benchmarks/yardstick_variants.py --variant secure [--only B1,B4,B5] [--reps 3]
    python benchmarks/yardstick_variants.py --variant monitoring --only B1 [--bench DIR]

Each repetition runs one yardstick script in its own process, alternately plain and with the
variant, which is the unchanged script with ``ndcctools.taskvine.Manager`` patched:

* ``secure``: ``ssl=True`` and a password file, and every worker given ``--ssl --password
  FILE`` (ours and upstream's workers understand both);
* ``monitoring``: ``enable_monitoring()`` (watchdog on) called on every manager;
* ``observed``: every manager serves Prometheus metrics, scraped every second, and the
  dashboard, open in a headless Chromium (``/usr/bin/chromium``) for the whole run.

Prints one JSON line per result (with ``"mode"``), then the medians side by side.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SCRIPTS = {"B1": ("b1_command_throughput.py", ["--n", "5000"]),
           "B4": ("b4_data_movement.py", []),
           "B5": ("b5_latency.py", [])}
BROWSER_START = 3.0  # seconds given to the browser to start and load the dashboard
DEFAULT_BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                             "bench")


def run_variant(variant: str, script: str, args: list[str]) -> None:
    """Run ``script`` here with ``variant`` on (the inner process)."""
    import ndcctools.taskvine as vine

    plain = vine.Manager
    password_file = None
    if variant == "secure":
        fd, password_file = tempfile.mkstemp(prefix="vine-bench-pw-")
        os.write(fd, os.urandom(16).hex().encode() + b"\n")
        os.close(fd)
        args = [*args, "--worker-arg=--ssl", "--worker-arg=--password",
                f"--worker-arg={password_file}"]

    class PatchedManager(plain):
        def __init__(self, *a, **kw):
            if variant == "secure":
                kw["ssl"] = True
            elif variant == "observed":
                kw.update(prometheus_port=0, dashboard_port=0)
            super().__init__(*a, **kw)
            if variant == "secure":
                self.set_password_file(password_file)
            elif variant == "monitoring":
                self.enable_monitoring()
            else:
                watch(self.prometheus_port, self.dashboard_url)

    vine.Manager = PatchedManager
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        if password_file:
            os.unlink(password_file)


def watch(metrics_port: int, dashboard_url: str) -> None:
    """Scrape the metrics every second and keep the dashboard open in a browser until this
    process exits. The browser's start (about a CPU second) is left out of the timed run: a
    person opens the page before watching it."""
    def scrape() -> None:
        try:
            while True:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                    r.read()
                time.sleep(1)
        except OSError:
            return  # the manager closed

    threading.Thread(target=scrape, daemon=True).start()
    profile = tempfile.mkdtemp(prefix="vine-bench-chromium-")
    browser = subprocess.Popen(
        ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         dashboard_url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(lambda: (browser.kill(), browser.wait(), shutil.rmtree(profile, True)))
    time.sleep(BROWSER_START)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", choices=("secure", "monitoring", "observed"), default="secure")
    ap.add_argument("--only", default="B1,B4,B5")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bench", default=DEFAULT_BENCH, help="the yardstick's directory")
    ap.add_argument("--inner", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        run_variant(a.variant, a.inner[0], a.inner[1:])
        return
    results: dict[tuple[str, str, str], list[float]] = {}
    for rep in range(a.reps):
        for name in a.only.split(","):
            script, extra = SCRIPTS[name]
            path = os.path.join(a.bench, script)
            for mode in ("plain", a.variant):
                cmd = [sys.executable, path, *extra] if mode == "plain" else \
                    [sys.executable, __file__, "--variant", a.variant, "--inner", path, *extra]
                out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
                for line in out.splitlines():
                    if not line.startswith("{"):
                        continue
                    record = json.loads(line)
                    record.update(mode=mode, rep=rep)
                    print(json.dumps(record), flush=True)
                    key = (record["bench"], record.get("unit", ""))
                    results.setdefault(key, {}).setdefault(mode, []).append(record["value"])
    v = a.variant
    print(f"\n| result | plain | {v} | {v}/plain |\n|---|---|---|---|")
    for (bench, unit), modes in sorted(results.items()):
        if len(modes) == 2:
            p, s = statistics.median(modes["plain"]), statistics.median(modes[v])
            print(f"| {bench} ({unit}) | {p:,.2f} | {s:,.2f} | {s / p:.2f} |")


if __name__ == "__main__":
    main()
