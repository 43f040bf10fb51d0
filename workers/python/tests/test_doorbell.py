"""Tests of the pure-Python ring client (buntime_worker.doorbell) against a
supervisor played by the test: a real segment (memfd, mapped twice) and a
real SOCK_SEQPACKET socket pair, the supervisor's side written from
docs/ipc.md. The round trip through the real supervisor is tested by
tests/run_cli.rs. Run from the repository root:

    /usr/bin/python3 workers/python/tests/test_doorbell.py
"""

import mmap
import os
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from buntime_worker import doorbell, protocol, wire  # noqa: E402

CAP = 4096
S2W, W2S, TOTAL = 4096, 12288, 20480
FD_FOLLOWS = doorbell.FLAG_FD_FOLLOWS


class FakeSupervisor:
    """The supervisor's end: its own indexes, frames as docs/ipc.md says."""

    def __init__(self, magic=doorbell.SEGMENT_MAGIC):
        self.seg = os.memfd_create("seg")
        os.ftruncate(self.seg, TOTAL)
        self.mm = mmap.mmap(self.seg, TOTAL)
        struct.pack_into("<IIIIIIIIQ", self.mm, 0, magic, 1, 4096, 0, S2W,
                         CAP, W2S, CAP, TOTAL)
        for off in (S2W, W2S):
            struct.pack_into("<I", self.mm, off + 8, CAP)
        self.worker, self.sock = socket.socketpair(socket.AF_UNIX,
                                                   socket.SOCK_SEQPACKET)
        self.head = 0  # S2W, ours
        self.tail = 0  # W2S, ours
        self.pending = wire.Pending(self.worker, self.seg, 1, 0)

    def word(self, off, i, value=None):
        if value is None:
            return struct.unpack_from("<I", self.mm, off + 4 * i)[0]
        struct.pack_into("<I", self.mm, off + 4 * i, value & 0xFFFFFFFF)

    def frame(self, payload, length=None, ring=True):
        data = struct.pack("<I", len(payload) if length is None else length)
        data += payload
        for i, b in enumerate(data):
            self.mm[S2W + 64 + ((self.head + i) % CAP)] = b
        self.head += len(data)
        self.word(S2W, 0, self.head)
        # The worker asks for this doorbell before its request is visible;
        # replies here may be written before the request: ring anyway.
        self.word(S2W, 3, 0)
        if ring:
            self.sock.send(wire._msg(wire.DATA, 1))

    def reply(self, kind, rid, body=b"", flags=0, fd=None):
        if fd is not None:
            self.sock.sendmsg([wire._msg(doorbell.FD, rid)],
                              [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                struct.pack("i", fd))])
        self.frame(struct.pack("<BBHI", kind, flags, 0, rid) + body)

    def take(self):
        """The next frame the worker wrote: (kind, id, body), or None."""
        head = self.word(W2S, 0)
        if head == self.tail:
            return None
        ring = bytes(self.mm[W2S + 64:W2S + 64 + CAP])

        def at(n):
            return bytes(ring[(self.tail + i) % CAP] for i in range(n))

        n = struct.unpack("<I", at(4))[0]
        self.tail += 4
        p = at(n)
        self.tail += n
        self.word(W2S, 1, self.tail)
        kind, _, _, rid = struct.unpack_from("<BBHI", p)
        return kind, rid, p[8:]

    def control(self):
        self.sock.settimeout(1)
        data = self.sock.recv(512)
        if not data:
            raise EOFError
        return data[0], struct.unpack_from("<I", data, 4)[0]


