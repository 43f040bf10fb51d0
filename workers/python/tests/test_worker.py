"""Unit tests of the Python worker without a sandbox or supervisor.

A fake client stands in for libbuntime_ipc (it decodes the request bodies
and grants or denies like a supervisor), and the "sandbox" is simulated by
making the real open/listdir/scandir raise PermissionError below a refused
directory. Run from the repository root with any Python >= 3.9:

    python3 workers/python/tests/test_worker.py
"""

import errno
import io
import os
import pathlib
import posix
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import buntime  # noqa: E402
from buntime_worker import broker, hooks, protocol, runner  # noqa: E402


class FakeClient:
    """Answers requests as a supervisor would: paths containing 'deny'
    are refused, the rest granted."""

    closed = False

    def __init__(self):
        self.requests = []

    def request(self, kind, body):
        self.requests.append((kind, body))
        if kind == protocol.FS_READ:
            return self._fs(body, os.O_RDONLY)
        if kind == protocol.FS_WRITE:
            n = int.from_bytes(body[:4], "little")
            path, data = body[4:4 + n], body[4 + n:]
            if data:
                if b"deny" in path:
                    return protocol.Reply(protocol.DENY, b"no writing", -1)
                fd = posix.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.write(fd, data)
                os.close(fd)
                return protocol.Reply(protocol.ALLOW, b"", -1)
            return self._fs(path, os.O_WRONLY | os.O_CREAT)
        if kind == protocol.LISTDIR:
            if b"deny" in body:
                return protocol.Reply(protocol.DENY, b"no listing", -1)
            names = sorted(posix.listdir(body))  # not the fallback
            out = b"".join(n + (b"/" if os.path.isdir(os.path.join(body, n))
                                else b"") + b"\0" for n in names)
            return protocol.Reply(protocol.ALLOW, out, -1)
        if kind == protocol.EXEC:
            argv = body.split(b"\0")[:-1]
            if b"deny" in argv[0]:
                return protocol.Reply(protocol.DENY, b"no running", -1)
            return protocol.Reply(protocol.ALLOW, b"/bin/echo", -1)
        if kind == protocol.NET_CONNECT:
            return protocol.Reply(protocol.DENY, b"no network", -1)
        raise AssertionError(kind)

    def _fs(self, path, flags):
        if b"deny" in path:
            return protocol.Reply(protocol.DENY, b"denied by the policy", -1)
        # posix.open: the real call, not the os.open fallback under test.
        return protocol.Reply(protocol.ALLOW, b"",
                              posix.open(path, flags | os.O_CLOEXEC, 0o644))

    def close(self):
        self.closed = True


