"""The yardstick (``../shared/bench``) with TLS and a password on, beside the same run without.

    python benchmarks/secure_yardstick.py [--only B1,B4,B5] [--reps 3] [--bench DIR]

Each repetition runs one yardstick script in its own process, alternately plain and secure.
A secure run is the unchanged script with ``ndcctools.taskvine.Manager`` made to use
``ssl=True`` and a password file, and every worker given ``--ssl --password FILE``. Prints
one JSON line per result (with ``"mode"``), then the medians side by side.
The workers must understand ``--ssl`` and ``--password`` (ours and upstream's do).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile

SCRIPTS = {"B1": ("b1_command_throughput.py", ["--n", "5000"]),
           "B4": ("b4_data_movement.py", []),
           "B5": ("b5_latency.py", [])}
DEFAULT_BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                             "bench")


def run_secure(script: str, args: list[str]) -> None:
    """Run ``script`` here with TLS and a password forced on (the inner process)."""
    import ndcctools.taskvine as vine

    fd, password_file = tempfile.mkstemp(prefix="vine-bench-pw-")
    os.write(fd, os.urandom(16).hex().encode() + b"\n")
    os.close(fd)
    plain = vine.Manager

    class SecureManager(plain):
        def __init__(self, *a, **kw):
            kw["ssl"] = True
            super().__init__(*a, **kw)
            self.set_password_file(password_file)

    vine.Manager = SecureManager
    sys.argv = [script, *args, "--worker-arg=--ssl", "--worker-arg=--password",
                f"--worker-arg={password_file}"]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        os.unlink(password_file)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default="B1,B4,B5")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bench", default=DEFAULT_BENCH, help="the yardstick's directory")
    ap.add_argument("--inner", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        run_secure(a.inner[0], a.inner[1:])
        return
    results: dict[tuple[str, str, str], list[float]] = {}
    for rep in range(a.reps):
        for name in a.only.split(","):
            script, extra = SCRIPTS[name]
            path = os.path.join(a.bench, script)
            for mode in ("plain", "secure"):
                cmd = [sys.executable, path, *extra] if mode == "plain" else \
                    [sys.executable, __file__, "--inner", path, *extra]
                out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
                for line in out.splitlines():
                    if not line.startswith("{"):
                        continue
                    record = json.loads(line)
                    record.update(mode=mode, rep=rep)
                    print(json.dumps(record), flush=True)
                    key = (record["bench"], record.get("unit", ""))
                    results.setdefault(key, {}).setdefault(mode, []).append(record["value"])
    print("\n| result | plain | secure | secure/plain |\n|---|---|---|---|")
    for (bench, unit), modes in sorted(results.items()):
        if len(modes) == 2:
            p, s = statistics.median(modes["plain"]), statistics.median(modes["secure"])
            print(f"| {bench} ({unit}) | {p:,.2f} | {s:,.2f} | {s / p:.2f} |")


if __name__ == "__main__":
    main()
