"""Moving bytes between sockets and files: the outbox shared by the manager and the worker,
and the splicer that receives file contents.

An ``Outbox`` holds ``bytes`` and ``FileSegment``s in order. ``flush(sock)`` sends as much as
the socket takes without blocking; consecutive byte strings go out in one ``send``, and file
contents go with ``os.sendfile`` straight from the page cache, never through Python.

Over TLS (an ``ssl.SSLSocket``) the kernel cannot move the bytes: ``Outbox`` then reads file
contents in ``TLS_CHUNK`` pieces and encrypts them in OpenSSL; ``receive(sock)`` drains every
record OpenSSL has decrypted, and the ``Splicer`` decrypts into its file (large files still
through the ``O_DIRECT`` buffers). OpenSSL may hold decrypted bytes that ``select`` cannot
see: an event loop on a TLS socket must check ``sock.pending()`` before it waits.

A ``Splicer`` moves received file contents from a socket into a file through a kernel pipe
(``os.splice``), so large transfers never pass through Python either. Files of ``DIRECT_MIN``
bytes or more are received into aligned buffers instead and written with ``O_DIRECT`` by a
helper thread while the next buffer fills: they bypass the page cache, whose fresh pages cost
more than the disk on a virtual machine that hands its free memory back to the host (each
newly touched page is then a host fault: ~300 MB/s buffered against ~1.5 GB/s direct).
File systems that refuse ``O_DIRECT`` (tmpfs, ...) get the splice path.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import queue
import resource
import socket
import ssl
import struct
import threading
from collections import deque

from .items import FileSegment, open_segment, write_all

TLS_CHUNK = 1 << 20  # bytes of a file read and encrypted per send over TLS
RECEIVE_SIZE = 1 << 20
_TLS_BLOCKED = (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError,
                InterruptedError)


def receive(sock: socket.socket, size: int = RECEIVE_SIZE) -> bytes:
    """What the socket has ready (b"" when the peer closed); ``BlockingIOError`` if nothing.
    On a TLS socket, also every record OpenSSL holds already decrypted."""
    if not isinstance(sock, ssl.SSLSocket):
        return sock.recv(size)
    parts = []
    total = 0
    try:
        while True:
            data = sock.recv(size)
            if not data:
                break
            parts.append(data)
            total += len(data)
            if not sock.pending() and total >= size:
                break
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        if not parts:
            raise BlockingIOError("no TLS record ready") from None
    return b"".join(parts)


class Outbox:
    __slots__ = ("_queue", "_file", "_retry", "bytes_sent")

    def __init__(self) -> None:
        self._queue: deque[bytes | FileSegment] = deque()
        self._file: tuple[int, int] | None = None  # (fd, offset) of the segment being sent
        self._retry: bytes | None = None  # TLS: what OpenSSL was given and must get again
        self.bytes_sent = 0

    def __bool__(self) -> bool:
        return bool(self._queue)

    def append(self, piece: bytes | FileSegment) -> None:
        self._queue.append(piece)

    def flush(self, sock: socket.socket) -> bool:
        """Send without blocking; True once everything queued has been sent."""
        if isinstance(sock, ssl.SSLSocket):
            return self._flush_tls(sock)
        queue = self._queue
        while queue:
            head = queue[0]
            if isinstance(head, FileSegment):
                if not self._send_segment(sock, head):
                    return False
                continue
            if len(queue) > 1 and not isinstance(queue[1], FileSegment):
                head = self._coalesce()
            try:
                n = sock.send(head)
            except (BlockingIOError, InterruptedError):
                return False
            self.bytes_sent += n
            if n < len(head):
                queue[0] = head[n:]
                return False
            queue.popleft()
        return True

    def _flush_tls(self, sock: ssl.SSLSocket) -> bool:
        """As ``flush``, through OpenSSL: a send that would block must be repeated with the
        same bytes, so the piece handed over is kept in ``_retry`` until it is taken."""
        queue = self._queue
        while queue:
            head = queue[0]
            piece = self._retry
            if piece is None:
                if isinstance(head, FileSegment):
                    piece = self._segment_chunk(head)
                elif len(queue) > 1 and not isinstance(queue[1], FileSegment):
                    piece = head = self._coalesce()
                else:
                    piece = head
            try:
                n = sock.send(piece) if piece else 0
            except _TLS_BLOCKED:
                self._retry = piece
                return False
            self._retry = None
            self.bytes_sent += n
            if isinstance(head, FileSegment):
                self._segment_sent(head, n)
            elif n < len(head):
                queue[0] = head[n:]
            else:
                queue.popleft()
        return True

    def _segment_chunk(self, seg: FileSegment) -> bytes:
        if self._file is None:
            self._file = (open_segment(seg), 0)
        fd, offset = self._file
        chunk = os.pread(fd, min(TLS_CHUNK, seg.length - offset), offset)
        if not chunk and offset < seg.length:
            raise OSError(f"{seg.path} shrank while it was being sent")
        return chunk

    def _segment_sent(self, seg: FileSegment, n: int) -> None:
        fd, offset = self._file
        offset += n
        if offset < seg.length:
            self._file = (fd, offset)
            return
        os.close(fd)
        self._file = None
        self._queue.popleft()

    def _coalesce(self) -> bytes:
        queue = self._queue
        parts = []
        while queue and not isinstance(queue[0], FileSegment):
            parts.append(queue.popleft())
        joined = b"".join(parts)
        queue.appendleft(joined)
        return joined

    def _send_segment(self, sock: socket.socket, seg: FileSegment) -> bool:
        if self._file is None:
            self._file = (open_segment(seg), 0)
        fd, offset = self._file
        while offset < seg.length:
            try:
                n = os.sendfile(sock.fileno(), fd, offset, seg.length - offset)
            except (BlockingIOError, InterruptedError):
                self._file = (fd, offset)
                return False
            if n == 0:
                raise OSError(f"{seg.path} shrank while it was being sent")
            offset += n
            self.bytes_sent += n
        os.close(fd)
        self._file = None
        self._queue.popleft()
        return True

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file[0])
            self._file = None
        self._retry = None
        self._queue.clear()


_F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20


#: Files of at least this many bytes are written with ``O_DIRECT`` (None: never).
DIRECT_MIN: int | None = 64 << 20
DIRECT_ALIGN = 4096  # file offsets, lengths and buffer addresses of direct writes
DIRECT_CHUNK = 4 << 20  # bytes per buffer, a multiple of DIRECT_ALIGN
DIRECT_BUFFERS = 4  # buffers per file: one filling, the others being written
DIRECT_WRITERS = 2  # helper threads writing them (two writes in flight keep the disk busy)


class SinkError(OSError):
    """Writing received bytes into the file failed (a full disk, an I/O error); ``consumed``
    bytes were taken from the socket all the same, so the stream can be followed on."""

    consumed = 0

    @classmethod
    def of(cls, error: OSError, consumed: int) -> SinkError:
        sink = cls(error.errno, error.strerror)
        sink.consumed = consumed
        return sink


class Splicer:
    """socket → pipe → file with ``os.splice``; one per receiving connection. Large files go
    socket → aligned buffer → ``O_DIRECT`` file instead (see ``_DirectFile``). A failure to
    write the file raises ``SinkError``, saying how many bytes left the socket."""

    __slots__ = ("_r", "_w", "size", "_direct", "_plain")

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        try:
            self.size = fcntl.fcntl(self._w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            self.size = 1 << 16  # the default pipe capacity
        os.set_blocking(self._w, False)
        self._direct: _DirectFile | None = None
        self._plain: tuple[int, int] | None = None  # (fd, bytes left): O_DIRECT refused

    def move(self, sock: socket.socket, fd: int, n: int) -> int:
        """Move up to ``n`` bytes that the socket has ready into ``fd``; 0 means the peer
        closed. Raises ``BlockingIOError`` if nothing is ready (non-blocking sockets).
        ``n`` must be what is left of the file; the caller must not write ``fd`` itself
        until the file is complete."""
        direct = self._direct
        if direct is not None and (direct.fd != fd or direct.left != n):
            self._drop_direct()  # the caller gave that file up
            direct = None
        if (direct is None and DIRECT_MIN is not None and n >= DIRECT_MIN and fd >= 0
                and self._plain != (fd, n)):
            direct = self._direct = _DirectFile.open(fd, n)
            self._plain = None if direct is not None else (fd, n)
        if direct is not None:
            try:
                got = direct.receive(sock)
            except SinkError:
                self._drop_direct()
                raise
            if not direct.left:
                self._direct = None
            return got
        if isinstance(sock, ssl.SSLSocket):
            got = _read_tls_into(sock, fd, n)
        else:
            got = self._splice(sock, fd, n)
        if self._plain is not None and self._plain[0] == fd:
            self._plain = (fd, n - got)
        return got

    def _splice(self, sock: socket.socket, fd: int, n: int) -> int:
        got = os.splice(sock.fileno(), self._w, min(n, self.size))
        left = got
        try:
            while left:
                left -= os.splice(self._r, fd, left)
        except OSError as e:
            while left:  # empty the pipe: those bytes are dropped with the file
                left -= len(os.read(self._r, min(left, 1 << 16)))
            raise SinkError.of(e, got) from e
        return got

    def _drop_direct(self) -> None:
        direct, self._direct = self._direct, None
        if direct is not None:
            try:
                direct.finish()
            except OSError:
                pass

    def close(self) -> None:
        self._drop_direct()
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class _BufferPool:
    """Aligned (mmap) buffers kept between transfers: memory touched once stays backed."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            while self._free:
                buf = self._free.pop()
                if len(buf) == DIRECT_CHUNK:
                    return buf
                buf.close()
        return mmap.mmap(-1, DIRECT_CHUNK)

    def give(self, buf: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self._keep and len(buf) == DIRECT_CHUNK:
                self._free.append(buf)
                return
        buf.close()


_POOL = _BufferPool(keep=DIRECT_BUFFERS)


class _DirectFile:
    """The rest of one file's content: up to the next aligned offset written as it comes,
    then received into aligned buffers that ``DIRECT_WRITERS`` helper threads write with
    ``O_DIRECT`` while the next buffer fills; a last unaligned tail is written after them.

    The helpers write through their own duplicate of the descriptor, so a caller that closes
    ``fd`` early never makes them write into another file. ``O_DIRECT`` is set on the open
    file only while the helpers run, so the caller must not write ``fd`` meanwhile."""

    def __init__(self, fd: int, left: int) -> None:
        self.fd = fd
        self.left = left  # bytes of the file still to receive
        self._pos = os.lseek(fd, 0, os.SEEK_CUR)  # file offset of the next byte received
        self._head = min(-self._pos % DIRECT_ALIGN, left)  # bytes before the aligned part
        self._wfd = -1
        self._lock = threading.Lock()
        self._can_direct = True
        self._error: OSError | None = None
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._todo: queue.SimpleQueue[tuple[mmap.mmap, int, int] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._nbuf = 0
        self._buf: mmap.mmap | None = None  # the buffer being filled, from file offset _base
        self._view: memoryview | None = None
        self._base = self._fill = 0
        self._tail: tuple[mmap.mmap, int, int, int] | None = None  # (buf, start, end, base)
        self._finished = False

    @classmethod
    def open(cls, fd: int, left: int) -> _DirectFile | None:
        """None if the file system refuses ``O_DIRECT``."""
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
        except OSError:
            return None
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        return cls(fd, left)

    def receive(self, sock: socket.socket) -> int:
        """Receive what the socket has ready (a blocking one: until a buffer is full), at
        most ``left`` bytes; 0 means the peer closed. Raises ``BlockingIOError`` if nothing is
        ready, ``TimeoutError`` when a blocking socket's ``SO_RCVTIMEO`` ran out. Once the
        file is complete, waits until it is written."""
        if self._head:
            return self._receive_head(sock)
        if not self._threads:
            self._start()
        tls = isinstance(sock, ssl.SSLSocket)  # records come 16 KiB at a time: read on
        got = 0
        try:
            while self.left:
                if self._view is None:
                    try:
                        self._next_buffer()
                    except OSError as e:  # a helper could not write an earlier buffer
                        raise SinkError.of(e, got) from e
                want = min(DIRECT_CHUNK - self._fill, self.left)
                try:
                    n = sock.recv_into(self._view[self._fill:self._fill + want], want,
                                       0 if tls else socket.MSG_WAITALL)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    if got:
                        break
                    raise BlockingIOError("no TLS record ready") from None
                except OSError as e:
                    if got:
                        break
                    _raise_timeout(sock, e)
                    raise
                got += n
                self._fill += n
                self.left -= n
                if self._fill == DIRECT_CHUNK or not self.left:
                    self._submit()
                if n == 0 or (n < want and not tls):  # dry, closed or timed out
                    break
        finally:
            if got:  # the caller's file offset moves as if it had written the bytes
                os.lseek(self.fd, got, os.SEEK_CUR)
        if not self.left:
            try:
                self.finish()
            except OSError as e:
                raise SinkError.of(e, got) from e
        return got

    def _receive_head(self, sock: socket.socket) -> int:
        try:
            data = sock.recv(self._head)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError("no TLS record ready") from None
        except OSError as e:
            _raise_timeout(sock, e)
            raise
        try:
            write_all(self.fd, data)
        except OSError as e:
            raise SinkError.of(e, len(data)) from e
        self._head -= len(data)
        self.left -= len(data)
        self._pos += len(data)
        return len(data)

    def _start(self) -> None:
        self._wfd = os.dup(self.fd)
        flags = fcntl.fcntl(self._wfd, fcntl.F_GETFL)
        fcntl.fcntl(self._wfd, fcntl.F_SETFL, flags | os.O_DIRECT)
        self._nbuf = DIRECT_BUFFERS
        for _ in range(self._nbuf):
            self._free.put(_POOL.take())
        for _ in range(DIRECT_WRITERS):
            thread = threading.Thread(target=self._write_loop, name="direct-writer",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _next_buffer(self) -> None:
        buf = self._free.get()  # waits while every buffer is being written
        if self._error is not None:
            self._free.put(buf)
            raise self._error
        self._buf, self._view = buf, memoryview(buf)
        self._base, self._fill = self._pos, 0

    def _submit(self) -> None:
        assert self._buf is not None and self._view is not None
        self._view.release()
        aligned = self._fill - self._fill % DIRECT_ALIGN
        if aligned < self._fill:  # only ever the last buffer: written after the helpers
            self._tail = (self._buf, aligned, self._fill, self._base)
        self._todo.put((self._buf, aligned, self._base))
        self._pos = self._base + self._fill
        self._buf = self._view = None

    def _write_loop(self) -> None:
        while (item := self._todo.get()) is not None:
            buf, length, base = item
            try:
                if self._error is None and length:
                    with memoryview(buf) as view:
                        self._pwrite(view[:length], base)
            except Exception as e:
                self._error = e if isinstance(e, OSError) else OSError(f"direct write: {e}")
            finally:
                self._free.put(buf)

    def _pwrite(self, data: memoryview, offset: int) -> None:
        while data:
            try:
                n = os.pwrite(self._wfd, data, offset)
            except OSError as e:
                if e.errno != errno.EINVAL or not self._can_direct:
                    raise
                self._set_buffered()  # other alignment rules: the page cache it is
                continue
            data = data[n:]
            offset += n

    def _set_buffered(self) -> None:
        with self._lock:
            if self._can_direct:
                flags = fcntl.fcntl(self._wfd, fcntl.F_GETFL)
                fcntl.fcntl(self._wfd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
                self._can_direct = False

    def finish(self) -> None:
        """Write what was received, end the helpers, give the buffers back; raises the
        first write error."""
        if self._finished:
            return
        self._finished = True
        if not self._threads:
            return
        if self._view is not None:
            if self._fill:
                self._submit()
            else:
                self._view.release()
                self._free.put(self._buf)
                self._buf = self._view = None
        for _ in self._threads:
            self._todo.put(None)
        for thread in self._threads:
            thread.join()
        try:
            self._set_buffered()
            if self._tail is not None and self._error is None:
                buf, start, end, base = self._tail
                with memoryview(buf) as view:
                    self._pwrite(view[start:end], base + start)
        except OSError as e:
            self._error = self._error or e
        finally:
            self._tail = None
            os.close(self._wfd)
            for _ in range(self._nbuf):
                _POOL.give(self._free.get())
        if self._error is not None:
            raise self._error


def _read_tls_into(sock: ssl.SSLSocket, fd: int, n: int) -> int:
    """TLS has no zero-copy path: decrypt up to ``n`` bytes and write them into ``fd``."""
    try:
        data = sock.recv(min(n, RECEIVE_SIZE))
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        raise BlockingIOError("no TLS record ready") from None
    try:
        write_all(fd, data)
    except OSError as e:
        raise SinkError.of(e, len(data)) from e
    return len(data)


def _raise_timeout(sock: socket.socket, e: OSError) -> None:
    """``EAGAIN`` on a blocking socket means its ``SO_RCVTIMEO`` ran out."""
    if isinstance(e, BlockingIOError) and sock.gettimeout() is None:
        raise TimeoutError("nothing received before the socket's timeout") from None


def set_io_timeout(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking, with ``seconds`` as the kernel's limit on a send or receive
    that makes no progress (``SO_SNDTIMEO``/``SO_RCVTIMEO``; it then fails with ``EAGAIN``):
    sendfile, splice and recv wait in the kernel rather than in a poll per call."""
    sock.settimeout(None)
    tv = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (each worker
    connection holds one; the usual soft limit, 1,024, would stop a manager near 1,000
    workers); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # (an infinite hard limit is refused on some systems: keep what we have)
    return soft


def bind_listener(port: int | tuple[int, int],
                  backlog: int = socket.SOMAXCONN) -> socket.socket:
    """A listening socket on all interfaces: on ``port`` (0 = any free port), or on the first
    free port of ``(low, high)``."""
    low, high = (port, port) if isinstance(port, int) else port
    last: OSError | None = None
    for candidate in range(low, high + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", candidate))
        except OSError as e:
            sock.close()
            last = e
            continue
        sock.listen(backlog)
        return sock
    raise OSError(f"no free port in {low}..{high}: {last}")
