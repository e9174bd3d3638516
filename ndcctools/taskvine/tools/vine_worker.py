"""``vine_worker``: the worker program (see ``ndcctools.taskvine.worker``)."""

import sys


def main(argv: list[str] | None = None) -> int:
    from ndcctools.taskvine.worker.main import main as worker_main
    return worker_main(argv)


if __name__ == "__main__":
    sys.exit(main())
