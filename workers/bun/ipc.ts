// buntime worker, IPC layer: the worker side of docs/ipc.md through
// libbuntime_ipc.so (crates/buntime-ipc/include/buntime_ipc.h), loaded with bun:ffi.
//
// One process-wide connection, opened by the preload (worker.ts) or lazily
// by the first broker call. Every call is synchronous except
// `requestAsync`, which polls for the reply between event-loop turns so an
// `ask` decision (seconds) does not freeze timers and I/O.
//
// Typed arrays are passed to each FFI call directly (not a cached ptr()),
// so the engine cannot move them under us (see bench/ipc/client.ts).
//
// Node built-ins are loaded with require(), never with a static ESM import:
// in Bun the first ESM import of "node:fs" snapshots its named exports, and
// the fallbacks (fallbacks.ts) must patch the module object before that
// happens for `import { readFileSync } from "fs"` in user code to see them.
import { dlopen, FFIType } from "bun:ffi";

const fs = require("node:fs") as typeof import("node:fs");

/** Message types (docs/ipc.md): crates/buntime-ipc/src/protocol.rs's, checked
 * by crates/buntime-ipc/tests/worker_constants.rs. */
export const Kind = {
  STDOUT: 0x00,
  FS_READ: 0x01,
  FS_WRITE: 0x02,
  NET_CONNECT: 0x03,
  EXEC: 0x04,
  LISTDIR: 0x05,
  STDERR: 0x06,
  EXIT: 0x07,
  ALLOW: 0x10,
  DENY: 0x11,
} as const;

/** Default location of the library inside a buntime container. */
export const DEFAULT_LIB = "/opt/buntime/lib/libbuntime_ipc.so";

/** Largest ALLOW body the supervisor sends inline: a LISTDIR listing is at
 * most 200 KiB (docs/supervisor.md); DENY reasons ≤ 1 KiB; EXEC paths ≤ 4 KiB. */
const REPLY_CAP = 256 << 10;

/** Poll interval bounds for `requestAsync` (ms). */
const POLL_MIN_MS = 1;
const POLL_MAX_MS = 25;

export interface Reply {
  /** true for ALLOW, false for DENY. */
  allowed: boolean;
  /** ALLOW: inline data; DENY: UTF-8 reason. */
  body: Uint8Array;
  /** Descriptor passed with ALLOW (FD_FOLLOWS), else -1. The caller owns it. */
  fd: number;
}

