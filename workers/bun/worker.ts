// buntime worker preload for Bun:
//
//   bun --preload /opt/buntime/bun/worker.ts SCRIPT ARGS…
//
// 1. connects to the container's supervisor ($BUNTIME_CONTROL, through
//    libbuntime_ipc.so: $BUNTIME_IPC_LIB, default
//    /opt/buntime/lib/libbuntime_ipc.so). Without BUNTIME_CONTROL the
//    script runs with the broker disabled, silently; if BUNTIME_CONTROL is
//    set but the connection fails, one warning goes to stderr.
// 2. makes `import … from "buntime"` (and require("buntime")) load
//    buntime.ts next to this file (a Bun runtime plugin virtual module).
// 3. installs the fallbacks (fallbacks.ts): fs reads, listings and writes,
//    and Bun.file(…) reads, refused with EACCES/EPERM, are retried through
//    the broker.
// 4. with BUNTIME_RELAY_OUTPUT=1 (or =tee), relays fds 1 and 2 to the
//    supervisor as STDOUT / STDERR messages (relay.ts). Default: stdio is
//    left alone.
// 5. at exit sends EXIT (the exit code) and STOP.
//
// BUNTIME_WORKER_DISABLE=1 skips everything but the "buntime" module.
//
// Node built-ins are required, not imported: see the note in ipc.ts.
import { plugin } from "bun";
import * as ipc from "./ipc.ts";
import * as api from "./buntime.ts";
import { install } from "./fallbacks.ts";
import type { Relay } from "./relay.ts";

const env = process.env;

plugin({
  name: "buntime",
  setup(build) {
    // A virtual module: resolved before package lookup (and before Bun's
    // auto-install would ask a registry for a package named "buntime").
    build.module("buntime", () => ({ exports: { ...api, default: api.default }, loader: "object" }));
  },
});

if (env.BUNTIME_WORKER_DISABLE !== "1") {
  const why = ipc.connect();
  if (why !== null && env.BUNTIME_CONTROL) {
    process.stderr.write(`buntime: warning: broker unavailable, running without it: ${why}\n`);
  }
  install();

  let relay: Relay | null = null;
  const mode = env.BUNTIME_RELAY_OUTPUT;
  if (why === null && (mode === "1" || mode === "tee")) {
    // Loaded only when asked for.
    const { startRelay } = require("./relay.ts") as typeof import("./relay.ts");
    relay = startRelay(mode === "tee");
    if (!relay) process.stderr.write("buntime: warning: output relay did not start; output is not relayed\n");
  }

  process.on("exit", (code) => {
    relay?.finish();
    ipc.closeWithExit(typeof code === "number" ? code : Number(process.exitCode ?? 0));
  });
}

// A pooled sandbox (`buntime pool fill`, docs/run.md "Pool"): say "R" on
// the inherited socket (start-up and handshake done), then wait for the
// claim's "G" before Bun loads the script; EOF (the pooled run is gone):
// exit without running it.
const goFd = env.BUNTIME_GO_FD;
if (goFd !== undefined) {
  delete env.BUNTIME_GO_FD;
  waitForGo(Number(goFd));
}

function waitForGo(fd: number): void {
  const fs = require("node:fs") as typeof import("node:fs");
  const byte = new Uint8Array(1);
  let n = 0;
  try {
    fs.writeSync(fd, "R");
    n = fs.readSync(fd, byte, 0, 1, null);
    fs.closeSync(fd);
  } catch {
    n = 0;
  }
  if (n !== 1 || byte[0] !== "G".charCodeAt(0)) process.exit(1);
}
