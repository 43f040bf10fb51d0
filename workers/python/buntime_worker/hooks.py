"""Transparent fallbacks: when the sandbox refuses a call with
``PermissionError``, ask the broker, and finish the call with what it grants.

Wrapped: ``builtins.open`` / ``io.open`` (and so ``pathlib``),
``os.open``, ``os.listdir``, ``os.scandir``, ``socket.create_connection`` and
``subprocess.Popen`` (and so ``subprocess.run`` & co.). The success path is
the original call plus one Python frame; only the ``except`` branch does
work. A denial re-raises the original error with the supervisor's reason
appended to its message.

``socket`` and ``subprocess`` are patched when the script first imports
them (a one-shot import hook), so a script that uses neither does not pay
for importing them.
"""

import _thread
import builtins
import errno
import io
import os
import sys

from . import broker

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at startup: checkers only
    from typing import Any, Callable, Dict, List, Optional, Tuple

_REFUSED = (errno.EACCES, errno.EPERM)
# `buntime run` binds only the policy's host paths: a path it left out is
# missing (ENOENT) in the sandbox rather than refused, and the broker
# answers for the host's path.
if os.environ.get("BUNTIME_PATHS") == "host":
    _REFUSED = _REFUSED + (errno.ENOENT,)
_CAUGHT = (PermissionError, FileNotFoundError)

# Set while buntime.run() starts its (already approved) process, so the
# Popen fallback does not ask a second time.
tls = _thread._local()

_real_open = io.open
_real_listdir = os.listdir
_real_scandir = os.scandir


def amend(e: "OSError", reason: str) -> None:
    """Append the broker's reason to the error's message, in place."""
    text = e.strerror or os.strerror(e.errno or 0)
    e.strerror = f"{text} (buntime: {reason})"


def _reason(d: BaseException) -> str:
    if isinstance(d, OSError) and d.strerror:
        return d.strerror
    return str(d)


def _is_path(x: object) -> bool:
    return isinstance(x, (str, bytes, os.PathLike))


# --------------------------------------------------------------------- open

def open(file: "Any", mode: str = "r", buffering: int = -1,
         encoding: "Optional[str]" = None, errors: "Optional[str]" = None,
         newline: "Optional[str]" = None, closefd: bool = True,
         opener: "Optional[Callable[[str, int], int]]" = None) -> "Any":
    try:
        return _real_open(file, mode, buffering, encoding, errors, newline,
                          closefd, opener)
    except _CAUGHT as e:
        f = _open_fallback(e, file, mode, buffering, encoding, errors,
                           newline, opener)
        if f is None:
            raise
        return f


open.__doc__ = _real_open.__doc__


