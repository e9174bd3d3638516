"""The program that runs a PythonTask on a worker (shipped to workers as ``w_<id>``).

Usage: ``python3 w_<id> f_<id> a_<id> o_<id> [raw]``: load the function (``f_``) and its
``[args, kwargs]`` (``a_``) with cloudpickle, call it, and write the return value to ``o_``
(pickled, or as raw bytes with ``raw``). When the function raises, its traceback goes to
stdout and the program exits with status 1 without writing ``o_``.

It imports nothing but the standard library and cloudpickle, so any worker can run it.
"""

import os
import sys
import traceback

import cloudpickle


def main(argv: list[str]) -> int:
    func_path, args_path, out_path = argv[1:4]
    raw = argv[4:5] == ["raw"]
    func = cloudpickle.loads(read(func_path))
    args, kwargs = cloudpickle.loads(read(args_path))
    try:
        value = func(*args, **kwargs)
    except Exception:
        traceback.print_exc(file=sys.stdout)
        return 1
    write(out_path, value if raw else cloudpickle.dumps(value))
    return 0


def read(path: str) -> bytes:
    """The whole file, with plain system calls (no buffered file object)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
