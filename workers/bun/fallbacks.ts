// buntime worker: transparent fallbacks. When a file operation fails with
// EACCES or EPERM (Landlock, seccomp, permissions), ask the supervisor
// through the broker and complete the call with what it grants (an fd or a
// listing). If it refuses, the ORIGINAL error is rethrown with the
// supervisor's reason appended to its message (and `brokerReason` set);
// without a broker the original error is rethrown untouched.
//
// Patched (node:fs and fs are the same module object in Bun):
//   fs.readFileSync, fs.readFile, fs.promises.readFile
//   fs.readdirSync, fs.readdir, fs.promises.readdir   (not `recursive`)
//   fs.writeFileSync, fs.appendFileSync, fs.promises.writeFile,
//   fs.promises.appendFile                            (string/bytes data)
//   Bun.file(path).text() / .arrayBuffer() / .bytes() / .json()
//
// This must run before any ESM import of "node:fs" / "fs" / "fs/promises"
// is linked (i.e. from the preload, with require()): Bun snapshots a
// built-in's named ESM exports when it is first imported.
import * as ipc from "./ipc.ts";
import * as api from "./buntime.ts";

type AnyFn = (...args: any[]) => any;
type Errno = Error & { code?: string; brokerReason?: string };

const fs = require("node:fs") as typeof import("node:fs");
const fsp = fs.promises;

/** `buntime run` binds only the policy's host paths: one it left out is
 * missing (ENOENT) rather than refused, and the broker answers for it. */
const hostPaths = process.env.BUNTIME_PATHS === "host";

/** Errors the broker may be able to turn into a success. */
function refusable(e: unknown): e is Errno {
  const code = (e as Errno | null)?.code;
  return code === "EACCES" || code === "EPERM" || (hostPaths && code === "ENOENT");
}

type PathLike = string | URL | Uint8Array;

/** A path argument the broker can handle (not an fd or a FileHandle). */
function brokerPath(p: unknown): PathLike | null {
  if (typeof p === "string" || p instanceof URL || p instanceof Uint8Array) return p;
  return null;
}

/** The original error, annotated with why the broker refused. */
function annotate(orig: Errno, why: unknown): Errno {
  if (why instanceof api.BrokerDenied) {
    orig.message += ` (buntime: denied: ${why.reason})`;
    orig.brokerReason = why.reason;
  } else if (why instanceof ipc.BrokerUnavailable) {
    // Not under buntime (or the supervisor is gone): leave the error as is,
    // except when the connection broke mid-run.
    if (!/broker unavailable/.test(why.message)) orig.message += ` (${why.message})`;
  } else if (why instanceof Error) {
    orig.message += ` (buntime: ${why.message})`;
  }
  return orig;
}

/** Run `broker()` for an access error `e`; on refusal throw `e` annotated. */
function viaBroker<T>(e: Errno, broker: () => T): T {
  if (!ipc.available()) throw e;
  try {
    return broker();
  } catch (why) {
    throw annotate(e, why);
  }
}

async function viaBrokerAsync<T>(e: Errno, broker: () => Promise<T>): Promise<T> {
  if (!ipc.available()) throw e;
  try {
    return await broker();
  } catch (why) {
    throw annotate(e, why);
  }
}