class Sandboxed(unittest.TestCase):
    """Fallbacks against the fake client, below a 'refused' directory."""

    @classmethod
    def setUpClass(cls):
        hooks.install()

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.root = os.path.join(self.tmp.name, "refused")
        os.mkdir(self.root)
        os.mkdir(os.path.join(self.root, "sub"))
        with hooks._real_open(os.path.join(self.root, "a.txt"), "w") as f:
            f.write("alpha\n")
        self.client = FakeClient()
        self._saved = (broker._client, broker._attempted, hooks._real_open,
                       hooks._real_listdir, hooks._real_scandir,
                       hooks._real_os_open)
        broker._client, broker._attempted = self.client, True
        root = self.root

        def refuse(real):
            def call(path=None, *args, **kwargs):
                if isinstance(path, (str, bytes, os.PathLike)):
                    p = os.path.abspath(os.fsdecode(os.fspath(path)))
                    if p.startswith(root):
                        raise PermissionError(errno.EACCES,
                                              "Permission denied", path)
                return real(path, *args, **kwargs)
            return call

        hooks._real_open = refuse(self._saved[2])
        hooks._real_listdir = refuse(self._saved[3])
        hooks._real_scandir = refuse(self._saved[4])
        hooks._real_os_open = refuse(self._saved[5])

    def tearDown(self):
        (broker._client, broker._attempted, hooks._real_open,
         hooks._real_listdir, hooks._real_scandir,
         hooks._real_os_open) = self._saved

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def test_open_read_text_binary_pathlib(self):
        with open(self.path("a.txt")) as f:
            self.assertEqual(f.read(), "alpha\n")
            self.assertEqual(f.name, self.path("a.txt"))
        with open(self.path("a.txt"), "rb", buffering=0) as f:
            self.assertEqual(f.read(), b"alpha\n")
        self.assertEqual(pathlib.Path(self.path("a.txt")).read_text(),
                         "alpha\n")
        self.assertEqual(self.client.requests[0],
                         (protocol.FS_READ, os.fsencode(self.path("a.txt"))))

    def test_relative_path_is_made_absolute(self):
        old = os.getcwd()
        os.chdir(self.root)
        try:
            with open("a.txt") as f:
                self.assertEqual(f.read(), "alpha\n")
        finally:
            os.chdir(old)
        self.assertEqual(self.client.requests[-1][1],
                         os.fsencode(self.path("a.txt")))

    def test_write_append_exclusive(self):
        p = self.path("w.txt")
        with open(p, "w") as f:
            f.write("a long first line\n")
        with open(p, "w") as f:
            f.write("one\n")
        with open(p, "a") as f:
            f.write("two\n")
        with self.assertRaises(FileExistsError):
            open(p, "x")
        with open(p) as f:
            self.assertEqual(f.read(), "one\ntwo\n")
        with open(p, "ab") as f:
            f.seek(0)
            f.write(b"three\n")  # O_APPEND: still at the end
        with open(p, "rb") as f:
            self.assertEqual(f.read(), b"one\ntwo\nthree\n")

    def test_os_open_read_write_truncate_append(self):
        fd = os.open(self.path("a.txt"), os.O_RDONLY)
        try:
            self.assertEqual(os.read(fd, 100), b"alpha\n")
            self.assertFalse(os.get_inheritable(fd))  # as os.open's fds
        finally:
            os.close(fd)
        p = self.path("o.txt")
        for flags, data in ((os.O_CREAT, b"a long first line\n"),
                            (os.O_TRUNC, b"one\n"),
                            (os.O_APPEND, b"two\n")):
            fd = os.open(p, os.O_WRONLY | flags)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        fd = posix.open(p, os.O_RDONLY)
        try:
            self.assertEqual(os.read(fd, 100), b"one\ntwo\n")
        finally:
            os.close(fd)
        # Not served: read-write, exclusive creation, directories.
        n = len(self.client.requests)
        for flags in (os.O_RDWR, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                      os.O_RDONLY | os.O_DIRECTORY):
            with self.assertRaises(PermissionError):
                os.open(p, flags)
        self.assertEqual(len(self.client.requests), n)
        with self.assertRaises(PermissionError) as cm:
            os.open(self.path("deny.txt"), os.O_RDONLY)
        self.assertIn("(buntime: denied by the policy)", str(cm.exception))

    def test_denied_keeps_the_original_error_with_the_reason(self):
        with self.assertRaises(PermissionError) as cm:
            open(self.path("deny.txt"))
        e = cm.exception
        self.assertEqual(e.errno, errno.EACCES)
        self.assertEqual(e.filename, self.path("deny.txt"))
        self.assertIn("(buntime: denied by the policy)", str(e))

    def test_unsupported_modes_and_fds_are_untouched(self):
        n = len(self.client.requests)
        with self.assertRaises(PermissionError):
            open(self.path("a.txt"), "r+")
        r, w = os.pipe()
        os.close(w)
        with open(r, "rb") as f:
            self.assertEqual(f.read(), b"")
        self.assertEqual(len(self.client.requests), n)

    def test_listdir_and_scandir(self):
        self.assertEqual(os.listdir(self.root), ["a.txt", "sub"])
        self.assertEqual(os.listdir(os.fsencode(self.root)),
                         [b"a.txt", b"sub"])
        with os.scandir(self.root) as it:
            got = {e.name: (e.is_dir(), e.is_file()) for e in it}
        self.assertEqual(got, {"a.txt": (False, True), "sub": (True, False)})
        with self.assertRaises(PermissionError) as cm:
            os.listdir(self.path("deny"))
        self.assertIn("(buntime: no listing)", str(cm.exception))

    def test_buntime_module(self):
        self.assertTrue(buntime.available())
        self.assertEqual(buntime.read_file(self.path("a.txt")), b"alpha\n")
        buntime.write_file(self.path("b.txt"), "beta")
        self.assertEqual(buntime.read_file(self.path("b.txt")), b"beta")
        big = b"x" * (broker.INLINE_WRITE_MAX + 1)
        buntime.write_file(self.path("big"), big)
        self.assertEqual(os.path.getsize(self.path("big")),
                         broker.INLINE_WRITE_MAX + 1)
        self.assertEqual(buntime.list_dir(self.root),
                         ["a.txt", "b.txt", "big", "sub"])
        with self.assertRaises(PermissionError) as cm:
            buntime.read_file(self.path("deny"))
        self.assertEqual(cm.exception.strerror, "denied by the policy")
        with self.assertRaises(PermissionError) as cm:
            buntime.connect("example.org", 443)
        self.assertEqual(cm.exception.filename, "example.org:443")
        self.assertEqual(self.client.requests[-1],
                         (protocol.NET_CONNECT,
                          (443).to_bytes(2, "little") + b"example.org"))

    def test_over_the_protocol_limits_nothing_is_sent(self):
        long_path = "/" + "a" * (broker.MAX_PATH + 1904)
        for call in (buntime.read_file, buntime.list_dir,
                     lambda p: buntime.write_file(p, b"x")):
            with self.assertRaises(OSError) as cm:
                call(long_path)
            self.assertEqual(cm.exception.errno, errno.ENAMETOOLONG)
            self.assertIn("4096", cm.exception.strerror)
        with self.assertRaises(ValueError) as cm:
            buntime.connect("h" * 256, 443)
        self.assertIn("255", str(cm.exception))
        with self.assertRaises(ValueError):
            buntime.connect("bad host", 443)
        with self.assertRaises(OSError) as cm:
            broker.exec_resolve(["x"] * (broker.MAX_ARGS + 1))
        self.assertEqual(cm.exception.errno, errno.E2BIG)
        self.assertEqual(self.client.requests, [])

    def test_run_and_popen_fallback(self):
        r = buntime.run(["anything", "hi"], capture_output=True, text=True)
        self.assertEqual(r.stdout, "hi\n")  # /bin/echo, argv[0] kept
        self.assertEqual(self.client.requests[-1],
                         (protocol.EXEC, b"anything\0hi\0"))
        prog = os.path.join(self.tmp.name, "prog")  # not executable: EACCES
        with io.open(prog, "w") as f:
            f.write("#!/bin/sh\n")
        r = subprocess.run([prog, "again"], capture_output=True, text=True)
        self.assertEqual(r.stdout, "again\n")
        deny = os.path.join(self.tmp.name, "deny-prog")
        with io.open(deny, "w") as f:
            f.write("#!/bin/sh\n")
        with self.assertRaises(PermissionError) as cm:
            subprocess.run([deny])
        self.assertIn("(buntime: no running)", str(cm.exception))


