"""``vine_submit_workers -T TYPE [options] HOST PORT NUM`` (or ``-M NAME NUM``): submit NUM
workers to a batch system once, print their job ids, and exit. Unlike ``vine_factory`` it
does not watch them: each leaves after ``--timeout`` idle seconds."""

from __future__ import annotations

import argparse
import os
import sys

from ndcctools.taskvine.batch import BatchError, batch_system
from ndcctools.taskvine.factory.jobs import worker_binary, worker_job


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="vine_submit_workers",
                                 description="Submit TaskVine workers to a batch system")
    ap.add_argument("words", nargs="+", metavar="HOST PORT NUM | NUM")
    ap.add_argument("-T", "--batch-type", required=True)
    ap.add_argument("-M", "--manager-name")
    ap.add_argument("-C", "--catalog")
    ap.add_argument("--cores", type=int)
    ap.add_argument("--memory", type=int, help="MB")
    ap.add_argument("--disk", type=int, help="MB")
    ap.add_argument("--gpus", type=int)
    ap.add_argument("-t", "--timeout", type=int, help="idle seconds before a worker leaves")
    ap.add_argument("-E", "--extra-options", default="", help="more worker options")
    ap.add_argument("-B", "--batch-options", default="", help="more submit options")
    ap.add_argument("-S", "--scratch-dir", help="where job scripts and logs go")
    ap.add_argument("--env", action="append", help="VAR=VALUE for the workers (repeatable)")
    ap.add_argument("--python-package", help="a packed Python environment (tar)")
    ap.add_argument("--worker-binary")
    ap.add_argument("--wrapper")
    args = ap.parse_args(argv)
    words = args.words
    if args.manager_name and len(words) == 1:
        args.address = ["-M", args.manager_name] + (["-C", args.catalog] if args.catalog else [])
    elif len(words) == 3:
        args.address = words[:2]
    else:
        ap.error("give HOST PORT NUM, or -M NAME NUM")
    if not words[-1].isdigit() or (len(words) == 3 and not words[1].isdigit()):
        ap.error("PORT and NUM must be numbers")
    args.count = int(words[-1])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = vars(args)
    workdir = os.path.abspath(args.scratch_dir or f"vine-submit-{os.getuid()}")
    try:
        batch = batch_system(args.batch_type)
        batch.check()
        worker = worker_binary(args.worker_binary)
        os.makedirs(workdir, exist_ok=True)
        for n in range(args.count):
            job = worker_job(options, batch.name, worker, args.address,
                             f"vine-worker-{os.getpid()}-{n}", workdir)
            print(batch.submit(job), flush=True)
    except (BatchError, OSError) as e:
        sys.stderr.write(f"vine_submit_workers: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