function withFd<T>(fd: number, f: (fd: number) => T): T {
  try {
    return f(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function optionsObject(o: unknown): Record<string, any> {
  if (typeof o === "string") return { encoding: o };
  return o && typeof o === "object" ? (o as Record<string, any>) : {};
}

// ------------------------------------------------------------ readFile

const origReadFileSync = fs.readFileSync as AnyFn;
const origReadFile = fs.readFile as AnyFn;
const origPReadFile = fsp.readFile as AnyFn;

function readFileSync(this: unknown, path: unknown, options?: unknown): unknown {
  try {
    return origReadFileSync.call(this, path, options);
  } catch (e) {
    const p = brokerPath(path);
    if (!p || !refusable(e)) throw e;
    return viaBroker(e, () => withFd(api.openRead(p as string), (fd) => origReadFileSync(fd, options)));
  }
}

function readFile(this: unknown, path: unknown, ...rest: unknown[]): unknown {
  const cb = rest[rest.length - 1];
  if (typeof cb !== "function") return origReadFile.call(this, path, ...rest);
  const options = rest.length > 1 ? rest[0] : undefined;
  return origReadFile.call(this, path, ...rest.slice(0, -1), (err: unknown, data: unknown) => {
    const p = brokerPath(path);
    if (!err || !p || !refusable(err)) return (cb as AnyFn)(err, data);
    viaBrokerAsync(err, async () => withFd(await api.openReadAsync(p as string), (fd) => origReadFileSync(fd, options))).then(
      (d) => (cb as AnyFn)(null, d),
      (e2) => (cb as AnyFn)(e2),
    );
  });
}

async function promisesReadFile(this: unknown, path: unknown, options?: unknown): Promise<unknown> {
  try {
    return await origPReadFile.call(this, path, options);
  } catch (e) {
    const p = brokerPath(path);
    if (!p || !refusable(e)) throw e;
    return viaBrokerAsync(e, async () => withFd(await api.openReadAsync(p as string), (fd) => origReadFileSync(fd, options)));
  }
}

// ------------------------------------------------------------- readdir

const origReaddirSync = fs.readdirSync as AnyFn;
const origReaddir = fs.readdir as AnyFn;
const origPReaddir = fsp.readdir as AnyFn;

const UV_DIRENT_FILE = 1;
const UV_DIRENT_DIR = 2;

/** Shape a broker listing like readdir would, or null if the options ask
 * for something the listing cannot give (recursive). */
function shapeListing(dir: string, entries: api.DirEntry[], options: unknown): unknown[] {
  const o = optionsObject(options);
  const Dirent = fs.Dirent as unknown as new (name: unknown, type: number, path: string) => unknown;
  return entries.map((e) => {
    const name = o.encoding === "buffer" ? Buffer.from(e.name) : e.name;
    // The listing only tells directories apart; anything else is reported
    // as a regular file.
    return o.withFileTypes ? new Dirent(name, e.isDirectory ? UV_DIRENT_DIR : UV_DIRENT_FILE, dir) : name;
  });
}

function listable(path: unknown, options: unknown): PathLike | null {
  return optionsObject(options).recursive ? null : brokerPath(path);
}

function readdirSync(this: unknown, path: unknown, options?: unknown): unknown {
  try {
    return origReaddirSync.call(this, path, options);
  } catch (e) {
    const p = listable(path, options);
    if (!p || !refusable(e)) throw e;
    return viaBroker(e, () => shapeListing(api.absPath(p), api.listDirEntries(p as string), options));
  }
}

function readdir(this: unknown, path: unknown, ...rest: unknown[]): unknown {
  const cb = rest[rest.length - 1];
  if (typeof cb !== "function") return origReaddir.call(this, path, ...rest);
  const options = rest.length > 1 ? rest[0] : undefined;
  return origReaddir.call(this, path, ...rest.slice(0, -1), (err: unknown, data: unknown) => {
    const p = listable(path, options);
    if (!err || !p || !refusable(err)) return (cb as AnyFn)(err, data);
    viaBrokerAsync(err, async () => shapeListing(api.absPath(p), await api.listDirEntriesAsync(p as string), options)).then(
      (d) => (cb as AnyFn)(null, d),
      (e2) => (cb as AnyFn)(e2),
    );
  });
}

async function promisesReaddir(this: unknown, path: unknown, options?: unknown): Promise<unknown> {
  try {
    return await origPReaddir.call(this, path, options);
  } catch (e) {
    const p = listable(path, options);
    if (!p || !refusable(e)) throw e;
    return viaBrokerAsync(e, async () => shapeListing(api.absPath(p), await api.listDirEntriesAsync(p as string), options));
  }
}

// ------------------------------------------------------------ writeFile

const origWriteFileSync = fs.writeFileSync as AnyFn;
const origAppendFileSync = fs.appendFileSync as AnyFn;
const origPWriteFile = fsp.writeFile as AnyFn;
const origPAppendFile = fsp.appendFile as AnyFn;

/** Bytes to write, or null when the data is something we do not handle
 * (streams, iterables): then no fallback. */
function dataBytes(data: unknown, options: unknown): Uint8Array | null {
  if (typeof data === "string") {
    const enc = optionsObject(options).encoding;
    return Buffer.from(data, typeof enc === "string" ? (enc as BufferEncoding) : "utf8");
  }
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/** "w" (replace) or "a" (append), or null for flags we leave alone. */
function writeMode(options: unknown, append: boolean): "w" | "a" | null {
  const flag = optionsObject(options).flag ?? (append ? "a" : "w");
  if (flag === "w") return "w";
  if (flag === "a") return "a";
  return null;
}

function makeWriteSync(orig: AnyFn, append: boolean): AnyFn {
  return function (this: unknown, path: unknown, data: unknown, options?: unknown): unknown {
    try {
      return orig.call(this, path, data, options);
    } catch (e) {
      const p = brokerPath(path);
      const bytes = dataBytes(data, options);
      const mode = writeMode(options, append);
      if (!p || !bytes || !mode || !refusable(e)) throw e;
      viaBroker(e, () => (mode === "a" ? api.appendFile(p as string, bytes) : api.writeFile(p as string, bytes)));
      return undefined;
    }
  };
}

function makeWriteAsync(orig: AnyFn, append: boolean): AnyFn {
  return async function (this: unknown, path: unknown, data: unknown, options?: unknown): Promise<unknown> {
    try {
      return await orig.call(this, path, data, options);
    } catch (e) {
      const p = brokerPath(path);
      const bytes = dataBytes(data, options);
      const mode = writeMode(options, append);
      if (!p || !bytes || !mode || !refusable(e)) throw e;
      await viaBrokerAsync(e, () =>
        mode === "a" ? api.appendFileAsync(p as string, bytes) : api.writeFileAsync(p as string, bytes),
      );
      return undefined;
    }
  };
}

// ------------------------------------------------------------- Bun.file

/** BunFile objects made by Bun.file(path) (not slices, not fds), with
 * their path. Slices share the prototype but must not fall back to the
 * whole file. */
const bunFiles = new WeakMap<object, PathLike>();

function patchBunFile(): void {
  const origFile = Bun.file as AnyFn;
  const wrapped = function (this: unknown, path: unknown, ...rest: unknown[]): unknown {
    const f = origFile.call(this, path, ...rest);
    const p = brokerPath(path);
    if (p && f && typeof f === "object") bunFiles.set(f, p);
    return f;
  };
  (Bun as unknown as Record<string, unknown>).file = wrapped;

  const proto = Blob.prototype as unknown as Record<string, AnyFn>;
  const convert: Record<string, (b: Uint8Array) => unknown> = {
    text: (b) => ipc.decode(b),
    json: (b) => JSON.parse(ipc.decode(b)),
    bytes: (b) => b,
    arrayBuffer: (b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength),
  };
  for (const [method, conv] of Object.entries(convert)) {
    const orig = proto[method];
    if (typeof orig !== "function") continue;
    proto[method] = async function (this: object, ...args: unknown[]): Promise<unknown> {
      try {
        return await orig.apply(this, args);
      } catch (e) {
        const p = bunFiles.get(this);
        if (p === undefined || !refusable(e)) throw e;
        return viaBrokerAsync(e, async () => {
          const b = await api.readFileAsync(p as string);
          return conv(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
        });
      }
    };
  }
}

let installed = false;

/** Install every fallback (idempotent). */
export function install(): void {
  if (installed) return;
  installed = true;
  const f = fs as unknown as Record<string, AnyFn>;
  const p = fsp as unknown as Record<string, AnyFn>;
  f.readFileSync = readFileSync;
  f.readFile = readFile;
  p.readFile = promisesReadFile;
  f.readdirSync = readdirSync;
  f.readdir = readdir;
  p.readdir = promisesReaddir;
  f.writeFileSync = makeWriteSync(origWriteFileSync, false);
  f.appendFileSync = makeWriteSync(origAppendFileSync, true);
  p.writeFile = makeWriteAsync(origPWriteFile, false);
  p.appendFile = makeWriteAsync(origPAppendFile, true);
  patchBunFile();
}
