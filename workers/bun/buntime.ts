// buntime: the broker API for Bun scripts running in a buntime sandbox.
//
//   import { readFile, listDir, available } from "buntime";
//
// "buntime" resolves to this file when the script runs with the worker
// preload (`bun --preload /opt/buntime/bun/worker.ts script.ts`). Every call
// asks the container's supervisor (docs/supervisor.md), which decides by the
// policy (static rules, then the `broker` section: allow / deny / ask) and
// audits the decision. A refusal throws an Error with `code === "EACCES"`
// and the supervisor's reason in the message; when the script does not run
// under buntime, calls throw with `code === "ENOTCONN"` (see available()).
//
// Paths are container paths; relative ones are resolved against the
// current directory. The functions block until the supervisor answers
// (an `ask` waits for the approver); the *Async variants do not block the
// event loop meanwhile.
import * as ipc from "./ipc.ts";

const fs = require("node:fs") as typeof import("node:fs");
const pathMod = require("node:path") as typeof import("node:path");

export { BrokerUnavailable } from "./ipc.ts";

/** Data up to this size is sent inline with FS_WRITE (the supervisor
 * writes it); larger data, and empty data, goes through a writable fd. */
const INLINE_WRITE_MAX = 512 << 10;
const MAX_PATH = 4096;
const MAX_ARGS = 4096;

/** Thrown when the supervisor refuses a request. */
export class BrokerDenied extends Error {
  readonly code = "EACCES";
  readonly errno = -13;
  /** The request kind: fs_read, fs_write, list_dir, net_connect, exec. */
  readonly syscall: string;
  /** The path, host:port or program the request was about. */
  readonly path: string;
  /** The supervisor's reason. */
  readonly reason: string;
  constructor(kind: string, subject: string, reason: string) {
    super(`EACCES: buntime denied ${kind} '${subject}': ${reason}`);
    this.name = "BrokerDenied";
    this.syscall = kind;
    this.path = subject;
    this.reason = reason;
  }
}

/** True when the script runs under a buntime supervisor and is connected
 * to it (otherwise every broker call throws `ENOTCONN`). */
export function available(): boolean {
  return ipc.available();
}

function invalid(message: string, code = "EINVAL"): Error {
  const e = new TypeError(`buntime: ${message}`) as TypeError & { code: string };
  e.code = code;
  return e;
}

/** Absolute container path of `p` (string, file: URL or bytes). */
export function absPath(p: string | URL | Uint8Array): string {
  let s: string;
  if (typeof p === "string") s = p;
  else if (p instanceof URL) {
    if (p.protocol !== "file:") throw invalid(`not a file: URL: ${p.href}`);
    s = decodeURIComponent(p.pathname);
  } else s = ipc.decode(p);
  if (s.length === 0) throw invalid("empty path", "ENOENT");
  return pathMod.resolve(s);
}

function pathBody(path: string): Uint8Array {
  const b = ipc.encode(path);
  if (b.length > MAX_PATH) throw invalid(`path longer than ${MAX_PATH} bytes (MAX_PATH, the broker protocol's limit: docs/ipc.md)`, "ENAMETOOLONG");
  if (b.includes(0)) throw invalid("path contains a NUL byte");
  return b;
}

function check(r: ipc.Reply, kind: string, subject: string): ipc.Reply {
  if (!r.allowed) {
    if (r.fd >= 0) fs.closeSync(r.fd);
    throw new BrokerDenied(kind, subject, ipc.decode(r.body));
  }
  return r;
}

function needFd(r: ipc.Reply, kind: string, subject: string): number {
  if (r.fd < 0) throw new ipc.BrokerUnavailable(`buntime: ${kind} '${subject}' allowed without a descriptor`);
  return r.fd;
}

