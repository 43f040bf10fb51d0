"""The start and the end of a connection in pure Python (docs/ipc.md):
HELLO / WELCOME / READY on the control socket, and EXIT written into the
worker-to-supervisor ring, so that a script that never asks the broker
never loads ctypes and ``libbuntime_ipc.so`` (about 2 ms of start-up).

HELLO carries ``FLAG_DOORBELL_WAKE``: Python cannot wake a futex, so the
supervisor waits for this worker on the control socket (DATA doorbells).
The first request or relayed write hands the connection to the library
(``ipc.Client.adopt``), which rings the doorbell as the flag asks.
"""

from __future__ import annotations

import _socket
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

# Control messages: [u8 kind][u8 0][u16 0][u32 LE arg][body].
HELLO = 0x01
WELCOME = 0x02
REJECT = 0x03
READY = 0x04
DATA = 0x05
STOP = 0x06
_CTL_HEADER = 8
# The segment descriptor must not leak into programs the script runs.
_CMSG_CLOEXEC = getattr(_socket, "MSG_CMSG_CLOEXEC", 0)
_MAX_CONTROL = 512
_MAGIC = int.from_bytes(b"BNTC", "little")
VERSION = 1
FLAG_DOORBELL_WAKE = 2

# Whether plain stores become visible to other CPUs in program order (x86
# TSO): only then may EXIT be written into the ring from Python, which has
# no release store.
ORDERED_STORES = os.uname().machine in ("x86_64", "amd64", "i386", "i686")

# Segment header and ring header words (u32 LE).
_SEGMENT_MAGIC = int.from_bytes(b"BNTI", "little")
_OFF_W2S_OFFSET = 0x18
_OFF_W2S_CAPACITY = 0x1C
_RING_DATA = 64
_EXIT = 0x07


def _msg(kind: int, arg: int = 0, body: bytes = b"") -> bytes:
    return bytes((kind, 0, 0, 0)) + arg.to_bytes(4, "little") + body


def _fds(ancdata: List[Tuple[int, int, bytes]]) -> List[int]:
    out = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            out += [int.from_bytes(data[i:i + 4], "little", signed=True)
                    for i in range(0, usable, 4)]
    return out


class Pending:
    """A connection after the handshake, not yet given to the library."""

    def __init__(self, sock: _socket.socket, segment_fd: int, version: int,
                 flags: int) -> None:
        self.sock: Optional[_socket.socket] = sock
        self.segment_fd = segment_fd
        self.version = version
        self.flags = flags

    def detach(self) -> Tuple[int, int, int, int]:
        """(control fd, segment fd, version, WELCOME flags), given up to
        the caller (the library's ``bi_adopt``)."""
        if self.sock is None:
            raise OSError("connection to the supervisor is closed")
        sock, self.sock = self.sock, None
        seg, self.segment_fd = self.segment_fd, -1
        return sock.detach(), seg, self.version, self.flags

    def exit_and_stop(self, code: int) -> None:
        """EXIT on the ring (nothing was written there before), a DATA
        doorbell, then STOP; closes the connection."""
        sock = self.sock
        if sock is None:
            return
        try:
            self._write_exit(code)
            sock.sendmsg([_msg(DATA)])
            sock.sendmsg([_msg(STOP)])
        finally:
            self.close()

    def _write_exit(self, code: int) -> None:
        import mmap
        size = os.fstat(self.segment_fd).st_size
        m = mmap.mmap(self.segment_fd, size, mmap.MAP_SHARED,
                      mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            words = memoryview(m).cast("I")
            try:
                off, cap = (words[_OFF_W2S_OFFSET // 4],
                            words[_OFF_W2S_CAPACITY // 4])
                if (words[0] != _SEGMENT_MAGIC or off % 4096
                        or cap < 4096 or cap & (cap - 1)
                        or off + _RING_DATA + cap > size):
                    raise OSError("bad IPC segment header")
                payload = (bytes((_EXIT, 0, 0, 0)) + bytes(4)
                           + int(code).to_bytes(4, "little", signed=True))
                frame = len(payload).to_bytes(4, "little") + payload
                head = words[off // 4]
                start = off + _RING_DATA + head % cap
                if (head != 0 or words[off // 4 + 1] != 0
                        or start + len(frame) > size):
                    raise OSError("the ring was written before")
                m[start:start + len(frame)] = frame
                # Publish head with one aligned 4-byte store (a struct or
                # slice write could show the supervisor a torn value).
                words[off // 4] = (head + len(frame)) & 0xFFFFFFFF
            finally:
                words.release()
        finally:
            m.close()

    def stop(self) -> None:
        """STOP (without EXIT) and close."""
        try:
            if self.sock is not None:
                self.sock.sendmsg([_msg(STOP)])
        finally:
            self.close()

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
        seg, self.segment_fd = self.segment_fd, -1
        if seg >= 0:
            os.close(seg)

    def forget(self) -> None:
        """In a forked child: drop the copies without telling anyone."""
        self.close()


def handshake(path: str, timeout: float = 10.0) -> Pending:
    """Connect to the control socket at ``path`` and shake hands."""
    sock = _socket.socket(_socket.AF_UNIX,
                          _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    fds: List[int] = []
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        hello = (_MAGIC.to_bytes(4, "little") + VERSION.to_bytes(2, "little")
                 + VERSION.to_bytes(2, "little")
                 + FLAG_DOORBELL_WAKE.to_bytes(4, "little"))
        sent: Optional[OSError] = None
        try:
            sock.sendmsg([_msg(HELLO, 0, hello)])
        except OSError as e:  # a REJECT may still be queued: read it
            sent = e
        try:
            data, anc, flags, _ = sock.recvmsg(
                _MAX_CONTROL, _socket.CMSG_SPACE(4), _CMSG_CLOEXEC)
        except OSError:
            if sent is not None:
                raise sent from None
            raise
        fds = _fds(anc)
        if len(data) < _CTL_HEADER:
            raise OSError("the supervisor closed the connection")
        kind, arg = data[0], int.from_bytes(data[4:8], "little")
        if kind == REJECT:
            reason = data[_CTL_HEADER:].decode("utf-8", "replace")
            raise OSError(f"the supervisor refused the connection: {reason}")
        if (kind != WELCOME or arg != VERSION or len(fds) != 1
                or flags & (_socket.MSG_CTRUNC | _socket.MSG_TRUNC)):
            raise OSError(f"unexpected reply 0x{kind:02x} to HELLO")
        body = data[_CTL_HEADER:]
        wflags = int.from_bytes(body[:4], "little") if len(body) >= 4 else 0
        sock.sendmsg([_msg(READY)])
        sock.settimeout(None)
        segment = fds.pop()
        if not _CMSG_CLOEXEC:
            os.set_inheritable(segment, False)
        return Pending(sock, segment, arg, wflags)
    except BaseException:
        for fd in fds:
            os.close(fd)
        sock.close()
        raise
