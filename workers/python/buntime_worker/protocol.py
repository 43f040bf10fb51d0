"""Message types and reply values of the buntime IPC protocol
(docs/ipc.md), without ctypes: importing this costs nothing. Copies of
crates/buntime-ipc/src/protocol.rs, checked by
crates/buntime-ipc/tests/worker_constants.rs."""

STDOUT = 0x00
FS_READ = 0x01
FS_WRITE = 0x02
NET_CONNECT = 0x03
EXEC = 0x04
LISTDIR = 0x05
STDERR = 0x06
EXIT = 0x07
ALLOW = 0x10
DENY = 0x11


class IpcError(OSError):
    """The library failed (connection lost, protocol error, ...)."""


class Reply:
    """A supervisor's answer: ALLOW or DENY, the body, a passed fd or -1
    (owned by the caller)."""

    __slots__ = ("kind", "data", "fd")

    def __init__(self, kind: int, data: bytes, fd: int) -> None:
        self.kind = kind
        self.data = data
        self.fd = fd

    def __repr__(self) -> str:
        return (f"Reply(kind=0x{self.kind:02x}, data={self.data!r}, "
                f"fd={self.fd})")

    @property
    def allowed(self) -> bool:
        return self.kind == ALLOW

    @property
    def reason(self) -> str:
        return self.data.decode("utf-8", "replace")