function openLib(path: string) {
  return dlopen(path, {
    bi_connect: { args: [FFIType.ptr], returns: FFIType.ptr },
    bi_set_timeout_ms: { args: [FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
    bi_send: { args: [FFIType.ptr, FFIType.u8, FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
    bi_send_request: { args: [FFIType.ptr, FFIType.u8, FFIType.ptr, FFIType.u64], returns: FFIType.i64_fast },
    bi_recv: {
      args: [FFIType.ptr, FFIType.u32, FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.ptr],
      returns: FFIType.i64_fast,
    },
    bi_request: {
      args: [FFIType.ptr, FFIType.u8, FFIType.ptr, FFIType.u64, FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.ptr],
      returns: FFIType.i64_fast,
    },
    bi_close: { args: [FFIType.ptr], returns: FFIType.i32 },
    bi_last_error: { args: [], returns: FFIType.cstring },
  });
}

type Lib = ReturnType<typeof openLib>;

/** Raised when the broker cannot be used at all (not under buntime, the
 * supervisor went away, a protocol error). `code` is "ENOTCONN". */
export class BrokerUnavailable extends Error {
  code = "ENOTCONN";
  constructor(message: string) {
    super(message);
    this.name = "BrokerUnavailable";
  }
}

type State =
  | { kind: "idle" } // not tried yet
  | { kind: "connected"; lib: Lib; handle: NonNullable<ReturnType<Lib["symbols"]["bi_connect"]>> }
  | { kind: "failed"; reason: string } // no BUNTIME_CONTROL, no library, or handshake failed
  | { kind: "closed" };

let state: State = { kind: "idle" };
// Scratch buffers, reused (JS is single-threaded; FFI calls do not re-enter).
const outKind = new Uint8Array(1);
const outFd = new Int32Array(1);
let outBuf: Uint8Array | null = null;
const enc = new TextEncoder();
const dec = new TextDecoder();

function lastError(lib: Lib): string {
  const e = lib.symbols.bi_last_error();
  return e ? String(e) : "unknown error";
}

/** Path of the IPC library: $BUNTIME_IPC_LIB, else the container default,
 * else whatever the dynamic loader finds. */
function libPath(): string {
  const env = process.env.BUNTIME_IPC_LIB;
  if (env) return env;
  return fs.existsSync(DEFAULT_LIB) ? DEFAULT_LIB : "libbuntime_ipc.so";
}

/**
 * Connect to the supervisor ($BUNTIME_CONTROL) once. Returns null on
 * success, else why the broker is unavailable. Never throws.
 */
export function connect(): string | null {
  switch (state.kind) {
    case "connected":
      return null;
    case "failed":
      return state.reason;
    case "closed":
      return "connection closed";
  }
  if (!process.env.BUNTIME_CONTROL) {
    state = { kind: "failed", reason: "BUNTIME_CONTROL is not set (not running under buntime)" };
    return state.reason;
  }
  let lib: Lib;
  try {
    lib = openLib(libPath());
  } catch (e) {
    state = { kind: "failed", reason: `cannot load ${libPath()}: ${(e as Error).message}` };
    return state.reason;
  }
  const handle = lib.symbols.bi_connect(null);
  if (!handle) {
    state = { kind: "failed", reason: `cannot connect to ${process.env.BUNTIME_CONTROL}: ${lastError(lib)}` };
    lib.close();
    return state.reason;
  }
  state = { kind: "connected", lib, handle };
  return null;
}

/** True when connected (connecting first if not tried yet). */
export function available(): boolean {
  return connect() === null;
}

/** Why the broker is unavailable, or null when it is available. */
export function unavailableReason(): string | null {
  return connect();
}

function conn() {
  const why = connect();
  if (why !== null || state.kind !== "connected") {
    throw new BrokerUnavailable(`buntime: broker unavailable: ${why ?? "not connected"}`);
  }
  return state;
}

function fail(c: { lib: Lib }, what: string): never {
  throw new BrokerUnavailable(`buntime: ${what}: ${lastError(c.lib)}`);
}

function reply(len: number | bigint): Reply {
  const n = Number(len);
  if (n > REPLY_CAP) {
    // Cannot happen with the current supervisor; refuse rather than truncate.
    if (outFd[0] >= 0) fs.closeSync(outFd[0]);
    throw new BrokerUnavailable(`buntime: reply of ${n} bytes exceeds ${REPLY_CAP}`);
  }
  const body = outBuf!.slice(0, n);
  return { allowed: outKind[0] === Kind.ALLOW, body, fd: outFd[0] };
}

/** Send a request and wait for its reply (blocking, as long as the
 * supervisor lives: an `ask` waits for the approver). */
export function request(kind: number, body: Uint8Array): Reply {
  const c = conn();
  outBuf ??= new Uint8Array(REPLY_CAP);
  outFd[0] = -1;
  c.lib.symbols.bi_set_timeout_ms(c.handle, 0);
  const n = c.lib.symbols.bi_request(c.handle, kind, body, body.length, outKind, outBuf, outBuf.length, outFd);
  if (Number(n) < 0) fail(c, "request failed");
  return reply(n);
}

/** Like `request`, without blocking the event loop while waiting: the reply
 * is polled for with a 1 ms bound per poll, backing off to 25 ms. */
export async function requestAsync(kind: number, body: Uint8Array): Promise<Reply> {
  const c = conn();
  const id = Number(c.lib.symbols.bi_send_request(c.handle, kind, body, body.length));
  if (id <= 0) fail(c, "request failed");
  let delay = 0;
  for (;;) {
    if (state !== c) throw new BrokerUnavailable("buntime: connection closed while waiting for a reply");
    outBuf ??= new Uint8Array(REPLY_CAP);
    outFd[0] = -1;
    c.lib.symbols.bi_set_timeout_ms(c.handle, POLL_MIN_MS);
    const n = c.lib.symbols.bi_recv(c.handle, id, outKind, outBuf, outBuf.length, outFd);
    c.lib.symbols.bi_set_timeout_ms(c.handle, 0);
    if (Number(n) >= 0) return reply(n);
    const err = lastError(c.lib);
    if (err !== "timed out") throw new BrokerUnavailable(`buntime: request failed: ${err}`);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(POLL_MAX_MS, Math.max(POLL_MIN_MS, delay * 2));
  }
}

/** Unsolicited STDOUT / STDERR bytes (split by the library if large).
 * Returns false when the broker is unavailable or the send failed. */
export function sendOutput(kind: typeof Kind.STDOUT | typeof Kind.STDERR, data: Uint8Array): boolean {
  if (state.kind !== "connected" || data.length === 0) return state.kind === "connected";
  return state.lib.symbols.bi_send(state.handle, kind, data, data.length) >= 0;
}

/** Send EXIT (4-byte LE i32) and STOP, and close the connection. Idempotent. */
export function closeWithExit(code: number): void {
  if (state.kind !== "connected") return;
  const c = state;
  state = { kind: "closed" };
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, code | 0, true);
  c.lib.symbols.bi_set_timeout_ms(c.handle, 2000);
  c.lib.symbols.bi_send(c.handle, Kind.EXIT, b, 4);
  c.lib.symbols.bi_close(c.handle);
}

/** Send STOP and close the connection (no EXIT). Idempotent. */
export function close(): void {
  if (state.kind !== "connected") return;
  const c = state;
  state = { kind: "closed" };
  c.lib.symbols.bi_set_timeout_ms(c.handle, 2000);
  c.lib.symbols.bi_close(c.handle);
}

export function encode(s: string): Uint8Array {
  return enc.encode(s);
}

export function decode(b: Uint8Array): string {
  return dec.decode(b);
}
