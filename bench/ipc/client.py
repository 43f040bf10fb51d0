"""Benchmark client (Python, ctypes over libbuntime_ipc.so), driven by
benches/ipc.rs: connect to $BUNTIME_CONTROL, do $N round trips of a
64-byte FS_READ request ($MODE=hot: back to back; cold: 200 us apart),
print "p50_ns p99_ns n"."""

import ctypes
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import buntime_ipc  # noqa: E402


def main() -> None:
    n = int(os.environ.get("N", "1000"))
    cold = os.environ.get("MODE") == "cold"
    c = buntime_ipc.Client()
    lib, h = c.lib, c.handle
    body = b"/data/" + b"x" * 50
    assert len(body) + 8 == 64
    # A second handle on the library gives a bi_request without argtypes,
    # called with ready-made ctypes objects: ctypes then converts nothing,
    # which saves about half a microsecond per call.
    raw = ctypes.CDLL(lib._name).bi_request
    raw.restype = ctypes.c_int64
    req = raw
    args = (ctypes.c_void_p(h), ctypes.c_uint8(buntime_ipc.FS_READ), body,
            ctypes.c_size_t(len(body)), ctypes.c_void_p(c._kind_p), ctypes.c_void_p(c._buf_p),
            ctypes.c_size_t(256), ctypes.c_void_p(c._fd_p))
    clock = time.perf_counter_ns
    for _ in range(min(n, 2000)):
        req(*args)
    lat = []
    for _ in range(n):
        if cold:
            time.sleep(0.0002)
        t = clock()
        r = req(*args)
        lat.append(clock() - t)
        if r < 0:
            raise buntime_ipc.IpcError(c._err())
    lat.sort()
    print(lat[len(lat) // 2], lat[min(len(lat) - 1, len(lat) * 99 // 100)], len(lat), flush=True)
    c.send(buntime_ipc.EXIT, (0).to_bytes(4, "little"))
    c.close()


if __name__ == "__main__":
    main()
