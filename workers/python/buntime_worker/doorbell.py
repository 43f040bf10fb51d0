"""The pure-Python client of the segment's rings (docs/ipc.md, "The
pure-Python doorbell client"): frames are written to and read from the
``mmap``'d segment with ``struct`` and ``memoryview``; the supervisor is
woken by a DATA doorbell on the control socket, and the reply is waited for
by a blocking ``recvmsg`` on the control socket (the worker shook hands with
``FLAG_DOORBELL_WAKE``, so the supervisor answers a doorbell with a
doorbell). No ctypes, no library: a round trip is a ``send`` and a
``recvmsg`` (two for an fd) plus a few microseconds of Python.

Ordering without a fence: x86-64 keeps stores in order and loads in order
(TSO), so the payload is visible before ``head``, and the reply doorbell is
asked for (``consumer_wait`` = 2 on S2W) *before* the request's ``head``
is published: a supervisor that sees the request sees the announcement.
Python has no store-load fence, so nothing here stores and then relies on
a load ordered after it, except re-arming after a doorbell that brought
no reply (an interrupted request), which waits in bounded slices. Other
architectures use the library (``ipc.Client``): see :func:`supported`.

Requests are one at a time (a lock held for the round trip): the reply
ring is empty when a request is sent, so the supervisor never waits for
room, which it would do on a futex this client cannot wake. Output
(STDOUT/STDERR/EXIT) has its own lock and never waits for a request.

Everything read from the segment is validated as the supervisor's side
does (docs/ipc.md, "The worker is hostile"): ``head`` is loaded once per
frame, lengths are checked against what was published, offsets are masked,
the payload is copied out before it is parsed, and the reply is decoded
strictly. Any violation stops the connection.
"""

from __future__ import annotations

import _socket
import _thread
import mmap
import os
import select
import struct

from . import wire
from .protocol import ALLOW, DENY, EXIT, IpcError, Reply

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

# Segment header (crates/buntime-ipc/src/layout.rs, checked by
# crates/buntime-ipc/tests/worker_constants.rs).
SEGMENT_MAGIC = 0x49544E42
LAYOUT_VERSION = 1
HEADER_SIZE = 4096
RING_DATA = 64
MIN_CAPACITY = 4096
MAX_CAPACITY = 1 << 30
MAX_PAYLOAD = 16 << 20
MAX_REASON = 1024
FLAG_FD_FOLLOWS = 0x01
# Control messages this client reads besides wire's.
FD = 0x07
STOP_PROTOCOL = 1
STOP_CORRUPTION = 2
# consumer_wait: "send me a DATA doorbell".
WAIT_DOORBELL = 2

# Words of a ring's header, as indexes of a memoryview cast to u32.
_HEAD, _TAIL, _CONSUMER_WAIT, _PRODUCER_WAIT = 0, 1, 3, 4
_M32 = 0xFFFFFFFF
_SEG_HEADER = struct.Struct("<IIIIIIIIQ")
_FRAME = struct.Struct("<IBBHI")  # length prefix, then the message header
_MSG = struct.Struct("<BBHI")
_CTL = struct.Struct("<BBHI")
_DOORBELL_W2S = wire._msg(wire.DATA, 0)
_CMSG_FD = _socket.CMSG_SPACE(4)
_TRUNC = _socket.MSG_TRUNC | _socket.MSG_CTRUNC
# Unclaimed fds kept (replies to requests nobody waits for any more).
_MAX_FDS = 1024
# Waiting in slices when a doorbell cannot be relied on (see _wait).
_FIRST_SLICE = 0.001
_LAST_SLICE = 0.1


def _ring(sock: _socket.socket) -> None:
    """A DATA doorbell, without blocking: with the supervisor's queue full
    (it reads its control messages only when its ring is empty) it has
    doorbells enough to wake it. A blocking send would stall a fast writer
    behind its own doorbells."""
    try:
        sock.send(_DOORBELL_W2S, _socket.MSG_DONTWAIT)
    except BlockingIOError:
        pass


def supported() -> bool:
    """True where the ordering argument above holds (x86 TSO)."""
    return os.uname().machine in ("x86_64", "amd64", "i686", "i386")


