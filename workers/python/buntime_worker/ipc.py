"""ctypes binding of ``libbuntime_ipc.so`` (``crates/buntime-ipc/include/buntime_ipc.h``).

One :class:`Client` is one connection to the container's supervisor. The C
ABI forbids using a handle from two threads at once, so every call into the
library holds the client's lock. A request does not hold the lock for the
whole wait: the reply is awaited in short slices (``bi_set_timeout_ms``), and
the lock is released between slices, so a slow request (an ``ask`` waiting
for a human) does not stall other threads' requests or relayed output.
"""

import _thread
import ctypes
import os
import time

from .protocol import EXIT, IpcError, Reply

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at startup: checkers only
    from typing import Optional

    from .wire import Pending

LIB_ENV = "BUNTIME_IPC_LIB"
LIB_NAME = "libbuntime_ipc.so"

# Largest reply body kept: a LISTDIR answer is at most 200 KiB, a DENY
# reason at most 1 KiB (docs/supervisor.md).
_REPLY_CAP = 256 << 10
# How long one waiting thread keeps the handle before letting others in.
_SLICE_MS = 20
# The library's message for IpcError::Timeout.
_TIMED_OUT = "timed out"


def default_library() -> str:
    """``$BUNTIME_IPC_LIB``, else ``lib/`` next to the package's directory
    (``/opt/buntime/lib`` for ``/opt/buntime/python``), else the bare name
    for the loader's search path."""
    env = os.environ.get(LIB_ENV)
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    beside = os.path.join(root, "lib", LIB_NAME)
    if os.path.exists(beside):
        return beside
    return LIB_NAME


_lib: "Optional[ctypes.CDLL]" = None
_lib_lock = _thread.allocate_lock()


def load(path: "Optional[str]" = None) -> "ctypes.CDLL":
    """Load the library once and declare its signatures."""
    global _lib
    with _lib_lock:
        if _lib is not None and path is None:
            return _lib
        lib = ctypes.CDLL(path or default_library())
        vp = ctypes.c_void_p
        cp = ctypes.c_char_p
        sz = ctypes.c_size_t
        lib.bi_connect.restype = vp
        lib.bi_connect.argtypes = [cp]
        lib.bi_adopt.restype = vp
        lib.bi_adopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint16,
                                 ctypes.c_uint32]
        lib.bi_set_spin_us.restype = ctypes.c_int
        lib.bi_set_spin_us.argtypes = [vp, ctypes.c_uint32]
        lib.bi_set_timeout_ms.restype = ctypes.c_int
        lib.bi_set_timeout_ms.argtypes = [vp, ctypes.c_uint64]
        lib.bi_send.restype = ctypes.c_int
        lib.bi_send.argtypes = [vp, ctypes.c_uint8, cp, sz]
        lib.bi_send_request.restype = ctypes.c_int64
        lib.bi_send_request.argtypes = [vp, ctypes.c_uint8, cp, sz]
        lib.bi_recv.restype = ctypes.c_int64
        lib.bi_recv.argtypes = [vp, ctypes.c_uint32, vp, vp, sz, vp]
        lib.bi_close.restype = ctypes.c_int
        lib.bi_close.argtypes = [vp]
        lib.bi_last_error.restype = cp
        lib.bi_last_error.argtypes = []
        if path is None:
            _lib = lib
        return lib


class Client:
    """A connection to the supervisor; safe to share between threads."""

    def __init__(self, control_path: "Optional[str]" = None,
                 lib: "Optional[ctypes.CDLL]" = None,
                 adopt: "Optional[Pending]" = None) -> None:
        """Connect, or with ``adopt`` take over a connection whose
        handshake ``wire.handshake`` made (its descriptors move here)."""
        self._lib = lib or load()
        if adopt is not None:
            handle = self._lib.bi_adopt(*adopt.detach())
        else:
            arg = os.fsencode(control_path) if control_path else None
            handle = self._lib.bi_connect(arg)
        if not handle:
            raise IpcError(self._error())
        self._handle: "Optional[int]" = handle
        self._lock = _thread.allocate_lock()
        # Out-parameters, allocated once and used under the lock.
        self._kind = ctypes.c_uint8()
        self._fd = ctypes.c_int(-1)
        self._buf = ctypes.create_string_buffer(_REPLY_CAP)
        self._kind_p = ctypes.addressof(self._kind)
        self._fd_p = ctypes.addressof(self._fd)
        self._buf_p = ctypes.addressof(self._buf)

    def _error(self) -> str:
        msg = self._lib.bi_last_error()
        return msg.decode("utf-8", "replace") if msg else "unknown error"

    @property
    def closed(self) -> bool:
        return self._handle is None

    def _live(self) -> int:
        if self._handle is None:
            raise IpcError("connection to the supervisor is closed")
        return self._handle

    def send(self, kind: int, data: bytes) -> None:
        """STDOUT / STDERR (the library splits large data) or EXIT."""
        with self._lock:
            if self._lib.bi_send(self._live(), kind, data, len(data)) < 0:
                raise IpcError(self._error())

    def exit(self, code: int) -> None:
        self.send(EXIT, int(code).to_bytes(4, "little", signed=True))

    def request(self, kind: int, body: bytes) -> "Reply":
        """Send a request and wait for its reply. The caller owns the fd."""
        lib = self._lib
        with self._lock:
            rid = lib.bi_send_request(self._live(), kind, body, len(body))
            if rid < 0:
                raise IpcError(self._error())
        while True:
            with self._lock:
                handle = self._live()
                lib.bi_set_timeout_ms(handle, _SLICE_MS)
                self._fd.value = -1
                n = lib.bi_recv(handle, rid, self._kind_p, self._buf_p,
                                _REPLY_CAP, self._fd_p)
                err = self._error() if n < 0 else ""
                lib.bi_set_timeout_ms(handle, 0)
                if n >= 0:
                    data = ctypes.string_at(self._buf_p, min(n, _REPLY_CAP))
                    return Reply(self._kind.value, data, self._fd.value)
            if err != _TIMED_OUT:
                raise IpcError(err)
            # Still waiting: give other threads a chance at the handle.
            time.sleep(0.0005)

    def close(self) -> None:
        """Send STOP and free the handle (idempotent)."""
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is not None and self._lib.bi_close(handle) < 0:
                raise IpcError(self._error())

    def abandon(self) -> None:
        """Forget the handle without STOP: used in a forked child, whose
        copy of the connection belongs to the parent."""
        self._handle = None
        self._lock = _thread.allocate_lock()