class RoundTrips(unittest.TestCase):
    def setUp(self):
        self.sup = FakeSupervisor()
        self.client = doorbell.Client(self.sup.pending)
        self.addCleanup(self.client.close)

    def test_allow_with_fd_and_the_request_on_the_ring(self):
        r, w = os.pipe()
        os.write(w, b"content")
        os.close(w)
        # Answered before it is asked: the worker finds it after its send.
        self.sup.reply(protocol.ALLOW, 1, b"", FD_FOLLOWS, fd=r)
        os.close(r)
        reply = self.client.request(protocol.FS_READ, b"/data/x")
        self.assertEqual(reply.kind, protocol.ALLOW)
        self.assertEqual(os.read(reply.fd, 100), b"content")
        os.close(reply.fd)
        self.assertEqual(self.sup.take(), (protocol.FS_READ, 1, b"/data/x"))
        self.assertEqual(self.sup.control(), (wire.DATA, 0))
        # Taken on its fd, before its doorbell: the next request reads that
        # doorbell first, then waits for its own.
        self.assertTrue(self.client._owed)
        self.sup.reply(protocol.DENY, 2, b"no")
        reply = self.client.request(protocol.FS_READ, b"/data/y")
        self.assertEqual((reply.kind, reply.reason), (protocol.DENY, "no"))
        self.assertFalse(self.client._owed)

    def test_deny_and_a_stale_reply_is_dropped(self):
        r, w = os.pipe()
        os.close(w)
        self.sup.reply(protocol.ALLOW, 7, b"", FD_FOLLOWS, fd=r)  # nobody's
        os.close(r)
        self.sup.reply(protocol.DENY, 1, "refusé".encode())
        reply = self.client.request(protocol.FS_READ, b"/etc/shadow")
        self.assertEqual((reply.kind, reply.reason, reply.fd),
                         (protocol.DENY, "refusé", -1))
        self.assertEqual(self.client._fds, {})

    def test_reply_that_wraps_around_the_ring(self):
        for rid in range(1, 40):  # 39 * 108 bytes > CAP
            self.sup.reply(protocol.ALLOW, rid, bytes([rid]) * 100)
            reply = self.client.request(protocol.LISTDIR, b"/")
            self.assertEqual(reply.data, bytes([rid]) * 100)
            self.assertEqual(self.sup.take()[1], rid)

    def test_a_lost_doorbell_delays_but_does_not_hang(self):
        # Another process of the sandbox cleared the announcement.
        self.sup.frame(struct.pack("<BBHI", protocol.DENY, 0, 0, 1) + b"no",
                       ring=False)
        reply = self.client.request(protocol.FS_READ, b"/x")
        self.assertEqual(reply.reason, "no")

    def test_output_larger_than_the_ring_waits_for_room(self):
        data = bytes(range(256)) * 64  # 16 KiB through a 4 KiB ring
        got = []

        deadline = time.monotonic() + 10

        def consume():
            while sum(map(len, got)) < len(data) and time.monotonic() < deadline:
                f = self.sup.take()
                if f is not None:
                    got.append(f[2])

        # A daemon with a deadline: a failure must not hang the process.
        t = threading.Thread(target=consume, daemon=True)
        t.start()
        self.client.send(protocol.STDOUT, data)
        t.join(10)
        self.assertFalse(t.is_alive())
        self.assertEqual(b"".join(got), data)


class Hostile(unittest.TestCase):
    """What the worker reads from the segment is checked: a bad value
    stops the connection with an error, never a hang or a crash."""

    def attempt(self, write):
        sup = FakeSupervisor()
        client = doorbell.Client(sup.pending)
        self.addCleanup(client.close)
        write(sup)
        with self.assertRaises(protocol.IpcError) as cm:
            client.request(protocol.FS_READ, b"/x")
        self.assertTrue(client.closed)
        kinds = []
        try:
            while True:
                kinds.append(sup.control()[0])
        except (OSError, EOFError):
            pass
        self.assertIn(wire.STOP, kinds)
        return str(cm.exception)

    def test_head_past_the_capacity(self):
        def w(sup):
            sup.word(S2W, 0, CAP + 8)
            sup.sock.send(wire._msg(wire.DATA, 1))
        self.assertIn("past tail", self.attempt(w))

    def test_lengths(self):
        for length in (0, 9, CAP):
            self.assertIn("frame length", self.attempt(
                lambda s: s.frame(struct.pack("<BBHI", 0x11, 0, 0, 1),
                                  length=length)))

    def test_malformed_replies(self):
        for payload in (struct.pack("<BBHI", 0x00, 0, 0, 1),  # not a reply
                        struct.pack("<BBHI", 0x10, 2, 0, 1),  # bad flag
                        struct.pack("<BBHI", 0x11, 0, 1, 1),  # reserved
                        struct.pack("<BBHI", 0x10, 0, 0, 0),  # id 0
                        struct.pack("<BBHI", 0x11, 0, 0, 1) + b"\xff",
                        struct.pack("<BBH", 0x10, 0, 0)):     # short
            self.assertIn("reply", self.attempt(lambda s: s.frame(payload)))

    def test_fd_follows_without_an_fd(self):
        self.assertIn("none came", self.attempt(
            lambda s: s.reply(protocol.ALLOW, 1, b"", FD_FOLLOWS)))

    def test_bad_segment_leaves_the_connection_to_the_caller(self):
        sup = FakeSupervisor(magic=0)
        with self.assertRaises(protocol.IpcError):
            doorbell.Client(sup.pending)
        self.assertIsNotNone(sup.pending.sock)
        sup.pending.close()


if __name__ == "__main__":
    unittest.main()