def _layout(mm: mmap.mmap) -> Tuple[int, int, int, int]:
    """(S2W offset, S2W capacity, W2S offset, W2S capacity), checked as
    ``Layout::parse`` does; raises IpcError."""
    if len(mm) < HEADER_SIZE:
        raise IpcError("bad segment: smaller than its header")
    (magic, version, hsize, _flags, s2w_off, s2w_cap, w2s_off, w2s_cap,
     total) = _SEG_HEADER.unpack_from(mm, 0)
    if magic != SEGMENT_MAGIC or version != LAYOUT_VERSION:
        raise IpcError("bad segment: magic or layout version")
    for cap in (s2w_cap, w2s_cap):
        if cap & (cap - 1) or not MIN_CAPACITY <= cap <= MAX_CAPACITY:
            raise IpcError(f"bad segment: ring capacity {cap}")

    def page(x: int) -> int:
        return -(-x // 4096) * 4096

    want_w2s = page(HEADER_SIZE + RING_DATA + s2w_cap)
    if (hsize != HEADER_SIZE or s2w_off != HEADER_SIZE or w2s_off != want_w2s
            or total != page(want_w2s + RING_DATA + w2s_cap)):
        raise IpcError("bad segment: inconsistent offsets")
    if total > len(mm):
        raise IpcError(f"bad segment: needs {total} bytes, mapped {len(mm)}")
    return s2w_off, s2w_cap, w2s_off, w2s_cap


class _Ring:
    """One ring's header words and data region (views of the mapping)."""

    __slots__ = ("words", "data", "cap", "mask")

    def __init__(self, view: memoryview, offset: int, cap: int) -> None:
        self.words = view[offset:offset + RING_DATA].cast("I")
        self.data = view[offset + RING_DATA:offset + RING_DATA + cap]
        self.cap = cap
        self.mask = cap - 1

    def copy_in(self, pos: int, b: bytes) -> None:
        start = pos & self.mask
        end = start + len(b)
        if end <= self.cap:
            self.data[start:end] = b
        else:
            first = self.cap - start
            self.data[start:] = b[:first]
            self.data[:end - self.cap] = b[first:]

    def copy_out(self, pos: int, n: int) -> bytes:
        start = pos & self.mask
        end = start + n
        if end <= self.cap:
            return bytes(self.data[start:end])
        return bytes(self.data[start:]) + bytes(self.data[:end - self.cap])

    def release(self) -> None:
        self.words.release()
        self.data.release()


class Corrupt(IpcError):
    """The segment holds something the supervisor cannot have written."""


class Client:
    """A connection to the supervisor in pure Python; thread-safe. Same
    interface as ``ipc.Client`` (send, exit, request, close, abandon)."""

    def __init__(self, pending: wire.Pending) -> None:
        """Map the segment of a connection ``wire.handshake`` made. On
        failure ``pending`` is left as it was (the caller may fall back)."""
        if pending.sock is None:
            raise IpcError("connection to the supervisor is closed")
        seg = pending.segment_fd
        mm = mmap.mmap(seg, os.fstat(seg).st_size, mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            s2w_off, s2w_cap, w2s_off, w2s_cap = _layout(mm)
        except BaseException:
            mm.close()
            raise
        sock, seg_fd, _version, _flags = pending.take()
        os.close(seg_fd)  # the mapping holds its own reference
        # Blocking receives end after a second (EAGAIN), with no poll
        # before each as a Python socket timeout would add.
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVTIMEO,
                        struct.pack("@ll", 1, 0))
        self._sock: Optional[_socket.socket] = sock
        self._mm = mm
        view = memoryview(mm)
        self._view = view
        self._rx = _Ring(view, s2w_off, s2w_cap)
        self._tx = _Ring(view, w2s_off, w2s_cap)
        self._max_rx = min(MAX_PAYLOAD, s2w_cap - 4)
        self._max_tx = min(MAX_PAYLOAD, w2s_cap - 4)
        # Our indexes, kept privately; the peer's are read, never trusted.
        self._tail = self._rx.words[_TAIL]
        self._head = self._tx.words[_HEAD]
        self._last_tail = self._head
        self._next_id = 1
        self._fds: Dict[int, int] = {}
        self._stopped = ""
        # A reply was taken before its doorbell came (see _wait).
        self._owed = False
        self._send_lock = _thread.allocate_lock()
        self._req_lock = _thread.allocate_lock()

    # -- state -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._sock is None or bool(self._stopped)

    def _live(self) -> _socket.socket:
        sock = self._sock
        if sock is None:
            raise IpcError("connection to the supervisor is closed")
        if self._stopped:
            raise IpcError(self._stopped)
        return sock

    def _fail(self, err: IpcError, code: int) -> IpcError:
        """Stop the connection because of ``err`` (as the library does:
        STOP with the code, then no more traffic); returns ``err``."""
        if not self._stopped:
            self._stopped = str(err)
            sock = self._sock
            if sock is not None:
                try:
                    sock.send(wire._msg(wire.STOP, code, str(err)[:256]
                                        .encode("utf-8", "replace")))
                    sock.shutdown(_socket.SHUT_RDWR)
                except OSError:
                    pass
        return err

    # -- output ------------------------------------------------------------

    def send(self, kind: int, data: bytes) -> None:
        """STDOUT / STDERR (split into frames) or EXIT."""
        chunk = min(self._max_tx, self._tx.cap // 4) - _MSG.size
        with self._send_lock:
            sock = self._live()
            view = memoryview(data)
            while True:
                part, view = view[:chunk], view[chunk:]
                self._push(_FRAME.pack(_MSG.size + len(part), kind, 0, 0, 0)
                           + part)
                if not view:
                    break
            # A doorbell only if the supervisor asked for one, and one per
            # asking: the announcement is cleared before ringing (as the
            # library's swap does), or a fast writer would queue a doorbell
            # a frame and fill the control socket. Without a store-load
            # fence the announcement may be read stale, which delays this
            # output until the supervisor's next look (200 ms at most) but
            # never loses it; a request always rings.
            words = self._tx.words
            if words[_CONSUMER_WAIT] == WAIT_DOORBELL:
                words[_CONSUMER_WAIT] = 0
                _ring(sock)

    def exit(self, code: int) -> None:
        self.send(EXIT, int(code).to_bytes(4, "little", signed=True))

    def _push(self, frame: bytes) -> None:
        """Write one frame (length prefix included) and publish it."""
        total = len(frame)
        if total - 4 > self._max_tx:
            raise IpcError(f"message of {total - 4} bytes: the ring takes "
                           f"at most {self._max_tx}")
        head, tx = self._head, self._tx
        # The supervisor's tail is read only when the last one seen does
        # not leave room (its cache line stays put on the fast path).
        if (tx.cap - ((head - self._last_tail) & _M32) < total
                and self._free() < total):
            self._wait_space(total)
        tx.copy_in(head, frame)
        head = (head + total) & _M32
        self._head = head
        tx.words[_HEAD] = head

    def _free(self) -> int:
        """Free bytes, reading the supervisor's tail once and checking it
        lies in [last tail seen, our head]."""
        tail = self._tx.words[_TAIL]
        used = (self._head - tail) & _M32
        if used > (self._head - self._last_tail) & _M32:
            raise self._fail(Corrupt(f"W2S tail {tail} outside "
                                     f"[{self._last_tail}, {self._head}]"),
                             STOP_CORRUPTION)
        self._last_tail = tail
        return self._tx.cap - used

    def _wait_space(self, need: int) -> None:
        """The ring is full: ask the supervisor to publish its tail, ring,
        and look again in growing slices; a hang-up ends the wait."""
        sock = self._live()
        tx = self._tx
        tx.words[_PRODUCER_WAIT] = 1
        _ring(sock)
        poller = select.poll()
        poller.register(sock.fileno(), getattr(select, "POLLRDHUP", 0x2000))
        ms = 1
        while self._free() < need:
            if poller.poll(ms):
                raise self._fail(IpcError("the supervisor hung up"),
                                 STOP_PROTOCOL)
            ms = min(ms * 2, 10)
            tx.words[_PRODUCER_WAIT] = 1
        tx.words[_PRODUCER_WAIT] = 0

    # -- requests ----------------------------------------------------------

    def request(self, kind: int, body: bytes) -> Reply:
        """Send a request and wait for its reply. The caller owns the fd."""
        with self._req_lock:
            rid = self._next_id
            self._next_id = (rid % _M32) + 1
            frame = _FRAME.pack(_MSG.size + len(body), kind, 0, 0, rid) + body
            with self._send_lock:
                sock = self._live()
                if self._owed:
                    # The last reply's doorbell: once it is read, the
                    # supervisor is done with the announcement.
                    self._owed = False
                    while self._take_control(sock, 0) is False:
                        pass
                # Ask for the reply's doorbell before the request is
                # visible (TSO: the supervisor sees both or the first).
                self._rx.words[_CONSUMER_WAIT] = WAIT_DOORBELL
                self._push(frame)
                # The supervisor's announcement is answered by this
                # doorbell: cleared, so that output does not ring again.
                self._tx.words[_CONSUMER_WAIT] = 0
                _ring(sock)
            return self._wait(sock, rid)

    def _wait(self, sock: _socket.socket, rid: int) -> Reply:
        """Wait for reply ``rid``. A doorbell follows every reply we asked
        one for, so the first wait blocks; after a doorbell that brought
        another reply (a request abandoned by an exception) re-arming may
        race the supervisor, so later waits are bounded slices."""
        slice_s: Optional[float] = None
        while True:
            if slice_s is None:
                # FDs (kept by id) until the DATA doorbell, or until a
                # second passed (SO_RCVTIMEO: someone in the sandbox may
                # have cleared the announcement in the shared mapping).
                while self._take_control(sock, 0) is False:
                    if rid in self._fds:
                        # The fd comes just before the reply: if the reply
                        # is there, take it without sleeping again for its
                        # doorbell, which the next request collects.
                        reply = self._pop_until(rid, sock)
                        if reply is not None:
                            self._owed = True
                            return reply
            else:
                select.select([sock], [], [], slice_s)
                self._drain_control(sock)
            reply = self._pop_until(rid, sock)
            if reply is not None:
                return reply
            self._rx.words[_CONSUMER_WAIT] = WAIT_DOORBELL
            slice_s = (_FIRST_SLICE if slice_s is None
                       else min(slice_s * 2, _LAST_SLICE))

    def _drain_control(self, sock: _socket.socket) -> None:
        """Read what is queued on the control socket without blocking."""
        while self._take_control(sock, _socket.MSG_DONTWAIT) is not None:
            pass

    def _take_control(self, sock: _socket.socket,
                      flags: int) -> Optional[bool]:
        """One control message: True for DATA, False for an FD, None if
        nothing came (non-blocking, or SO_RCVTIMEO). STOP and EOF
        raise."""
        try:
            data, anc, mflags, _ = sock.recvmsg(
                wire._MAX_CONTROL, _CMSG_FD, flags | wire._CMSG_CLOEXEC)
        except BlockingIOError:
            return None
        fds = wire._fds(anc)
        if len(data) < _CTL.size or mflags & _TRUNC:
            for fd in fds:
                os.close(fd)
            if not data:
                raise self._fail(IpcError("the supervisor closed the "
                                          "connection"), STOP_PROTOCOL)
            raise self._fail(IpcError("truncated control message"),
                             STOP_PROTOCOL)
        kind, _, _, arg = _CTL.unpack_from(data)
        if kind == FD and len(fds) == 1:
            old = self._fds.pop(arg, -1)
            if old >= 0:
                os.close(old)
            if len(self._fds) >= _MAX_FDS:
                os.close(fds[0])
                raise self._fail(IpcError("too many unclaimed fds"),
                                 STOP_PROTOCOL)
            self._fds[arg] = fds[0]
            return False
        for fd in fds:
            os.close(fd)
        if kind == wire.DATA and not fds:
            return True
        if kind == wire.STOP:
            why = data[_CTL.size:].decode("utf-8", "replace") or f"code {arg}"
            self._stopped = f"the supervisor stopped the connection: {why}"
            raise IpcError(self._stopped)
        raise self._fail(IpcError(f"unexpected control message 0x{kind:02x}"),
                         STOP_PROTOCOL)

    def _pop_until(self, rid: int, sock: _socket.socket) -> Optional[Reply]:
        """Take replies off the ring until ``rid``'s; others (to abandoned
        requests) are dropped with their fds. None if it is not there."""
        while True:
            payload = self._pop()
            if payload is None:
                return None
            kind, flags, reply_id, body = self._decode(payload)
            fd = -1
            if flags & FLAG_FD_FOLLOWS:
                fd = self._fds.pop(reply_id, -1)
                if fd < 0:  # sent before the reply: it is queued
                    self._drain_control(sock)
                    fd = self._fds.pop(reply_id, -1)
                if fd < 0:
                    raise self._fail(IpcError("an ALLOW said an fd follows, "
                                              "none came"), STOP_PROTOCOL)
            if reply_id == rid:
                return Reply(kind, body, fd)
            if fd >= 0:
                os.close(fd)

    def _pop(self) -> Optional[bytes]:
        """The next frame's payload, copied out, or None; checks as
        ``Consumer::try_pop``."""
        rx = self._rx
        head = rx.words[_HEAD]  # loaded once
        tail = self._tail
        avail = (head - tail) & _M32
        if avail == 0:
            return None
        if avail > rx.cap or avail < 4:
            raise self._fail(Corrupt(f"S2W head {head} is {avail} bytes past "
                                     f"tail {tail}"), STOP_CORRUPTION)
        n = int.from_bytes(rx.copy_out(tail, 4), "little")
        if not 0 < n <= self._max_rx or n > avail - 4:
            raise self._fail(Corrupt(f"S2W frame length {n} (published "
                                     f"{avail})"), STOP_CORRUPTION)
        payload = rx.copy_out(tail + 4, n)
        tail = (tail + 4 + n) & _M32
        self._tail = tail
        rx.words[_TAIL] = tail
        return payload

    def _decode(self, p: bytes) -> Tuple[int, int, int, bytes]:
        """(kind, flags, id, body) of a reply, decoded strictly."""
        if len(p) < _MSG.size:
            raise self._fail(IpcError("reply shorter than its header"),
                             STOP_PROTOCOL)
        kind, flags, reserved, rid = _MSG.unpack_from(p)
        body = p[_MSG.size:]
        bad = reserved != 0 or rid == 0
        if kind == ALLOW:
            bad = bad or flags & ~FLAG_FD_FOLLOWS != 0
        elif kind == DENY:
            bad = bad or flags != 0 or len(body) > MAX_REASON
            if not bad:
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError:
                    bad = True
        else:
            bad = True
        if bad:
            raise self._fail(IpcError(f"malformed reply (type 0x{kind:02x}, "
                                      f"flags 0x{flags:02x}, id {rid})"),
                             STOP_PROTOCOL)
        return kind, flags, rid, body

    # -- the end -----------------------------------------------------------

    def close(self) -> None:
        """Send STOP and close (idempotent). A thread still waiting for a
        reply is woken by the shutdown and fails."""
        with self._send_lock:
            sock, self._sock = self._sock, None
            if sock is None:
                return
            try:
                if not self._stopped:
                    if self._req_lock.acquire(False):
                        try:
                            # Unread messages would make the kernel report
                            # ECONNRESET to the supervisor before our STOP.
                            self._drain_control(sock)
                        except OSError:
                            pass
                        finally:
                            self._req_lock.release()
                    sock.send(wire._msg(wire.STOP))
            finally:
                try:
                    sock.shutdown(_socket.SHUT_RDWR)
                except OSError:
                    pass
                if self._req_lock.acquire(False):
                    try:
                        sock.close()
                        self._release()
                    finally:
                        self._req_lock.release()

    def _release(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._rx.release()
        self._tx.release()
        self._view.release()
        self._mm.close()

    def abandon(self) -> None:
        """Forget the connection without STOP (in a forked child)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()  # our copy only: the parent's socket stays up
        self._send_lock = _thread.allocate_lock()
        self._req_lock = _thread.allocate_lock()
