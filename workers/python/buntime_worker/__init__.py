"""buntime's Python worker: runs an untrusted script inside a buntime
sandbox, connected to the container's supervisor (the broker).

Start it as ``python3 -m buntime_worker SCRIPT [ARGS...]``. Scripts use the
broker through the ``buntime`` module, or transparently: when the sandbox
refuses ``open``, ``os.listdir``/``os.scandir``,
``socket.create_connection`` or ``subprocess.Popen`` with PermissionError,
the worker asks the supervisor and completes the call if it agrees.

Modules: ``ipc`` (ctypes binding of libbuntime_ipc.so), ``broker``
(connection and requests), ``hooks`` (the transparent fallbacks), ``relay``
(stdout/stderr through the supervisor), ``runner`` (the entry point).

Start-up is paid by every ``buntime run``: no module here imports
``typing`` (names for checkers come under ``TYPE_CHECKING``) nor
``__future__`` (about 0.3 ms); annotations that name anything but a
builtin are strings.
"""

__version__ = "0.1.0"
