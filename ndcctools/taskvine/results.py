"""Result strings as ``Task.result`` returns them (api.md §2): the C name lower-cased."""

from . import cvine

_NAMES = {value: name[len("VINE_RESULT_"):] for name, value in vars(cvine).items()
          if name.startswith("VINE_RESULT_")}
_NAMES[cvine.VINE_RESULT_RMONITOR_ERROR] = "MONITOR_ERROR"


def result_string(code: int) -> str:
    """``0`` → ``"success"``, ``64`` → ``"monitor error"``; unknown codes → ``"unknown"``."""
    return _NAMES.get(code, "UNKNOWN").lower().replace("_", " ")
