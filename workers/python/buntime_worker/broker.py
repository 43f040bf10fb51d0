"""The connection to the supervisor and the broker requests.

Every request either returns what the supervisor granted or raises
:class:`PermissionError` (``EACCES``) carrying the supervisor's reason; with
no supervisor, or when it is gone, requests are refused too (fail closed).

The connection is process-wide. The worker opens it at start
(:func:`connect`); a program that imports ``buntime`` without the worker
connects on first use. A forked child never touches its parent's
connection: it opens its own on first use.
"""

import _thread
import atexit
import errno
import os
import sys

from . import protocol, wire  # the ctypes binding (ipc) only when needed

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at startup: checkers only
    from typing import List, Optional, Tuple, Union

    from . import doorbell  # noqa: F401 (annotations)
    from .ipc import Client  # noqa: F401 (annotations)

    PathArg = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]

CONTROL_ENV = "BUNTIME_CONTROL"
# "python": requests and relayed output through the pure-Python client
# (doorbell.py) even when libbuntime_ipc.so loads; "ctypes": never it.
CLIENT_ENV = "BUNTIME_PY_CLIENT"

_lock = _thread.allocate_lock()
_client: "Optional[LazyClient]" = None
_attempted = False
_why_not = "no supervisor: BUNTIME_CONTROL is not set"
_owner_pid = os.getpid()
_atexit_registered = False

# FS_WRITE data above this goes through a writable fd instead of the ring
# (the worker-to-supervisor ring holds 1 MiB).
INLINE_WRITE_MAX = 256 << 10

# The protocol's limits (docs/ipc.md): a request over them is refused by
# the supervisor, which then stops the connection; checked here first, so
# the caller gets an error naming the limit and the connection stays up.
# (crates/buntime-ipc/src/protocol.rs's, checked by worker_constants.rs.)
MAX_PATH = 4096
MAX_HOST = 255
MAX_ARGS = 4096


def connect(warn: bool = True) -> "Optional[LazyClient]":
    """Connect now (once). Prints one warning to stderr when
    ``$BUNTIME_CONTROL`` is set but the connection fails."""
    global _client, _attempted, _why_not
    with _lock:
        if _attempted:
            return _client
        _attempted = True
        if not os.environ.get(CONTROL_ENV):
            return None
        try:
            _client = LazyClient(wire.handshake(os.environ[CONTROL_ENV]))
        except (OSError, AttributeError) as e:
            _why_not = f"no supervisor: cannot connect to it ({e})"
            if warn:
                sys.stderr.write(f"buntime: warning: {_why_not}; "
                                 "running without the broker\n")
                sys.stderr.flush()
            return None
        _register_close()
        return _client


class LazyClient:
    """The connection: the pure-Python handshake (``wire``) until the first
    request or relayed write, which hands it to a client that maps the
    segment (:func:`open_client`: the library's ``ipc.Client`` through
    ctypes, or the pure-Python ``doorbell.Client``). A script that never asks
    the broker maps nothing; its EXIT is sent by ``wire`` too.

    Adoption, EXIT and close all run under one lock, so a thread adopting
    the connection is never seen as a closed connection by another."""

    def __init__(self, pending: "wire.Pending") -> None:
        self._pending: "Optional[wire.Pending]" = pending
        self._real: "Optional[Union[Client, doorbell.Client]]" = None
        self._no_library = ""
        # Set while the library takes the connection over: its descriptors
        # have left `_pending` but `_real` is not there yet.
        self._adopting = False
        self._lock = _thread.allocate_lock()

    def _client(self) -> "Union[Client, doorbell.Client]":
        real = self._real
        if real is not None:
            return real
        with self._lock:
            return self._adopt()

    def _adopt(self) -> "Union[Client, doorbell.Client]":
        """The mapping client, made now if need be; holds the lock."""
        global _why_not
        if self._real is not None:
            return self._real
        pending = self._pending
        if self._no_library:
            raise protocol.IpcError(self._no_library)
        if pending is None or pending.sock is None:
            raise protocol.IpcError("connection to the supervisor is closed")
        self._adopting = True
        try:
            self._real = open_client(pending)
        except (ImportError, AttributeError, OSError) as e:
            why = f"no IPC library: {e}" if not isinstance(
                e, OSError) else str(e)
            _why_not = f"no supervisor: {why}"
            if pending.sock is not None:
                # The library did not load: the connection is still ours,
                # kept so that EXIT is still reported at the end.
                self._no_library = why
            else:
                self._pending = None
            raise protocol.IpcError(why) from None
        finally:
            self._adopting = False
        self._pending = None
        return self._real

    @property
    def closed(self) -> bool:
        # Without the lock: the stderr relay asks this, and adoption (under
        # the lock) may itself write to stderr. Adoption sets `_adopting`,
        # moves the descriptors out of `_pending`, sets `_real`, then clears
        # `_adopting`: read in the opposite order, it is never seen closed.
        real = self._real
        if real is not None:
            return real.closed
        p = self._pending
        if p is not None and p.sock is not None:
            return False
        if self._adopting:
            return False
        real = self._real
        return real.closed if real is not None else True

    def send(self, kind: int, data: bytes) -> None:
        self._client().send(kind, data)

    def request(self, kind: int, body: bytes) -> "protocol.Reply":
        return self._client().request(kind, body)

    def exit(self, code: int) -> None:
        """EXIT, then STOP: the connection is closed afterwards."""
        with self._lock:
            real, pending = self._real, self._pending
            self._pending = None
            if real is not None:
                try:
                    real.exit(code)
                finally:
                    real.close()
            elif pending is not None:
                pending.exit_and_stop(code)

    def close(self) -> None:
        with self._lock:
            real, pending = self._real, self._pending
            self._pending = None
            if real is not None:
                real.close()
            elif pending is not None:
                pending.stop()

    def abandon(self) -> None:
        """In a forked child: forget the parent's connection."""
        if self._real is not None:
            self._real.abandon()
        elif self._pending is not None:
            self._pending.forget()
        self._real = self._pending = None
        self._adopting = False
        self._lock = _thread.allocate_lock()


