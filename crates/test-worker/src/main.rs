//! A test worker: runs inside a container, talks to the supervisor through
//! the IPC client and prints one line per command, for the tests in
//! tests/supervisor_*.rs.
//!
//! Commands (one per argument): `read:PATH`, `write:PATH:DATA` (data in the
//! request), `wfd:PATH:DATA` (asks for a writable fd, writes through it),
//! `list:PATH`, `net:HOST:PORT:MSG` (sends MSG, prints the first line
//! back), `exec:PROG`, `stdout:TEXT`, `sleep:MS`, `garbage-ring` (scribbles
//! over its own segment's ring header), `garbage-ctl` (sends a nonsense
//! control message instead of HELLO), `ctl-exit:CODE` (a connection of its
//! own that reports CODE with the control message EXIT, twice),
//! `burst-stop:N` (a doorbell connection of its own: N STDOUT messages and
//! EXIT 9 in the ring, then STOP at once), `hold:N` (N connections of its
//! own at once: how many the supervisor took, why it refused the rest, and
//! whether a new one is taken once one of them is closed), `bench-read:PATH:N`
//! and `bench-deny:PATH:N` (round trips for benches/broker.rs).
//! Output: `CMD SUBJECT ALLOW|DENY|ERROR detail`.

mod bench;
mod hostile;
mod requests;

use std::io::Write;
use std::time::Duration;

use buntime_ipc::{Client, Reply, Request, Response};

use bench::{bench_deny, bench_read};
use hostile::{burst_stop, ctl_exit, garbage_ctl, garbage_ring, hold};

pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub(crate) fn escape(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .replace('\n', "\\n")
        .replace('\0', ",")
}

pub(crate) struct Worker {
    client: Option<Client>,
}

impl Worker {
    pub(crate) fn client(&mut self) -> Result<&mut Client, String> {
        if self.client.is_none() {
            let mut c = Client::connect_env().map_err(|e| e.to_string())?;
            c.set_timeout(Some(Duration::from_secs(60)));
            self.client = Some(c);
        }
        self.client.as_mut().ok_or_else(|| "no client".to_string())
    }

    /// Sends a request; a dead supervisor counts as a denial.
    pub(crate) fn request(&mut self, req: &Request) -> Result<Response, String> {
        let r = self.client()?.request_typed(req);
        r.map_err(|e| {
            self.client = None;
            format!("supervisor unavailable: {e}")
        })
    }
}

pub(crate) fn report(cmd: &str, subject: &str, r: &Result<Response, String>) -> bool {
    match r {
        Ok(Response {
            reply: Reply::Deny { reason },
            ..
        }) => {
            say(&format!("{cmd} {subject} DENY {reason}"));
            false
        }
        Ok(_) => true,
        Err(e) => {
            say(&format!("{cmd} {subject} DENY {e}"));
            false
        }
    }
}

fn run(w: &mut Worker, arg: &str) {
    let (cmd, rest) = arg.split_once(':').unwrap_or((arg, ""));
    match cmd {
        "read" => requests::read(w, rest),
        "write" | "wfd" => requests::write(w, cmd, rest),
        "list" | "exec" => requests::with_data(w, cmd, rest),
        "net" => requests::net(w, rest),
        "stdout" => requests::stdout(w, rest),
        "stream" => requests::stream(w, rest),
        "sleep" => std::thread::sleep(Duration::from_millis(rest.parse().unwrap_or(0))),
        "bench-read" => bench_read(w, rest),
        "bench-deny" => bench_deny(w, rest),
        "garbage-ctl" => match garbage_ctl() {
            Ok(s) => say(&format!("garbage-ctl - DONE {s}")),
            Err(e) => say(&format!("garbage-ctl - ERROR {e}")),
        },
        "ctl-exit" => match ctl_exit(rest) {
            Ok(()) => say(&format!("ctl-exit {rest} DONE")),
            Err(e) => say(&format!("ctl-exit {rest} ERROR {e}")),
        },
        "burst-stop" => match burst_stop(rest) {
            Ok(()) => say(&format!("burst-stop {rest} DONE")),
            Err(e) => say(&format!("burst-stop {rest} ERROR {e}")),
        },
        "hold" => match hold(rest) {
            Ok(s) => say(&format!("hold {rest} DONE {s}")),
            Err(e) => say(&format!("hold {rest} ERROR {e}")),
        },
        "garbage-ring" => match garbage_ring() {
            Ok(s) => say(&format!("garbage-ring - DONE {s}")),
            Err(e) => say(&format!("garbage-ring - ERROR {e}")),
        },
        _ => say(&format!("{cmd} {rest} ERROR unknown command")),
    }
}

fn main() {
    let mut w = Worker { client: None };
    for arg in std::env::args().skip(1) {
        run(&mut w, &arg);
    }
    if let Some(c) = w.client.take() {
        let _ = c.close();
    }
}
