"""Output relay (``BUNTIME_RELAY_OUTPUT=1``): ``sys.stdout`` and
``sys.stderr`` write through the supervisor (STDOUT / STDERR messages,
appended to the container's ``output.log``) instead of fds 1 and 2.

Only Python-level writes are relayed: child processes and C code still write
to the inherited fds. Once the connection is closed (at exit) or broken,
writes go to the original fd, so nothing is lost.
"""

import io
import os
import sys

from . import broker, protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class RelayRaw(io.RawIOBase):
    """A raw, write-only stream sending each write as one message."""

    def __init__(self, kind: int, fallback_fd: int, name: str) -> None:
        super().__init__()
        self._kind = kind
        self._fd = fallback_fd
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        # For code that hands sys.stdout to a child process or faulthandler:
        # the original fd (whose output is not relayed).
        return self._fd

    def isatty(self) -> bool:
        return False

    def write(self, b: "Any") -> int:
        data = bytes(b)
        if not data:
            return 0
        c = broker.client()
        if c is not None:
            try:
                c.send(self._kind, data)
                return len(data)
            except protocol.IpcError:
                pass
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        return len(data)


def _wrap(kind: int, old: "Any", fd: int, name: str,
          line: bool) -> "io.TextIOWrapper":
    raw = RelayRaw(kind, fd, name)
    size = (8 if line else 64) << 10
    buffered = io.BufferedWriter(raw, buffer_size=size)
    return io.TextIOWrapper(
        buffered,
        encoding=getattr(old, "encoding", None) or "utf-8",
        errors=getattr(old, "errors", None) or "strict",
        newline=None,
        line_buffering=line,
        write_through=line,
    )


def install() -> None:
    """Replace sys.stdout (buffered) and sys.stderr (line-buffered)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    sys.stdout = _wrap(protocol.STDOUT, sys.stdout, 1, "<stdout>", line=False)
    sys.stderr = _wrap(protocol.STDERR, sys.stderr, 2, "<stderr>", line=True)