class Wire(unittest.TestCase):
    """The pure-Python handshake and EXIT against a fake supervisor."""

    W2S = 0x3000  # ring offsets of a segment with two 4 KiB rings
    SIZE = 0x5000

    def serve(self, reply):
        import socket
        import threading
        d = tempfile.TemporaryDirectory()
        self.addCleanup(d.cleanup)
        path = os.path.join(d.name, "ctl.sock")
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(lst.close)
        lst.bind(path)
        lst.listen(1)
        got = []

        def run():
            c, _ = lst.accept()
            with c:
                got.append(c.recv(512))
                reply(c)
                while True:
                    m = c.recv(512)
                    if not m:
                        break
                    got.append(m)

        t = threading.Thread(target=run)
        t.start()
        self.addCleanup(t.join, 5)
        return path, got, t

    def segment(self):
        fd = os.memfd_create("seg")
        self.addCleanup(os.close, fd)
        os.ftruncate(fd, self.SIZE)
        os.pwrite(fd, b"BNTI", 0)
        os.pwrite(fd, self.W2S.to_bytes(4, "little")
                  + (4096).to_bytes(4, "little"), 0x18)
        return fd

    def test_handshake_then_exit_on_the_control_socket(self):
        from buntime_worker import wire
        seg = self.segment()
        path, got, t = self.serve(self.welcome_with(seg))
        p = wire.handshake(path)
        self.assertEqual((p.version, p.flags), (1, 0))
        p.exit_and_stop(-3)
        t.join(5)
        hello = got[0]
        self.assertEqual(hello[:8], bytes((1, 0, 0, 0, 0, 0, 0, 0)))
        self.assertEqual(hello[8:12], b"BNTC")
        self.assertEqual(int.from_bytes(hello[16:20], "little"),
                         wire.FLAG_DOORBELL_WAKE)
        self.assertEqual([m[0] for m in got[1:]],
                         [wire.READY, wire.EXIT, wire.STOP])
        self.assertEqual(int.from_bytes(got[2][4:8], "little", signed=True),
                         -3)
        # Nothing was written into the segment.
        self.assertEqual(os.pread(seg, 16, self.W2S), bytes(16))
        self.assertIsNone(p.sock)

    def welcome_with(self, seg):
        import socket

        def welcome(c):
            c.sendmsg([bytes((2, 0, 0, 0)) + (1).to_bytes(4, "little")
                       + (0).to_bytes(4, "little")],
                      [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                        seg.to_bytes(4, "little"))])
        return welcome

    def test_the_segment_fd_is_not_inherited(self):
        from buntime_worker import wire
        path, _, t = self.serve(self.welcome_with(self.segment()))
        p = wire.handshake(path)
        self.assertFalse(os.get_inheritable(p.segment_fd))
        p.stop()
        t.join(5)

    def test_exit_is_reported_when_the_library_does_not_load(self):
        from buntime_worker import broker, ipc, protocol, wire
        path, got, t = self.serve(self.welcome_with(self.segment()))
        saved = ipc._lib
        ipc._lib = None
        os.environ[ipc.LIB_ENV] = "/nonexistent/libbuntime_ipc.so"
        try:
            c = broker.LazyClient(wire.handshake(path))
            with self.assertRaises(protocol.IpcError):
                c.request(protocol.FS_READ, b"/x")
            self.assertFalse(c.closed)
            c.exit(4)
        finally:
            del os.environ[ipc.LIB_ENV]
            ipc._lib = saved
        t.join(5)
        self.assertTrue(c.closed)
        self.assertEqual([(m[0], m[4]) for m in got[1:]],
                         [(wire.READY, 0), (wire.EXIT, 4), (wire.STOP, 0)])

    def test_closed_is_answered_during_adoption(self):
        # The stderr relay asks `closed` while the same thread may hold the
        # lock to adopt the connection (and write a warning): no deadlock.
        from buntime_worker import broker, wire
        path, _, t = self.serve(self.welcome_with(self.segment()))
        c = broker.LazyClient(wire.handshake(path))
        with c._lock:
            self.assertFalse(c.closed)
        c.exit(0)
        t.join(5)
        self.assertTrue(c.closed)

    def test_closed_reads_open_while_the_library_adopts(self):
        # Between the descriptors leaving the pending connection and the
        # library's client being there, another thread (the stderr relay)
        # must not see a closed connection.
        from buntime_worker import broker, ipc, wire
        path, _, t = self.serve(self.welcome_with(self.segment()))
        c = broker.LazyClient(wire.handshake(path))
        seen = []

        class Adopting:
            closed = False

            def __init__(self, adopt):
                fds = adopt.detach()
                seen.append(c.closed)
                os.close(fds[0])
                os.close(fds[1])

            def exit(self, code):
                pass

            def close(self):
                pass

        saved = ipc.Client
        ipc.Client = Adopting
        try:
            self.assertIsInstance(c._client(), Adopting)
        finally:
            ipc.Client = saved
        self.assertEqual(seen, [False])
        self.assertFalse(c.closed)
        t.join(5)

    def test_a_forked_child_forgets_an_adoption_in_progress(self):
        # fork() while another thread adopts: the child's copy must read as
        # closed once it has abandoned the parent's connection.
        from buntime_worker import broker, wire
        path, _, t = self.serve(self.welcome_with(self.segment()))
        c = broker.LazyClient(wire.handshake(path))
        c._adopting = True
        c.abandon()
        self.assertTrue(c.closed)

    def test_a_refusal_names_its_reason(self):
        from buntime_worker import wire

        def reject(c):
            c.send(bytes((3, 0, 0, 0)) + bytes(4) + b"not a process of "
                   b"this container")

        path, _, _ = self.serve(reject)
        with self.assertRaises(OSError) as cm:
            wire.handshake(path)
        self.assertIn("not a process of this container", str(cm.exception))


