// Benchmark client (Bun, bun:ffi over libbuntime_ipc.so), driven by
// benches/ipc.rs: connect to $BUNTIME_CONTROL, do $N round trips of a
// 64-byte FS_READ request ($MODE=hot: back to back; cold: 200 us apart),
// print "p50_ns p99_ns n".
//
// Typed arrays are passed to each bun:ffi call directly (not a cached
// ptr()), so the engine cannot move them under us.
import { dlopen, FFIType } from "bun:ffi";

const FS_READ = 0x01;
const EXIT = 0x07;

const lib = dlopen(process.env.BUNTIME_IPC_LIB ?? "libbuntime_ipc.so", {
  bi_connect: { args: [FFIType.ptr], returns: FFIType.ptr },
  bi_send: { args: [FFIType.ptr, FFIType.u8, FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  bi_request: {
    args: [FFIType.ptr, FFIType.u8, FFIType.ptr, FFIType.u64, FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.ptr],
    returns: FFIType.i64_fast,
  },
  bi_close: { args: [FFIType.ptr], returns: FFIType.i32 },
  bi_last_error: { args: [], returns: FFIType.cstring },
});
// A real sleep for the cold regime (Bun.sleepSync rounds to whole ms).
const libc = dlopen("libc.so.6", { usleep: { args: [FFIType.u32], returns: FFIType.i32 } });

const n = Number(process.env.N ?? "1000");
const cold = process.env.MODE === "cold";

const client = lib.symbols.bi_connect(null);
if (!client) {
  throw new Error(`connect: ${lib.symbols.bi_last_error()}`);
}
const body = new TextEncoder().encode("/data/" + "x".repeat(50));
const kind = new Uint8Array(1);
const out = new Uint8Array(256);
const fd = new Int32Array(1);
const request = lib.symbols.bi_request;

for (let i = 0; i < Math.min(n, 2000); i++) {
  request(client, FS_READ, body, body.length, kind, out, out.length, fd);
}
const lat = new Float64Array(n);
for (let i = 0; i < n; i++) {
  if (cold) {
    libc.symbols.usleep(200);
  }
  const t = Bun.nanoseconds();
  const r = request(client, FS_READ, body, body.length, kind, out, out.length, fd);
  lat[i] = Bun.nanoseconds() - t;
  if (r < 0) {
    throw new Error(`request: ${lib.symbols.bi_last_error()}`);
  }
}
lat.sort();
console.log(`${Math.round(lat[n >> 1])} ${Math.round(lat[Math.min(n - 1, Math.floor((n * 99) / 100))])} ${n}`);
const code = new Uint8Array(4);
lib.symbols.bi_send(client, EXIT, code, 4);
lib.symbols.bi_close(client);