def open_client(pending: "wire.Pending") -> "Union[Client, doorbell.Client]":
    """The client that takes over the connection ``pending``: the
    library's (ctypes), faster a round trip and far faster for a flood of
    output frames (docs/performance.md); the pure-Python one if the
    library cannot be loaded, or with ``$BUNTIME_PY_CLIENT=python``."""
    choice = os.environ.get(CLIENT_ENV, "")
    if choice != "python":
        try:
            from .ipc import Client
            return Client(adopt=pending)
        except (ImportError, AttributeError, OSError):
            # Not adopted (the library did not load): still ours.
            if choice == "ctypes" or pending.sock is None:
                raise
    from . import doorbell
    if not doorbell.supported():
        raise protocol.IpcError("the pure-Python client needs x86 "
                                "(ordered stores)")
    return doorbell.Client(pending)


def _register_close() -> None:
    global _atexit_registered
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_close_if_child_or_lazy)


def _close_if_child_or_lazy() -> None:
    """At exit: close a connection nobody else will close (a lazily opened
    one, or a forked child's). The worker closes its own after EXIT."""
    if _client is not None and not _client.closed:
        try:
            _client.close()
        except OSError:
            pass


def client() -> "Optional[LazyClient]":
    """The live connection, connecting on first use; None if there is
    none."""
    c = _client
    if c is not None and not c.closed:
        return c
    if not _attempted:
        return connect(warn=False)
    return None


def available() -> bool:
    return client() is not None


def is_owner() -> bool:
    """True in the process that started the worker (not a forked child)."""
    return os.getpid() == _owner_pid


def finish(status: int) -> None:
    """Send EXIT (only from the worker's own process) and close."""
    global _why_not
    c = _client
    if c is None or c.closed:
        return
    _why_not = "no supervisor: the connection to it is closed (exiting)"
    try:
        if is_owner():
            c.exit(status)
    except OSError:
        pass
    try:
        c.close()
    except OSError:
        pass


def _after_fork_in_child() -> None:
    global _client, _attempted, _lock
    _lock = _thread.allocate_lock()
    if _client is not None:
        _client.abandon()
    _client = None
    _attempted = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _denied(reason: str, subject: object) -> "PermissionError":
    return PermissionError(errno.EACCES, reason, subject)


def request(kind: int, body: bytes, subject: object) -> "protocol.Reply":
    """Ask the supervisor; ALLOW is returned, DENY (or no supervisor, or a
    broken connection) raises PermissionError(EACCES, reason, subject)."""
    c = client()
    if c is None:
        raise _denied(_why_not, subject)
    try:
        r = c.request(kind, body)
    except protocol.IpcError as e:
        raise _denied(f"supervisor unavailable: {e}", subject) from None
    if r.kind != protocol.ALLOW:
        if r.fd >= 0:
            os.close(r.fd)
        raise _denied(r.reason or "denied by the supervisor", subject)
    return r


