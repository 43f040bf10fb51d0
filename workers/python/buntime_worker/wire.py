"""The start and the end of a connection in pure Python (docs/ipc.md):
HELLO / WELCOME / READY, and EXIT then STOP, all on the control socket, so
that a script that never asks the broker never loads ctypes and
``libbuntime_ipc.so`` nor maps the segment (about 2.5 ms of start-up).

HELLO carries ``FLAG_DOORBELL_WAKE``: Python cannot wake a futex, so the
supervisor waits for this worker on the control socket (DATA doorbells).
The first request or relayed write hands the connection to a client that
maps the segment: the pure-Python one (``doorbell.Client``), or the
library's (``ipc.Client.adopt``); both ring the doorbell as the flag asks.
"""

import _socket
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

# Control messages: [u8 kind][u8 0][u16 0][u32 LE arg][body]. The numbers
# are crates/buntime-ipc/src/control.rs's, checked by
# crates/buntime-ipc/tests/worker_constants.rs.
HELLO = 0x01
WELCOME = 0x02
REJECT = 0x03
READY = 0x04
DATA = 0x05
STOP = 0x06
EXIT = 0x08
_CTL_HEADER = 8
# The segment descriptor must not leak into programs the script runs.
_CMSG_CLOEXEC = getattr(_socket, "MSG_CMSG_CLOEXEC", 0)
_MAX_CONTROL = 512
_MAGIC = int.from_bytes(b"BNTC", "little")
VERSION = 1
FLAG_DOORBELL_WAKE = 2


def _msg(kind: int, arg: int = 0, body: bytes = b"") -> bytes:
    return bytes((kind, 0, 0, 0)) + arg.to_bytes(4, "little") + body


def _fds(ancdata: "List[Tuple[int, int, bytes]]") -> "List[int]":
    out = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            out += [int.from_bytes(data[i:i + 4], "little", signed=True)
                    for i in range(0, usable, 4)]
    return out


class Pending:
    """A connection after the handshake, not yet given to the library."""

    def __init__(self, sock: "_socket.socket", segment_fd: int, version: int,
                 flags: int) -> None:
        self.sock: "Optional[_socket.socket]" = sock
        self.segment_fd = segment_fd
        self.version = version
        self.flags = flags

    def detach(self) -> "Tuple[int, int, int, int]":
        """(control fd, segment fd, version, WELCOME flags), given up to
        the caller (the library's ``bi_adopt``)."""
        sock, seg, version, flags = self.take()
        return sock.detach(), seg, version, flags

    def take(self) -> "Tuple[_socket.socket, int, int, int]":
        """(control socket, segment fd, version, WELCOME flags), given up
        to the caller (the pure-Python client, ``doorbell.Client``)."""
        if self.sock is None:
            raise OSError("connection to the supervisor is closed")
        sock, self.sock = self.sock, None
        seg, self.segment_fd = self.segment_fd, -1
        return sock, seg, self.version, self.flags

    def exit_and_stop(self, code: int) -> None:
        """EXIT (the control message: nothing was written to the ring, so
        there is nothing it must follow), then STOP; closes the
        connection."""
        sock = self.sock
        if sock is None:
            return
        try:
            status = int(code) & 0xFFFFFFFF
            sock.sendmsg([_msg(EXIT, status)])
            sock.sendmsg([_msg(STOP)])
        finally:
            self.close()

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


def handshake(path: str, timeout: float = 10.0) -> "Pending":
    """Connect to the control socket at ``path`` and shake hands."""
    sock = _socket.socket(_socket.AF_UNIX,
                          _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    fds: "List[int]" = []
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        hello = (_MAGIC.to_bytes(4, "little") + VERSION.to_bytes(2, "little")
                 + VERSION.to_bytes(2, "little")
                 + FLAG_DOORBELL_WAKE.to_bytes(4, "little"))
        sent: "Optional[OSError]" = None
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
