// buntime worker: output relay (BUNTIME_RELAY_OUTPUT=1, or =tee to also
// keep writing to the original stdout/stderr).
//
// Works at the descriptor level, so it catches everything: console.*,
// process.stdout/stderr, Bun.write(Bun.stdout), Bun's own uncaught-error
// report, and the output of child processes (they inherit fds 1 and 2).
// fds 1 and 2 become pipes; a Worker thread (relay-thread.ts) reads them
// with poll() and sends the bytes as STDOUT / STDERR messages on a
// connection of its own (a connection must not be shared between threads),
// so a script busy in synchronous code never blocks on a full pipe. At
// exit, the main thread wakes the relay through a third pipe and waits (at
// most 2 s) until it has sent everything written so far.
import { dlopen, FFIType } from "bun:ffi";

const F_DUPFD_CLOEXEC = 1030;
const O_CLOEXEC = 0o2000000;
const READY = 1;
const DONE = 2;

function libc() {
  return dlopen("libc.so.6", {
    pipe2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
    fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    dup2: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
    write: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
  });
}

export interface RelayData {
  /** Read ends of the stdout and stderr pipes, and of the wake-up pipe. */
  outFd: number;
  errFd: number;
  wakeFd: number;
  /** The original fds 1 and 2 (close-on-exec copies), for tee and for when
   * the relay cannot connect. */
  origOut: number;
  origErr: number;
  tee: boolean;
  /** Int32 flags: [0] state (READY / DONE). */
  flags: SharedArrayBuffer;
}

export interface Relay {
  /** Flush: wake the relay and wait until it has sent what was written. */
  finish(timeoutMs?: number): void;
}

/**
 * Start relaying fds 1 and 2. Returns null (and leaves stdio untouched)
 * if the relay thread does not come up within `startMs`.
 */
export function startRelay(tee: boolean, startMs = 3000): Relay | null {
  const c = libc().symbols;
  const pipes = new Int32Array(6);
  for (let i = 0; i < 3; i++) {
    if (c.pipe2(pipes.subarray(2 * i), O_CLOEXEC) !== 0) {
      for (let j = 0; j < 2 * i; j++) c.close(pipes[j]);
      return null;
    }
  }
  const [outR, outW, errR, errW, wakeR, wakeW] = pipes;
  const origOut = c.fcntl(1, F_DUPFD_CLOEXEC, 3);
  const origErr = c.fcntl(2, F_DUPFD_CLOEXEC, 3);
  const flags = new SharedArrayBuffer(8);
  const state = new Int32Array(flags);
  const data: RelayData = { outFd: outR, errFd: errR, wakeFd: wakeR, origOut, origErr, tee, flags };
  const cleanup = () => {
    for (const fd of [outR, outW, errR, errW, wakeR, wakeW, origOut, origErr]) if (fd >= 0) c.close(fd);
  };
  let worker: Worker;
  try {
    worker = new Worker(new URL("./relay-thread.ts", import.meta.url).href, { workerData: data } as WorkerOptions);
  } catch {
    cleanup();
    return null;
  }
  // The thread maps the library and connects before it says READY.
  if (Atomics.wait(state, 0, 0, startMs) === "timed-out" && Atomics.load(state, 0) !== READY) {
    worker.terminate();
    cleanup();
    return null;
  }
  worker.unref();
  c.dup2(outW, 1);
  c.dup2(errW, 2);
  c.close(outW);
  c.close(errW);
  let finished = false;
  return {
    finish(timeoutMs = 2000) {
      if (finished) return;
      finished = true;
      const one = new Uint8Array([1]);
      c.write(wakeW, one, 1);
      const deadline = Date.now() + timeoutMs;
      while (Atomics.load(state, 0) !== DONE) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        Atomics.wait(state, 0, READY, left);
      }
      // Whatever is written after this (Bun's own last words) goes to the
      // original descriptors rather than into a pipe nobody reads.
      c.dup2(origOut, 1);
      c.dup2(origErr, 2);
    },
  };
}

export const RELAY_READY = READY;
export const RELAY_DONE = DONE;