function readAllAndClose(fd: number): Uint8Array {
  try {
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------- files

/** Open `path` read-only through the broker; returns the fd (caller closes). */
export function openRead(path: string | URL): number {
  const p = absPath(path);
  return needFd(check(ipc.request(ipc.Kind.FS_READ, pathBody(p)), "fs_read", p), "fs_read", p);
}

export async function openReadAsync(path: string | URL): Promise<number> {
  const p = absPath(path);
  return needFd(check(await ipc.requestAsync(ipc.Kind.FS_READ, pathBody(p)), "fs_read", p), "fs_read", p);
}

/** Open `path` for writing through the broker (created if missing, mode
 * 0644, owned by root; NOT truncated); returns the write-only fd. */
export function openWrite(path: string | URL): number {
  const p = absPath(path);
  return needFd(check(ipc.request(ipc.Kind.FS_WRITE, writeBody(p, new Uint8Array(0))), "fs_write", p), "fs_write", p);
}

export async function openWriteAsync(path: string | URL): Promise<number> {
  const p = absPath(path);
  const r = await ipc.requestAsync(ipc.Kind.FS_WRITE, writeBody(p, new Uint8Array(0)));
  return needFd(check(r, "fs_write", p), "fs_write", p);
}

/** The whole content of `path`, read through the broker. */
export function readFile(path: string | URL): Uint8Array {
  return readAllAndClose(openRead(path));
}

export async function readFileAsync(path: string | URL): Promise<Uint8Array> {
  return readAllAndClose(await openReadAsync(path));
}

/** `readFile` decoded as UTF-8. */
export function readTextFile(path: string | URL): string {
  return ipc.decode(readFile(path));
}

export async function readTextFileAsync(path: string | URL): Promise<string> {
  return ipc.decode(await readFileAsync(path));
}

function writeBody(path: string, data: Uint8Array): Uint8Array {
  const p = pathBody(path);
  const body = new Uint8Array(4 + p.length + data.length);
  new DataView(body.buffer).setUint32(0, p.length, true);
  body.set(p, 4);
  body.set(data, 4 + p.length);
  return body;
}

function toBytes(data: string | Uint8Array): Uint8Array {
  return typeof data === "string" ? ipc.encode(data) : data;
}

function writeThroughFd(fd: number, data: Uint8Array, append: boolean): void {
  try {
    let pos = 0;
    if (append) pos = fs.fstatSync(fd).size;
    else fs.ftruncateSync(fd, 0);
    let off = 0;
    while (off < data.length) {
      const n = fs.writeSync(fd, data, off, data.length - off, pos + off);
      off += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Replace the content of `path` with `data` (created if missing). */
export function writeFile(path: string | URL, data: string | Uint8Array): void {
  const p = absPath(path);
  const bytes = toBytes(data);
  if (bytes.length > 0 && bytes.length <= INLINE_WRITE_MAX) {
    check(ipc.request(ipc.Kind.FS_WRITE, writeBody(p, bytes)), "fs_write", p);
    return;
  }
  writeThroughFd(openWrite(p), bytes, false);
}

export async function writeFileAsync(path: string | URL, data: string | Uint8Array): Promise<void> {
  const p = absPath(path);
  const bytes = toBytes(data);
  if (bytes.length > 0 && bytes.length <= INLINE_WRITE_MAX) {
    check(await ipc.requestAsync(ipc.Kind.FS_WRITE, writeBody(p, bytes)), "fs_write", p);
    return;
  }
  writeThroughFd(await openWriteAsync(p), bytes, false);
}

/** Append `data` to `path` (created if missing). */
export function appendFile(path: string | URL, data: string | Uint8Array): void {
  writeThroughFd(openWrite(path), toBytes(data), true);
}

export async function appendFileAsync(path: string | URL, data: string | Uint8Array): Promise<void> {
  writeThroughFd(await openWriteAsync(path), toBytes(data), true);
}

// ---------------------------------------------------------- directories

export interface DirEntry {
  name: string;
  isDirectory: boolean;
}

function parseListing(body: Uint8Array): DirEntry[] {
  return ipc
    .decode(body)
    .split("\0")
    .filter((n) => n.length > 0)
    .map((n) => (n.endsWith("/") ? { name: n.slice(0, -1), isDirectory: true } : { name: n, isDirectory: false }));
}

/** Entries of directory `path` with their kind, sorted by name. */
export function listDirEntries(path: string | URL): DirEntry[] {
  const p = absPath(path);
  return parseListing(check(ipc.request(ipc.Kind.LISTDIR, pathBody(p)), "list_dir", p).body);
}

export async function listDirEntriesAsync(path: string | URL): Promise<DirEntry[]> {
  const p = absPath(path);
  return parseListing(check(await ipc.requestAsync(ipc.Kind.LISTDIR, pathBody(p)), "list_dir", p).body);
}

/** Names in directory `path` (sorted; no trailing '/' on directories). */
export function listDir(path: string | URL): string[] {
  return listDirEntries(path).map((e) => e.name);
}

export async function listDirAsync(path: string | URL): Promise<string[]> {
  return (await listDirEntriesAsync(path)).map((e) => e.name);
}

// -------------------------------------------------------------- network

function netBody(host: string, port: number): Uint8Array {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`bad port ${port}`);
  if (!/^[\x21-\x7e]{1,255}$/.test(host)) throw invalid(`bad host name ${JSON.stringify(host.slice(0, 64))}: 1 to 255 printable ASCII characters (MAX_HOST, docs/ipc.md)`);
  const h = ipc.encode(host);
  const body = new Uint8Array(2 + h.length);
  new DataView(body.buffer).setUint16(0, port, true);
  body.set(h, 2);
  return body;
}

export interface Connection {
  /** The connected socket (caller owns it). */
  fd: number;
  /** The address the supervisor connected to (ALLOW body). */
  address: string;
}

/** Like `connect`, also returning the address the supervisor connected to. */
export function connectInfo(host: string, port: number): Connection {
  const subject = `${host}:${port}`;
  const r = check(ipc.request(ipc.Kind.NET_CONNECT, netBody(host, port)), "net_connect", subject);
  return { fd: needFd(r, "net_connect", subject), address: ipc.decode(r.body) };
}

/**
 * A TCP connection to host:port made by the supervisor (the sandbox itself
 * may have no network): returns the connected socket's fd. In Bun use it
 * with `Bun.connect({ fd, socket: { data(s, d) {…}, … } })` (supported at
 * run time, though bun-types 1.4.5 lacks that overload: see connectSocket),
 * or with fs.readSync / fs.writeSync. `net.Socket({ fd })` does not work in
 * Bun 1.4.5.
 */
export function connect(host: string, port: number): number {
  return connectInfo(host, port).fd;
}

/** `connect` + `Bun.connect({ fd })`: a Bun socket over the brokered
 * connection. `tls: true` (or options) makes it a TLS client (for TLS set
 * `serverName` in the options to `host`). */
export async function connectSocket<Data = undefined>(
  host: string,
  port: number,
  options: Omit<import("bun").FdSocketOptions<Data>, "fd">,
): Promise<import("bun").Socket<Data>> {
  const fd = connect(host, port);
  const bunConnect = Bun.connect as unknown as (
    o: import("bun").FdSocketOptions<Data>,
  ) => Promise<import("bun").Socket<Data>>;
  try {
    return await bunConnect({ ...options, fd } as import("bun").FdSocketOptions<Data>);
  } catch (e) {
    try {
      fs.closeSync(fd);
    } catch {
      // already taken over by the socket
    }
    throw e;
  }
}

// ------------------------------------------------------------- programs

function execBody(argv: string[]): Uint8Array {
  if (argv.length === 0 || argv[0].length === 0) throw invalid("argv[0] must be non-empty");
  if (argv.length > MAX_ARGS) throw invalid(`more than ${MAX_ARGS} arguments (MAX_ARGS, the broker protocol's limit: docs/ipc.md)`, "E2BIG");
  const parts = argv.map((a) => {
    const b = ipc.encode(a);
    if (b.includes(0)) throw invalid("argument contains a NUL byte");
    return b;
  });
  const body = new Uint8Array(parts.reduce((n, b) => n + b.length + 1, 0));
  let off = 0;
  for (const b of parts) {
    body.set(b, off);
    off += b.length + 1; // NUL terminator (already 0)
  }
  return body;
}

/** Ask the supervisor whether argv may run; returns the resolved program
 * path (argv[0] looked up in the container's PATH). */
export function resolveExec(argv: string[]): string {
  const r = check(ipc.request(ipc.Kind.EXEC, execBody(argv)), "exec", argv[0] ?? "");
  if (r.fd >= 0) fs.closeSync(r.fd);
  return ipc.decode(r.body);
}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** Data for the program's standard input. */
  stdin?: string | Uint8Array;
  /** Kill the program after this many milliseconds. */
  timeout?: number;
}

export interface RunResult {
  /** Exit status, or null when the program was killed by a signal. */
  exitCode: number | null;
  /** The signal that killed it, if any. */
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Ask the supervisor (EXEC), then run the resolved program with
 * Bun.spawnSync, collecting its output. It still runs under the sandbox's
 * Landlock and seccomp rules. */
export function run(argv: string[], options: RunOptions = {}): RunResult {
  const program = resolveExec(argv);
  const r = Bun.spawnSync([program, ...argv.slice(1)], {
    argv0: argv[0],
    cwd: options.cwd,
    env: options.env,
    stdin: options.stdin === undefined ? "ignore" : toBytes(options.stdin),
    stdout: "pipe",
    stderr: "pipe",
    timeout: options.timeout,
  });
  return {
    exitCode: r.exitCode,
    signal: r.signalCode == null ? null : String(r.signalCode),
    stdout: r.stdout ? ipc.decode(r.stdout) : "",
    stderr: r.stderr ? ipc.decode(r.stderr) : "",
  };
}

const api = {
  available,
  readFile,
  readFileAsync,
  readTextFile,
  readTextFileAsync,
  writeFile,
  writeFileAsync,
  appendFile,
  appendFileAsync,
  openRead,
  openReadAsync,
  openWrite,
  openWriteAsync,
  listDir,
  listDirAsync,
  listDirEntries,
  listDirEntriesAsync,
  connect,
  connectInfo,
  connectSocket,
  resolveExec,
  run,
  absPath,
  BrokerDenied,
  BrokerUnavailable: ipc.BrokerUnavailable,
};

export default api;
