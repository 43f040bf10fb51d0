"""ctypes binding of libbuntime_ipc.so (see crates/buntime-ipc/include/buntime_ipc.h).

The library path comes from $BUNTIME_IPC_LIB (default: libbuntime_ipc.so on
the loader's search path). One Client per thread.
"""

import ctypes
import os
import sys
from typing import Optional, Tuple

# The message types: one list, the Python worker's.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "workers", "python"))
from buntime_worker.protocol import (  # noqa: E402,F401
    ALLOW, DENY, EXEC, EXIT, FS_READ, FS_WRITE, LISTDIR, NET_CONNECT, STDERR,
    STDOUT)


class IpcError(Exception):
    pass


def load(path: Optional[str] = None) -> ctypes.CDLL:
    lib = ctypes.CDLL(path or os.environ.get("BUNTIME_IPC_LIB", "libbuntime_ipc.so"))
    vp, u8p, ip = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p
    lib.bi_connect.restype = vp
    lib.bi_connect.argtypes = [ctypes.c_char_p]
    lib.bi_set_spin_us.argtypes = [vp, ctypes.c_uint32]
    lib.bi_set_timeout_ms.argtypes = [vp, ctypes.c_uint64]
    lib.bi_send.argtypes = [vp, ctypes.c_uint8, u8p, ctypes.c_size_t]
    lib.bi_send_request.restype = ctypes.c_int64
    lib.bi_send_request.argtypes = [vp, ctypes.c_uint8, u8p, ctypes.c_size_t]
    lib.bi_recv.restype = ctypes.c_int64
    lib.bi_recv.argtypes = [vp, ctypes.c_uint32, ip, ip, ctypes.c_size_t, ip]
    lib.bi_request.restype = ctypes.c_int64
    lib.bi_request.argtypes = [vp, ctypes.c_uint8, u8p, ctypes.c_size_t, ip, ip, ctypes.c_size_t, ip]
    lib.bi_close.argtypes = [vp]
    lib.bi_last_error.restype = ctypes.c_char_p
    return lib


class Client:
    """Worker-side connection to the supervisor."""

    def __init__(self, control_path: Optional[str] = None, lib: Optional[ctypes.CDLL] = None):
        self.lib = lib or load()
        arg = control_path.encode() if control_path else None
        self.handle = self.lib.bi_connect(arg)
        if not self.handle:
            raise IpcError(self._err())
        # Out-parameters, allocated once: the per-call cost is what matters.
        self._kind = ctypes.c_uint8()
        self._fd = ctypes.c_int(-1)
        self._buf = ctypes.create_string_buffer(64 * 1024)
        self._kind_p = ctypes.addressof(self._kind)
        self._fd_p = ctypes.addressof(self._fd)
        self._buf_p = ctypes.addressof(self._buf)

    def _err(self) -> str:
        return (self.lib.bi_last_error() or b"").decode(errors="replace")

    def send(self, kind: int, data: bytes) -> None:
        if self.lib.bi_send(self.handle, kind, data, len(data)) < 0:
            raise IpcError(self._err())

    def request(self, kind: int, body: bytes) -> Tuple[int, bytes, int]:
        """Returns (ALLOW or DENY, body, fd or -1)."""
        n = self.lib.bi_request(self.handle, kind, body, len(body), self._kind_p,
                                self._buf_p, len(self._buf), self._fd_p)
        if n < 0:
            raise IpcError(self._err())
        return self._kind.value, self._buf.raw[:min(n, len(self._buf))], self._fd.value

    def close(self) -> None:
        if self.handle:
            self.lib.bi_close(self.handle)
            self.handle = None
