"""URL-encoding of names on the wire (protocol spec §1).

A byte is written as ``%XX`` (two uppercase hex digits) when it is a space or control byte
(<= 0x20), one of ``% \\ < > ' "``, or above 0x7A (``{ | } ~``, DEL and every non-ASCII
byte). Everything else, ``/`` and ``:`` included, is sent literally. The decoder also accepts
upstream's space-padded form (``% 9`` for a tab).
"""

import re

_UNSAFE = re.compile(r"[^\x21-\x7a]|[%\\<>'\"]")
_ESCAPE = [
    (f"%{b:02X}" if b <= 0x20 or b > 0x7A or chr(b) in "%\\<>'\"" else chr(b)) for b in range(256)
]


def encode(name: str) -> str:
    """Encode a name for the wire."""
    if _UNSAFE.search(name) is None:
        return name
    raw = name.encode("utf-8", "surrogateescape")
    return "".join([_ESCAPE[b] for b in raw])


def decode(text: str) -> str:
    """Decode a name received from the wire (lenient about space-padded escapes)."""
    if "%" not in text:
        return text
    raw = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        if raw[i] == 0x25 and i + 3 <= n:
            try:
                out.append(int(raw[i + 1:i + 3].replace(b" ", b"0"), 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return out.decode("utf-8", "surrogateescape")