class NoSupervisor(unittest.TestCase):
    def test_refused_with_a_reason(self):
        saved = broker._client, broker._attempted
        broker._client, broker._attempted = None, True
        try:
            self.assertFalse(buntime.available())
            with self.assertRaises(PermissionError) as cm:
                buntime.read_file("/etc/hostname")
            self.assertIn("no supervisor", cm.exception.strerror)
        finally:
            broker._client, broker._attempted = saved


class Pooled(unittest.TestCase):
    """A pooled sandbox's worker (``BUNTIME_GO_FD``): ready, then the
    script only after the claim's go byte."""

    SCRIPT = "import os\nprint('ran', os.environ.get('BUNTIME_GO_FD'))\n"

    def start(self) -> "tuple[socket.socket, subprocess.Popen[bytes]]":
        import socket
        ours, theirs = socket.socketpair()
        # A worker that never says R must not hang the test.
        ours.settimeout(30)
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, True)
        script = os.path.join(tmp, "s.py")
        with open(script, "w") as f:
            f.write(self.SCRIPT)
        worker = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, BUNTIME_GO_FD=str(theirs.fileno()),
                   PYTHONPATH=worker)
        env.pop("BUNTIME_CONTROL", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "buntime_worker", script], env=env,
            pass_fds=(theirs.fileno(),), stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        theirs.close()
        return ours, proc

    def test_the_script_runs_after_the_go(self):
        ours, proc = self.start()
        with ours:
            self.assertEqual(ours.recv(1), b"R")
            ours.sendall(b"G")
            out, _ = proc.communicate(timeout=30)
        self.assertEqual(out, b"ran None\n")
        self.assertEqual(proc.returncode, 0)

    def test_no_go_no_script(self):
        ours, proc = self.start()
        with ours:
            self.assertEqual(ours.recv(1), b"R")
        out, _ = proc.communicate(timeout=30)
        self.assertEqual(out, b"")
        self.assertEqual(proc.returncode, 1)


class ExitStatus(unittest.TestCase):
    def test_like_python(self):
        for code, status in ((None, 0), (0, 0), (3, 3), (256, 0), (-1, 255),
                             (True, 1), ("message", 1), (1 << 70, 255)):
            self.assertEqual(runner.exit_status(code), status, code)


if __name__ == "__main__":
    unittest.main()