def abspath(path: "PathArg") -> bytes:
    """The absolute, lexically normalised path as bytes (relative paths
    against the current directory, as the kernel would)."""
    p = os.fsencode(path)
    if b"\0" in p:
        raise ValueError("embedded null byte")
    # Already absolute and normal (no "//", "/./", "/../", trailing "/"):
    # as it is, without abspath's split and join.
    if not (p[:1] == b"/" and b"//" not in p and b"/." not in p
            and p[-1:] != b"/"):
        p = os.path.abspath(p)
    if len(p) > MAX_PATH:
        raise OSError(errno.ENAMETOOLONG,
                      f"path of {len(p)} bytes: the broker takes at most "
                      f"{MAX_PATH} (MAX_PATH, docs/ipc.md)",
                      os.fsdecode(p[:64]) + "...")
    return p


def fs_read_fd(path: "PathArg") -> "Tuple[int, bytes]":
    """FS_READ: (a read-only fd or -1, inline data)."""
    p = abspath(path)
    r = request(protocol.FS_READ, p, os.fsdecode(p))
    return r.fd, r.data


def fs_write_fd(path: "PathArg") -> int:
    """FS_WRITE without data: a write-only fd (created, not truncated)."""
    p = abspath(path)
    r = request(protocol.FS_WRITE, len(p).to_bytes(4, "little") + p,
                os.fsdecode(p))
    if r.fd < 0:
        raise _denied("the supervisor granted the write without an fd",
                      os.fsdecode(p))
    return r.fd


def fs_write_data(path: "PathArg", data: bytes) -> None:
    """FS_WRITE with data: the supervisor creates/truncates and writes."""
    p = abspath(path)
    if not data or len(data) > INLINE_WRITE_MAX:
        fd = fs_write_fd(p)
        try:
            os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        return
    r = request(protocol.FS_WRITE, len(p).to_bytes(4, "little") + p + data,
                os.fsdecode(p))
    if r.fd >= 0:
        os.close(r.fd)


def list_dir_raw(path: "PathArg") -> "List[Tuple[bytes, bool]]":
    """LISTDIR: (name, is a directory) for each entry, in the supervisor's
    (sorted) order."""
    p = abspath(path)
    r = request(protocol.LISTDIR, p, os.fsdecode(p))
    if r.fd >= 0:
        os.close(r.fd)
    entries = []
    for name in r.data.split(b"\0"):
        is_dir = name.endswith(b"/")
        if is_dir:
            name = name[:-1]
        if name:
            entries.append((name, is_dir))
    return entries


def list_dir(path: "PathArg") -> "List[bytes]":
    """LISTDIR: the entry names (bytes, without the directories' '/')."""
    return [name for name, _ in list_dir_raw(path)]


def net_connect(host: str, port: int) -> "Tuple[int, str]":
    """NET_CONNECT: (a connected socket fd, the address connected to)."""
    subject = f"{host}:{port}"
    if not 0 < port < 65536:
        raise ValueError(f"bad port {port}")
    try:
        name = host.encode("ascii")
    except UnicodeEncodeError:
        try:
            name = host.encode("idna")
        except UnicodeError as e:
            raise ValueError(f"bad host name {host!r}: {e}") from None
    if not 0 < len(name) <= MAX_HOST or not all(0x21 <= c <= 0x7E
                                                 for c in name):
        raise ValueError(f"bad host name {host[:64]!r}: the broker takes 1 to "
                         f"{MAX_HOST} printable ASCII characters (MAX_HOST, "
                         "docs/ipc.md)")
    r = request(protocol.NET_CONNECT, port.to_bytes(2, "little") + name,
                subject)
    if r.fd < 0:
        raise _denied("the supervisor granted the connection without a socket",
                      subject)
    return r.fd, r.data.decode("utf-8", "replace")


def exec_resolve(argv: "List[Union[str, bytes]]") -> str:
    """EXEC: the program path the supervisor resolved for ``argv``."""
    args = [os.fsencode(a) for a in argv]
    if not args or not args[0]:
        raise ValueError("argv[0] must not be empty")
    if any(b"\0" in a for a in args):
        raise ValueError("embedded null byte")
    if len(args) > MAX_ARGS:
        raise OSError(errno.E2BIG, f"{len(args)} arguments: the broker takes "
                      f"at most {MAX_ARGS} (MAX_ARGS, docs/ipc.md)")
    subject = os.fsdecode(args[0])
    r = request(protocol.EXEC, b"".join(a + b"\0" for a in args), subject)
    if r.fd >= 0:
        os.close(r.fd)
    if not r.data:
        raise _denied("the supervisor allowed the program without a path",
                      subject)
    return os.fsdecode(r.data)
