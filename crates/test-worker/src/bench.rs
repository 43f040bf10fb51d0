//! `bench-read` / `bench-deny`: broker round trips timed from inside the
//! container, for benches/broker.rs.

use std::fs::File;
use std::io::Read;
use std::time::Duration;

use buntime_ipc::{Reply, Request, Response};

use crate::{say, Worker};

/// `bench-read:PATH:N`: N allowed FS_READ round trips through the broker
/// (request, decision, fd passed, file read), then N direct opens and
/// reads of the same file; prints p50/p99 of each in microseconds.
pub(crate) fn bench_read(w: &mut Worker, rest: &str) {
    let (path, n) = rest.rsplit_once(':').unwrap_or((rest, "1000"));
    let n: usize = n.parse().unwrap_or(1000).max(1);
    let mut broker = Vec::with_capacity(n);
    let mut buf = Vec::new();
    for _ in 0..n {
        let start = std::time::Instant::now();
        let r = w.request(&Request::FsRead {
            path: path.as_bytes().to_vec(),
        });
        let fd = match r {
            Ok(Response {
                reply: Reply::Deny { reason },
                ..
            }) => {
                return say(&format!("bench-read {path} DENY {reason}"));
            }
            Ok(resp) => resp.fd,
            Err(e) => return say(&format!("bench-read {path} DENY {e}")),
        };
        buf.clear();
        if let Some(fd) = fd {
            let _ = File::from(fd).read_to_end(&mut buf);
        }
        broker.push(start.elapsed());
    }
    let mut direct = Vec::with_capacity(n);
    for _ in 0..n {
        let start = std::time::Instant::now();
        buf.clear();
        if let Ok(mut f) = File::open(path) {
            let _ = f.read_to_end(&mut buf);
        }
        direct.push(start.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i.min(v.len() - 1)].as_secs_f64() * 1e6
    };
    say(&format!(
        "bench-read {path} RESULT broker_p50_us={:.1} broker_p99_us={:.1} direct_p50_us={:.1} direct_p99_us={:.1} n={n}",
        pct(&mut broker, 0.5),
        pct(&mut broker, 0.99),
        pct(&mut direct, 0.5),
        pct(&mut direct, 0.99)
    ));
}

/// `bench-deny:PATH:N`: N FS_READ round trips the supervisor refuses
/// (request, decision, audit line, DENY reply); prints p50/p99 in
/// microseconds.
pub(crate) fn bench_deny(w: &mut Worker, rest: &str) {
    let (path, n) = rest.rsplit_once(':').unwrap_or((rest, "1000"));
    let n: usize = n.parse().unwrap_or(1000).max(1);
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let start = std::time::Instant::now();
        match w.request(&Request::FsRead {
            path: path.as_bytes().to_vec(),
        }) {
            Ok(Response {
                reply: Reply::Deny { .. },
                ..
            }) => took.push(start.elapsed()),
            Ok(_) => return say(&format!("bench-deny {path} ERROR granted")),
            Err(e) => return say(&format!("bench-deny {path} ERROR {e}")),
        }
    }
    took.sort();
    let at = |p: f64| {
        let i = ((took.len() - 1) as f64 * p).round() as usize;
        took[i.min(took.len() - 1)].as_secs_f64() * 1e6
    };
    say(&format!(
        "bench-deny {path} RESULT deny_p50_us={:.2} deny_p99_us={:.2} n={n}",
        at(0.5),
        at(0.99)
    ));
}