def _open_fallback(e: "OSError", file: "Any", mode: str, buffering: int,
                   encoding: "Optional[str]", errors: "Optional[str]",
                   newline: "Optional[str]", opener: "Any") -> "Any":
    if e.errno not in _REFUSED or not _is_path(file):
        return None
    if not isinstance(mode, str):
        return None
    if opener is not None and not os.path.isabs(os.fspath(file)):
        return None  # relative to an opener's dir_fd we cannot know
    what = set(mode) & set("rwax")
    if "+" in mode or len(what) != 1:
        return None
    how = what.pop()
    if how == "x" and e.errno == errno.ENOENT:
        # A host path the sandbox does not see (`buntime run`): whether it
        # exists cannot be checked here, and the broker's write would not
        # refuse an existing file. Not served.
        return None
    if how == "x" and os.path.lexists(file):
        # Not atomic: the supervisor's O_CREAT has no O_EXCL.
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST),
                              file) from None
    try:
        if how == "r":
            fd, _ = broker.fs_read_fd(file)
            if fd < 0:
                amend(e, "the supervisor granted the read without an fd")
                return None
        else:
            fd = broker.fs_write_fd(file)
    except PermissionError as d:
        amend(e, _reason(d))
        return None
    except (OSError, ValueError) as d:
        amend(e, f"broker fallback failed: {d}")
        return None
    try:
        if how == "w":
            os.ftruncate(fd, 0)
        elif how == "a":
            import fcntl
            fcntl.fcntl(fd, fcntl.F_SETFL,
                        fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    except BaseException:
        os.close(fd)
        raise
    # From here the file object owns fd (io.open closes it on failure).
    f = _real_open(fd, mode, buffering, encoding, errors, newline, True)
    raw: "Any" = getattr(f, "buffer", f)
    raw = getattr(raw, "raw", raw)
    try:
        raw.name = file
    except (AttributeError, TypeError):
        pass
    return f


# ------------------------------------------------------------------ os.open

_real_os_open = os.open


def os_open(path: "Any", flags: int, mode: int = 0o777, *,
            dir_fd: "Optional[int]" = None) -> int:
    try:
        return _real_os_open(path, flags, mode, dir_fd=dir_fd)
    except _CAUGHT as e:
        fd = _os_open_fallback(e, path, flags, dir_fd)
        if fd is None:
            raise
        return fd


os_open.__doc__ = _real_os_open.__doc__

# Flags a broker fd cannot honour: the fallback steps aside for them.
_UNSERVED = (getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_PATH", 0)
             | getattr(os, "O_TMPFILE", 0) | os.O_EXCL)


def _os_open_fallback(e: "OSError", path: "Any", flags: int,
                      dir_fd: "Optional[int]") -> "Optional[int]":
    """os.open's fallback, on the same terms as open()'s: a read-only or a
    write-only open of a path (O_RDWR, O_EXCL, O_DIRECTORY and a relative
    path under dir_fd are not served)."""
    if e.errno not in _REFUSED or not _is_path(path) or flags & _UNSERVED:
        return None
    if dir_fd is not None and not os.path.isabs(os.fspath(path)):
        return None
    access = flags & os.O_ACCMODE
    try:
        if access == os.O_RDONLY:
            fd, _ = broker.fs_read_fd(path)
            if fd < 0:
                amend(e, "the supervisor granted the read without an fd")
                return None
        elif access == os.O_WRONLY:
            fd = broker.fs_write_fd(path)
        else:
            return None
    except PermissionError as d:
        amend(e, _reason(d))
        return None
    except (OSError, ValueError) as d:
        amend(e, f"broker fallback failed: {d}")
        return None
    try:
        if access == os.O_WRONLY and flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
        if access == os.O_WRONLY and flags & os.O_APPEND:
            import fcntl
            fcntl.fcntl(fd, fcntl.F_SETFL,
                        fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    except BaseException:
        os.close(fd)
        raise
    return fd  # non-inheritable, as os.open's are (PEP 446)


# ------------------------------------------------------------ listdir/scandir

def listdir(path: "Any" = None) -> "List[Any]":
    try:
        return _real_listdir(path)
    except _CAUGHT as e:
        names = _list_fallback(e, path)
        if names is None:
            raise
        return names


listdir.__doc__ = _real_listdir.__doc__


def _list_fallback(e: "OSError", path: "Any") -> "Optional[List[Any]]":
    if e.errno not in _REFUSED or not (path is None or _is_path(path)):
        return None
    p = "." if path is None else os.fspath(path)
    try:
        names = broker.list_dir(p)
    except PermissionError as d:
        amend(e, _reason(d))
        return None
    except (OSError, ValueError) as d:
        amend(e, f"broker fallback failed: {d}")
        return None
    if isinstance(p, bytes):
        return names
    return [os.fsdecode(n) for n in names]


class _Entry:
    """A stand-in for os.DirEntry, built from a broker listing, which marks
    real directories (as d_type does); symlinks and the rest are stat'ed
    when asked about."""

    __slots__ = ("name", "path", "_dir")

    def __init__(self, top: "Any", name: "Any", is_dir: bool) -> None:
        self.name = name
        self.path = os.path.join(top, name)
        self._dir = is_dir

    def __fspath__(self) -> "Any":
        return self.path

    def __repr__(self) -> str:
        return f"<DirEntry {self.name!r}>"

    def _mode(self, follow_symlinks: bool) -> int:
        try:
            return os.stat(self.path, follow_symlinks=follow_symlinks).st_mode
        except OSError:
            return 0

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        if self._dir:
            return True
        if follow_symlinks and self.is_symlink():
            return (self._mode(True) & 0o170000) == 0o040000
        return False

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        if self._dir:
            return False
        return (self._mode(follow_symlinks) & 0o170000) == 0o100000

    def is_symlink(self) -> bool:
        return not self._dir and os.path.islink(self.path)

    def is_junction(self) -> bool:
        return False

    def stat(self, *, follow_symlinks: bool = True) -> "os.stat_result":
        return os.stat(self.path, follow_symlinks=follow_symlinks)

    def inode(self) -> int:
        return os.lstat(self.path).st_ino


class _ScandirIterator:
    def __init__(self, entries: "List[_Entry]") -> None:
        self._it = iter(entries)

    def __iter__(self) -> "_ScandirIterator":
        return self

    def __next__(self) -> "_Entry":
        return next(self._it)

    def __enter__(self) -> "_ScandirIterator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._it = iter(())


def scandir(path: "Any" = None) -> "Any":
    try:
        return _real_scandir(path)
    except _CAUGHT as e:
        it = _scandir_fallback(e, path)
        if it is None:
            raise
        return it


scandir.__doc__ = _real_scandir.__doc__


def _scandir_fallback(e: "OSError",
                      path: "Any") -> "Optional[_ScandirIterator]":
    if e.errno not in _REFUSED or not (path is None or _is_path(path)):
        return None
    top = "." if path is None else os.fspath(path)
    try:
        raw = broker.list_dir_raw(top)
    except PermissionError as d:
        amend(e, _reason(d))
        return None
    except (OSError, ValueError) as d:
        amend(e, f"broker fallback failed: {d}")
        return None
    entries = []
    for name, is_dir in raw:
        n = name if isinstance(top, bytes) else os.fsdecode(name)
        entries.append(_Entry(top, n, is_dir))
    return _ScandirIterator(entries)


# ------------------------------------------------------------------- socket

def _patch_socket(mod: "Any") -> None:
    real = mod.create_connection
    if getattr(real, "_buntime", False):
        return
    default_timeout = getattr(mod, "_GLOBAL_DEFAULT_TIMEOUT", object())

    def create_connection(address: "Tuple[Any, Any]", *args: "Any",
                          **kwargs: "Any") -> "Any":
        try:
            return real(address, *args, **kwargs)
        except (PermissionError, mod.gaierror) as e:
            s = _connect_fallback(e, address, args, kwargs)
            if s is None:
                raise
            return s

    def _connect_fallback(e: "OSError", address: "Any", args: "Tuple[Any, ...]",
                          kwargs: "Dict[str, Any]") -> "Any":
        # In the sandbox a refused socket() shows up as EPERM/EACCES, and a
        # name lookup fails (no DNS): the supervisor resolves on the host.
        if isinstance(e, PermissionError) and e.errno not in _REFUSED:
            return None
        timeout = args[0] if args else kwargs.get("timeout", default_timeout)
        source = args[1] if len(args) > 1 else kwargs.get("source_address")
        if source is not None:
            return None
        try:
            host, port = address[0], int(address[1])
            fd, _ = broker.net_connect(str(host), port)
        except PermissionError as d:
            amend(e, _reason(d))
            return None
        except (OSError, ValueError, TypeError, IndexError) as d:
            amend(e, f"broker fallback failed: {d}")
            return None
        s = mod.socket(fileno=fd)
        if timeout is not default_timeout:
            s.settimeout(timeout)
        return s

    create_connection.__doc__ = real.__doc__
    create_connection._buntime = True  # type: ignore[attr-defined]
    mod.create_connection = create_connection


# --------------------------------------------------------------- subprocess

def _patch_subprocess(mod: "Any") -> None:
    real = mod.Popen
    if getattr(real, "_buntime", False):
        return

    class Popen(real):  # type: ignore[misc, valid-type]
        _buntime = True

        def __init__(self, args: "Any", *pargs: "Any", **kwargs: "Any") -> None:
            try:
                super().__init__(args, *pargs, **kwargs)
                return
            except PermissionError as e:
                retry = _exec_fallback(real, e, args, pargs, kwargs)
                if retry is None:
                    raise
            try:
                super().__init__(*retry[0], **retry[1])
            except PermissionError as e:
                amend(e, refused_anyway(retry[1]["executable"]))
                raise

    Popen.__qualname__ = "Popen"
    Popen.__module__ = mod.__name__
    Popen.__doc__ = real.__doc__
    mod.Popen = Popen


def refused_anyway(program: str) -> str:
    return (f"the broker allowed {program}, but the sandbox refuses to run "
            "it (filesystem.exec, noexec mount)")


def _exec_fallback(real: "Any", e: "PermissionError", args: "Any",
                   pargs: "Tuple[Any, ...]", kwargs: "Dict[str, Any]"
                   ) -> "Optional[Tuple[Tuple[Any, ...], Dict[str, Any]]]":
    if e.errno not in _REFUSED or getattr(tls, "no_retry", False):
        return None
    import inspect
    try:
        bound = inspect.signature(real.__init__).bind(None, args, *pargs,
                                                      **kwargs)
    except TypeError:
        return None
    a = bound.arguments
    cwd = a.get("cwd")
    if cwd is not None and e.filename == os.fspath(cwd):
        return None  # the child could not chdir: not about the program
    executable = a.get("executable")
    if a.get("shell"):
        prog = executable or "/bin/sh"
        rest = [args] if _is_path(args) else list(args)
        argv = [prog, "-c", *rest]
    else:
        argv = [args] if _is_path(args) else list(args)
        if not argv:
            return None
        if executable is not None:
            argv[0] = executable
    try:
        resolved = broker.exec_resolve([os.fspath(x) for x in argv])
    except PermissionError as d:
        amend(e, _reason(d))
        return None
    except (OSError, ValueError, TypeError) as d:
        amend(e, f"broker fallback failed: {d}")
        return None
    a["executable"] = resolved
    # Everything by keyword but `args`, so the caller finds `executable`.
    kw = {k: v for k, v in bound.arguments.items()
          if k not in ("self", "args", "kwargs")}
    kw.update(bound.arguments.get("kwargs", {}))
    return (bound.arguments["args"],), kw


# ------------------------------------------------------------- installation

class _PatchOnImport:
    """A meta-path finder that patches a module right after its first
    import, then steps aside."""

    def __init__(self, patches: "Dict[str, Callable[[Any], None]]") -> None:
        self.patches = patches

    def find_spec(self, name: str, path: "Any" = None,
                  target: "Any" = None) -> "Any":
        patch = self.patches.get(name)
        if patch is None:
            return None
        spec: "Any" = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        del self.patches[name]
        if not self.patches and self in sys.meta_path:
            sys.meta_path.remove(self)
        spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


class _PatchingLoader:
    def __init__(self, loader: "Any", patch: "Callable[[Any], None]") -> None:
        self._loader = loader
        self._patch = patch

    def create_module(self, spec: "Any") -> "Any":
        return self._loader.create_module(spec)

    def exec_module(self, module: "Any") -> None:
        self._loader.exec_module(module)
        self._patch(module)

    def __getattr__(self, name: str) -> "Any":
        return getattr(self._loader, name)


_installed = False


def install() -> None:
    """Install every fallback (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    builtins.open = open
    io.open = open
    os.open = os_open
    os.listdir = listdir
    os.scandir = scandir
    pending: "Dict[str, Callable[[Any], None]]" = {}
    for name, patch in (("socket", _patch_socket),
                        ("subprocess", _patch_subprocess)):
        if name in sys.modules:
            patch(sys.modules[name])
        else:
            pending[name] = patch
    if pending:
        sys.meta_path.insert(0, _PatchOnImport(pending))
