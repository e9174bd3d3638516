"""A small real workflow on local workers: count words in parts of a text, then merge.

Starts two ``vine_worker`` processes on this machine (they connect back over TCP to
127.0.0.1), sends each part of the input as a file, brings every partial count back as an
output file, and runs a last task that merges them. Run it with ``python examples/quickstart.py``;
the manager's logs stay in ``./vine-run-info/<time>/vine-logs/``.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import ndcctools.taskvine as vine

TEXT = """the quick brown fox jumps over the lazy dog
a stitch in time saves nine
the early bird catches the worm
all that glitters is not gold
""" * 50


def start_worker(port: int, workspace: str) -> subprocess.Popen:
    """A worker for this manager only: it exits after one session (``--single-shot``), or
    if it finds no manager for 30 s, or when this program goes away (``--parent-death``)."""
    exe = shutil.which("vine_worker")
    cmd = [exe] if exe else [sys.executable, "-m", "ndcctools.taskvine.tools.vine_worker"]
    return subprocess.Popen(cmd + ["--single-shot", "--timeout", "30", "--parent-death",
                                   "--cores", "2", "--memory", "1000", "--disk", "2000",
                                   "--workspace", workspace, "127.0.0.1", str(port)])


def stop_workers(workers: list[subprocess.Popen]) -> None:
    """Let released workers exit; end those that never got to connect."""
    for w in workers:
        try:
            w.wait(5)
        except subprocess.TimeoutExpired:
            w.terminate()
            w.wait(5)


def main() -> int:
    work = tempfile.mkdtemp(prefix="vine-quickstart-")
    workers: list[subprocess.Popen] = []
    try:
        with vine.Manager(port=0) as m:  # logs go to ./vine-run-info/<time>/vine-logs
            print(f"manager listening on port {m.port}; logs in {m.logging_directory}")
            workers = [start_worker(m.port, os.path.join(work, f"worker{i}")) for i in range(2)]
            ok = count_words(m, work)
        return 0 if ok else 1
    finally:
        stop_workers(workers)
        shutil.rmtree(work, ignore_errors=True)


def count_words(m: vine.Manager, work: str) -> bool:
    """Count the words of each part on the workers, then merge the counts; True if all went
    well."""
    lines = TEXT.splitlines(keepends=True)
    script = m.declare_buffer("tr ' ' '\\n' < part.txt | sort | uniq -c > counts.txt\n",
                              cache=True)
    partials = []
    for i in range(8):
        part = os.path.join(work, f"part{i}.txt")
        with open(part, "w") as f:
            f.writelines(lines[i::8])
        counts = m.declare_file(os.path.join(work, f"counts{i}.txt"))
        t = vine.Task("sh count.sh")
        t.set_cores(1)
        t.add_input(script, "count.sh")
        t.add_input(m.declare_file(part), "part.txt")
        t.add_output(counts, "counts.txt")
        m.submit(t)
        partials.append(counts)
    while not m.empty():
        t = m.wait(10)
        if t is not None:
            print(f"task {t.id} on {t.hostname}: {t.result}, exit code {t.exit_code}")
            if not t.successful():
                return False
    merge = vine.Task("cat counts*.txt | awk '{n[$2] += $1} END {for (w in n) "
                      "print n[w], w}' | sort -rn | head -5")
    for i, counts in enumerate(partials):
        merge.add_input(counts, f"counts{i}.txt")
    m.submit(merge)
    t = m.wait(60)
    if t is None:
        print("the merge did not finish within 60 s")
        return False
    print("most common words:\n" + t.std_output)
    return t.successful()


if __name__ == "__main__":
    sys.exit(main())
