"""``python3 -m buntime_worker SCRIPT [ARGS...]``: connect to the
supervisor, install the fallbacks, run the script as ``__main__``, report
its exit status.

Also accepted, like ``python3`` itself: ``-m MODULE [ARGS...]``,
``-c CODE [ARGS...]``, a directory or zip file with ``__main__.py``, a
``.pyc`` file, and ``--`` before a script whose name starts with '-'.

A plain source file is compiled and run here, in a ``__main__`` module that
stays in ``sys.modules`` until exit (as with ``python3 script.py``); the
other forms go through ``runpy``. (``runpy.run_path`` imports ``pkgutil``
and, with it, ``typing`` and ``re``: some 10-20 ms of start-up for every
script.)
"""

import atexit
import builtins
import io
import os
import sys

from . import broker

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at startup: checkers only
    from typing import Any, List, NoReturn, Optional

USAGE = ("usage: python3 -m buntime_worker SCRIPT [ARGS...]\n"
         "       python3 -m buntime_worker -m MODULE [ARGS...]\n"
         "       python3 -m buntime_worker -c CODE [ARGS...]\n")

RELAY_ENV = "BUNTIME_RELAY_OUTPUT"
# A pooled sandbox (``buntime pool fill``): the socket to say "ready" on
# and wait for the claim's go on, before the script runs.
GO_ENV = "BUNTIME_GO_FD"
FALLBACKS_ENV = "BUNTIME_FALLBACKS"

_status = 0
_finished = False

# Frames of these modules are cut from the top of a script's traceback.
_OWN_MODULES = {__name__, "runpy"}


def exit_status(code: "Any") -> int:
    """The process exit status Python gives ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        if -(1 << 63) <= code < (1 << 63):
            return code & 0xFF
        return 0xFF
    return 1


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def _at_exit() -> None:
    """The first atexit handler registered, so the last to run: after the
    script's own handlers, and after non-daemon threads ended, so their
    output and requests get through before EXIT."""
    global _finished
    if _finished:
        return
    _finished = True
    _flush_stdio()
    broker.finish(_status)


def _print_exception(exc: BaseException) -> None:
    tb = exc.__traceback__
    while (tb is not None
           and tb.tb_frame.f_globals.get("__name__") in _OWN_MODULES):
        tb = tb.tb_next
    exc.with_traceback(tb)
    try:
        sys.excepthook(type(exc), exc, tb)
    except BaseException:  # a broken excepthook: fall back to the default
        sys.__excepthook__(type(exc), exc, tb)


def _set_path0(entry: str, replace: bool) -> None:
    if getattr(sys.flags, "safe_path", False):
        return  # python3 -P / PYTHONSAFEPATH: no script directory
    if replace and sys.path:
        sys.path[0] = entry
    else:
        sys.path.insert(0, entry)


def _new_main(**attrs: "Any") -> "Any":
    """A fresh ``__main__`` module, installed in sys.modules."""
    main = type(sys)("__main__")
    main.__dict__.update(__builtins__=builtins, __package__=None,
                         __spec__=None, __cached__=None, **attrs)
    sys.modules["__main__"] = main
    return main


def _run_source(path: str) -> None:
    # The loader class importlib.machinery re-exports, from the frozen
    # module the interpreter has already loaded (importlib.machinery would
    # import importlib and warnings: most of a millisecond).
    from _frozen_importlib_external import SourceFileLoader
    with io.open_code(path) as f:  # never the broker fallback of open()
        source = f.read()
    code = compile(source, path, "exec", dont_inherit=True)
    main = _new_main(__file__=path,
                     __loader__=SourceFileLoader("__main__", path))
    exec(code, main.__dict__)


def _is_source(path: str) -> bool:
    """A plain file to compile (not a directory, zip file or .pyc)."""
    if os.path.isdir(path) or path.endswith((".pyc", ".pyo")):
        return False
    try:
        with io.open_code(path) as f:
            return f.read(4) != b"PK\x03\x04"
    except OSError:
        return True  # let compile's open report it


def _run(argv: "List[str]", replace_path0: bool) -> "Any":
    """Run the target; returns what SystemExit would carry."""
    mode = "script"
    if argv[0] == "--":
        argv = argv[1:]
    elif argv[0] in ("-m", "-c"):
        mode = argv[0]
        argv = argv[1:]
    if not argv:
        sys.stderr.write(USAGE)
        return 2
    target, args = argv[0], argv[1:]
    if mode == "-m":
        import runpy
        sys.argv = [target, *args]  # run_module puts the file in argv[0]
        _set_path0(os.getcwd(), replace_path0)
        runpy.run_module(target, run_name="__main__", alter_sys=True)
        return None
    if mode == "-c":
        sys.argv = ["-c", *args]
        _set_path0("", replace_path0)
        main = _new_main()
        exec(compile(target, "<string>", "exec", dont_inherit=True),
             main.__dict__)
        return None
    try:
        os.stat(target)
    except OSError as e:
        sys.stderr.write(f"{sys.executable}: can't open file {target!r}: "
                         f"[Errno {e.errno}] {e.strerror}\n")
        return 2
    sys.argv = [target, *args]
    if _is_source(target):
        _set_path0(os.path.dirname(os.path.realpath(target)), replace_path0)
        _run_source(os.path.abspath(target))
    else:
        import runpy
        # A directory or zip file is its own path entry (run_path also
        # adds it while it runs).
        _set_path0(target, replace_path0)
        runpy.run_path(target, run_name="__main__")
    return None


def _wait_for_go() -> None:
    """A pooled sandbox: say ``R`` (imports and handshake done), then
    wait for the claim's ``G``. EOF (the pooled run is gone): exit
    without running the script."""
    fd_text = os.environ.pop(GO_ENV, None)
    if fd_text is None:
        return
    go = b""
    try:
        fd = int(fd_text)
        os.write(fd, b"R")
        go = os.read(fd, 1)
        os.close(fd)
    except (OSError, ValueError):
        pass
    if go != b"G":
        os._exit(1)


def _on_sigterm(signum: int, frame: "Any") -> None:
    raise SystemExit(128 + signum)


def main(argv: "Optional[List[str]]" = None,
         replace_path0: bool = True) -> "NoReturn":
    """Run the worker. ``replace_path0``: sys.path[0] is python's own entry
    for ``-m`` (the current directory), to be replaced by the script's."""
    global _status
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stderr.write(USAGE)
        raise SystemExit(0 if argv else 2)
    client = broker.connect(warn=True)
    if client is not None:
        if os.environ.get(RELAY_ENV) == "1":
            from . import relay
            relay.install()
        if os.environ.get(FALLBACKS_ENV, "1") != "0":
            from . import hooks
            hooks.install()
    atexit.register(_at_exit)
    if os.getpid() == 1:
        # The init of a pid namespace gets no signal it has no handler for:
        # without this, `kill TERM` would do nothing. Exit cleanly instead
        # (status 143, EXIT sent); a script may install its own handler.
        # _signal, not signal: the latter imports enum (milliseconds).
        import _signal
        _signal.signal(_signal.SIGTERM, _on_sigterm)
    _wait_for_go()
    try:
        code = _run(argv, replace_path0)
    except SystemExit as e:
        code = e.code
    except KeyboardInterrupt as e:
        _print_exception(e)
        code = 130
    except BaseException as e:
        _print_exception(e)
        code = 1
    _status = exit_status(code)
    # Python itself prints a non-integer code to stderr and exits with 1.
    raise SystemExit(code)
