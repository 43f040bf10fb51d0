// buntime worker: the output relay thread (see relay.ts). Runs in a Bun
// Worker: reads the stdout/stderr pipes and sends their bytes to the
// supervisor as STDOUT / STDERR messages over its own connection.
import { dlopen, FFIType } from "bun:ffi";
import { workerData } from "node:worker_threads";
import * as ipc from "./ipc.ts";
import { RELAY_DONE, RELAY_READY, type RelayData } from "./relay.ts";

const fs = require("node:fs") as typeof import("node:fs");

const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const POLLIN = 0x1;

const c = dlopen("libc.so.6", {
  poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
  fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  read: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
}).symbols;

const d = workerData as RelayData;
const state = new Int32Array(d.flags);
const connected = ipc.connect() === null;

for (const fd of [d.outFd, d.errFd, d.wakeFd]) c.fcntl(fd, F_SETFL, c.fcntl(fd, F_GETFL, 0) | O_NONBLOCK);

Atomics.store(state, 0, RELAY_READY);
Atomics.notify(state, 0);

const buf = new Uint8Array(64 << 10);

function writeAll(fd: number, b: Uint8Array): void {
  let off = 0;
  while (off < b.length) {
    try {
      off += fs.writeSync(fd, b, off, b.length - off);
    } catch {
      return; // original descriptor gone: drop
    }
  }
}

function forward(which: "out" | "err", b: Uint8Array): void {
  const orig = which === "out" ? d.origOut : d.origErr;
  const sent = connected && ipc.sendOutput(which === "out" ? ipc.Kind.STDOUT : ipc.Kind.STDERR, b);
  if (d.tee || !sent) writeAll(orig, b);
}

/** Read everything available on fd now; false at EOF. */
function drain(fd: number, which: "out" | "err"): boolean {
  for (;;) {
    const n = Number(c.read(fd, buf, buf.length));
    if (n > 0) {
      forward(which, buf.slice(0, n));
      continue;
    }
    return n !== 0; // 0: EOF; < 0: EAGAIN (or an error: try again later)
  }
}

// struct pollfd { int fd; short events; short revents; } × 3
const pfd = new Uint8Array(24);
const view = new DataView(pfd.buffer);
const fds = [d.outFd, d.errFd, d.wakeFd];
fds.forEach((fd, i) => {
  view.setInt32(8 * i, fd, true);
  view.setInt16(8 * i + 4, POLLIN, true);
});
const open = [true, true];

for (;;) {
  for (let i = 0; i < 3; i++) view.setInt16(8 * i + 6, 0, true);
  const r = c.poll(pfd, 3, -1);
  if (r < 0) continue; // EINTR: poll again
  for (let i = 0; i < 2; i++) {
    if (open[i] && view.getInt16(8 * i + 6, true) !== 0) {
      if (!drain(fds[i], i === 0 ? "out" : "err")) {
        open[i] = false;
        view.setInt32(8 * i, -1, true); // poll ignores negative fds
      }
    }
  }
  if (view.getInt16(8 * 2 + 6, true) !== 0) break;
}
// Exit requested: take whatever is still in the pipes, then say so.
if (open[0]) drain(d.outFd, "out");
if (open[1]) drain(d.errFd, "err");
ipc.close(); // STOP: the supervisor handles the frames before it
Atomics.store(state, 0, RELAY_DONE);
Atomics.notify(state, 0);
