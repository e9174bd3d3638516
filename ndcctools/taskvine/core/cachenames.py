"""Cache names of declared files, as upstream computes them (protocol spec §6).

Level >= 2 (worker, forever) names come from content: ``file-md5-<checksum>``,
``buffer-md5-<md5>``. Level 0-1 names are cheap: ``file-meta-<md5 of path-size-ctime>`` for
local files that exist, random ``<kind>-rnd-<15 letters>`` otherwise.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
import string
import time
import urllib.parse
import urllib.request

_LETTERS = string.ascii_lowercase
_TO_LETTER = bytes(ord(_LETTERS[i % 26]) for i in range(256))  # random byte -> a letter


# Names need to be unique, not secret: a generator seeded from the system (and again in
# every forked child) costs no system call per name, as os.urandom would.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)


def random_name(kind: str) -> str:
    """``<kind>-rnd-`` and 15 random lowercase letters, as upstream names them."""
    return f"{kind}-rnd-{_random.randbytes(15).translate(_TO_LETTER).decode()}"


def random_id() -> str:
    """A random id in the shape of an upper-case UUID (transfer ids)."""
    h = f"{_random.getrandbits(128):032X}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _ctime(seconds: float) -> str:
    """C's ``ctime()`` text (day padded with a space), trailing newline included."""
    t = time.localtime(seconds)
    return time.strftime(f"%a %b {t.tm_mday:2d} %H:%M:%S %Y\n", t)


def checksum(path: str) -> str:
    """MD5 of a file's bytes, a link's target, or (recursively) a directory's entries."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return hashlib.md5(os.readlink(path).encode()).hexdigest()
    if stat.S_ISDIR(st.st_mode):
        h = hashlib.md5()
        for entry in sorted(os.listdir(path), key=os.fsencode):
            child = os.path.join(path, entry)
            est = os.stat(child)
            h.update(f"{entry}:{est.st_mode:o}:{_ctime(est.st_mtime)}:{checksum(child)}:\n"
                     .encode())
        return h.hexdigest()
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def local_file_name(path: str, level: int) -> str:
    """Cache name of a local file or directory declared at ``level``."""
    try:
        st = os.stat(path)
    except OSError:
        return random_name("file")
    if level >= 2:
        try:
            return f"file-md5-{checksum(path)}"
        except OSError:
            return random_name("file")
    text = f"{path}-{st.st_size}-{_ctime(st.st_mtime)}"
    return f"file-meta-{hashlib.md5(text.encode()).hexdigest()}"


def buffer_name(data: bytes | None, level: int) -> str:
    if level >= 2 and data:
        return f"buffer-md5-{hashlib.md5(data).hexdigest()}"
    return random_name("buffer")


def url_name(url: str, level: int) -> str:
    """Cache name of a URL: from the server's metadata at level >= 2, random below."""
    if level < 2:
        return random_name("url")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        try:
            return f"url-md5-content-{checksum(urllib.parse.unquote(parts.path))}"
        except OSError:
            return f"url-md5-url-{hashlib.md5(url.encode()).hexdigest()}"
    headers: dict[str, str] = {}
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as r:
            headers = {k: v for k, v in r.headers.items()}
    except (OSError, ValueError):
        pass
    for key in ("Content-MD5", "content-md5"):
        if headers.get(key):
            return f"url-md5-content-{headers[key].split()[0]}"
    for key in ("ETag", "etag"):
        if headers.get(key):
            text = f"{url}-{headers[key].split()[0]}"
            return f"url-md5-et-{hashlib.md5(text.encode()).hexdigest()}"
    for key in ("Last-Modified", "last-modified"):
        if headers.get(key):
            text = f"{url}-{headers[key].split()[0]}"
            return f"url-md5-lm-{hashlib.md5(text.encode()).hexdigest()}"
    return f"url-md5-url-{hashlib.md5(url.encode()).hexdigest()}"


def minitask_name(command: str, inputs: list[tuple[str, str]], outputs: list[str],
                  env: list[str], source: str, level: int) -> str:
    """Cache name of a mini-task product: from its definition at level >= 2."""
    if level < 2:
        return random_name("task")
    text = (f'{{\ncmd = "{command}"\ninputs = '
            + "".join(f'{{ name: "{remote}", content: "{name}"}}, ' for remote, name in inputs)
            + "\noutputs = " + "".join(f'{{ name: "{remote}" }}, ' for remote in outputs)
            + "\nenvironment = " + "".join(f'{{ name: "{var}" }}, ' for var in env) + "\n")
    return f"task-md5-{hashlib.md5(f'{text}:{source}'.encode()).hexdigest()}"
