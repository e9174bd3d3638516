"""A small real workflow on local workers: count words in parts of a text, then merge.

A local ``Factory`` keeps two ``vine_worker`` processes on this machine for the manager
(they connect back over TCP), each part of the input goes to a worker as a file, every
partial count comes back as an output file, and a last task merges them. Run it with
``python examples/quickstart.py``; the manager's logs stay in
``./vine-run-info/<time>/vine-logs/``, the factory's next to them.
"""

import os
import shutil
import sys
import tempfile

import ndcctools.taskvine as vine

TEXT = """the quick brown fox jumps over the lazy dog
a stitch in time saves nine
the early bird catches the worm
all that glitters is not gold
""" * 50


def main() -> int:
    work = tempfile.mkdtemp(prefix="vine-quickstart-")
    try:
        with vine.Manager(port=0) as m:  # logs go to ./vine-run-info/<time>/vine-logs
            print(f"manager listening on port {m.port}; logs in {m.logging_directory}")
            workers = vine.Factory("local", manager=m)
            workers.min_workers = workers.max_workers = 2
            workers.cores, workers.memory, workers.disk = 2, 1000, 2000
            with workers:  # leaving the block stops the factory and its workers
                ok = count_words(m, work)
        return 0 if ok else 1
    finally:
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
