"""The program that runs a PythonTask on a worker (shipped to workers as ``w_<id>``).

Usage: ``python3 w_<id> f_<id> a_<id> o_<id> [raw]``: load the function (``f_``) and its
``[args, kwargs]`` (``a_``) with cloudpickle, call it, and write the return value to ``o_``
(pickled, or as raw bytes with ``raw``). When the function raises, its traceback goes to
stdout and the program exits with status 1 without writing ``o_``.

It imports nothing but the standard library and cloudpickle, so any worker can run it.
"""

import sys
import traceback

import cloudpickle


def main(argv: list[str]) -> int:
    func_path, args_path, out_path = argv[1:4]
    raw = argv[4:5] == ["raw"]
    with open(func_path, "rb") as f:
        func = cloudpickle.load(f)
    with open(args_path, "rb") as f:
        args, kwargs = cloudpickle.load(f)
    try:
        value = func(*args, **kwargs)
    except Exception:
        traceback.print_exc(file=sys.stdout)
        return 1
    with open(out_path, "wb") as f:
        if raw:
            f.write(value)
        else:
            cloudpickle.dump(value, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
