"""Ask the buntime supervisor for what the sandbox does not grant.

Inside a buntime container, a script run by the worker
(``python3 -m buntime_worker script.py``) can::

    import buntime
    data = buntime.read_file("/data/input.csv")
    buntime.write_file("/out/result.txt", "done\\n")
    names = buntime.list_dir("/data")
    sock = buntime.connect("example.org", 443)
    proc = buntime.run(["git", "--version"], capture_output=True)

Each call asks the container's supervisor, which decides by the policy (and
may ask a human). A refusal raises ``PermissionError`` (``EACCES``) whose
``strerror`` is the supervisor's reason and whose ``filename`` is the path,
``host:port`` or program. Without a supervisor every call is refused the
same way; :func:`available` says whether there is one.

Relative paths are made absolute against the current directory. Plain
``open()``, ``os.listdir()``, ``socket.create_connection()`` and
``subprocess`` fall back to these requests by themselves when the sandbox
refuses them (see ``buntime_worker.hooks``).
"""

import os

from buntime_worker import broker

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, socket and subprocess cost milliseconds to
    import socket  # import: checkers only (the functions import lazily)
    import subprocess
    from typing import Any, List, Sequence, Union

    PathArg = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]

__all__ = ["available", "read_file", "write_file", "list_dir", "connect",
           "run"]


def available() -> bool:
    """True when a supervisor is connected (the broker can be asked)."""
    return broker.available()


def read_file(path: "PathArg") -> bytes:
    """The whole content of ``path``, opened by the supervisor."""
    fd, data = broker.fs_read_fd(path)
    if fd < 0:
        return data
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def write_file(path: "PathArg",
               data: "Union[bytes, bytearray, memoryview, str]") -> None:
    """Create or replace ``path`` with ``data`` (str is written as UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    broker.fs_write_data(path, bytes(data))


def list_dir(path: "PathArg") -> "List[str]":
    """The names in directory ``path``, sorted, without '.' and '..'
    (bytes names if ``path`` is bytes)."""
    names = broker.list_dir(path)
    if isinstance(os.fspath(path), bytes):
        return names  # type: ignore[return-value]
    return [os.fsdecode(n) for n in names]


def connect(host: str, port: int) -> "socket.socket":
    """A TCP socket connected by the supervisor to ``host:port`` (the name
    is resolved on the host)."""
    import socket
    fd, _ = broker.net_connect(host, int(port))
    return socket.socket(fileno=fd)


def run(argv: "Union[str, Sequence[Union[str, bytes, os.PathLike[str]]]]",
        **kwargs: "Any") -> "subprocess.CompletedProcess[Any]":
    """``subprocess.run(argv, **kwargs)`` after the supervisor approved the
    program; it runs the program path the supervisor resolved (argv[0] is
    kept as given). The sandbox's own rules still apply to the process."""
    if kwargs.get("shell"):
        raise ValueError("buntime.run does not take shell=True; "
                         "pass ['/bin/sh', '-c', command]")
    if kwargs.get("executable") is not None:
        raise ValueError("buntime.run does not take executable=; "
                         "put the program in argv[0]")
    args: "List[Any]"
    if isinstance(argv, (str, bytes, os.PathLike)):
        args = [argv]
    else:
        args = list(argv)
    resolved = broker.exec_resolve([os.fspath(a) for a in args])
    import subprocess
    from buntime_worker import hooks
    hooks.tls.no_retry = True
    try:
        return subprocess.run(args, executable=resolved, **kwargs)
    except PermissionError as e:
        hooks.amend(e, hooks.refused_anyway(resolved))
        raise
    finally:
        hooks.tls.no_retry = False
