//! The supervisor's side of the egress proxy: binding it in the
//! container's network namespace (or taking the socket a rootless
//! container's hook bound there), and the gate that decides with the same
//! rules as the broker's NET_CONNECT (`requests::net_check`) and audits every
//! connection attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::requests::net_check;
use super::{Ctx, SupervisorError};
use crate::audit::Verdict;
use crate::proxy::{self, Attempt, Gate, Granted, Limits, Refused, PROXY_PORT};

struct ProxyGate(Arc<Ctx>, Throttle);

/// At most `per_second` log lines a second; the audit log has every
/// refusal, and the sandbox decides how many there are.
struct Throttle {
    per_second: u32,
    state: Mutex<(Instant, u32, u64)>,
}

impl Throttle {
    fn new(per_second: u32) -> Throttle {
        Throttle {
            per_second,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were
    /// held back since the last one; `None` to hold this one back.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut st = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let (start, count, held) = &mut *st;
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_second {
            *held += 1;
            return None;
        }
        *count += 1;
        Some(std::mem::take(held))
    }
}

impl Gate for ProxyGate {
    fn check(&self, host: &str, port: u16) -> Result<Granted, Refused> {
        // The proxy's peer is a TCP connection: no pid to report.
        net_check(&self.0, 0, host, port).map(|(addrs, rule)| Granted { addrs, rule })
    }

    fn connect(
        &self,
        addrs: &[std::net::SocketAddr],
        timeout: Duration,
    ) -> Result<(std::net::TcpStream, std::net::SocketAddr), proxy::ConnectFailed> {
        match &self.0.pod {
            Some(pod) => pod.connect(addrs, timeout),
            None => proxy::connect_any(addrs, timeout),
        }
    }

    fn record(&self, a: &Attempt) {
        let ctx = &self.0;
        let r = a.audit_record(&ctx.id);
        if a.decision != Verdict::Allow {
            // "error": allowed, but upstream failed; the reason says how.
            let what = if a.decision == Verdict::Error {
                "proxy could not reach"
            } else {
                "proxy refused"
            };
            let target = if a.target.is_empty() {
                "a connection"
            } else {
                a.target.as_str()
            };
            match self.1.admit(Instant::now()) {
                Some(0) => tracing::warn!(target: "supervisor", container = %ctx.id,
                    "{what} {target}: {}", a.reason),
                Some(held) => tracing::warn!(target: "supervisor", container = %ctx.id,
                    "{what} {target}: {} ({held} lines before it not logged here; see audit.log)",
                    a.reason),
                None => {}
            }
        }
        ctx.audit.record(&r);
    }
}

/// The running proxy, as the supervisor winds down.
pub(super) struct Egress {
    tally: Arc<proxy::Tally>,
    gate: Arc<dyn Gate>,
}

impl Egress {
    /// Once the container is gone: lets connections write their audit
    /// lines until `until` at most, then audits those turned away at the
    /// limit that are not yet.
    pub(super) fn wind_down(&self, until: Instant) {
        while self.tally.unrecorded() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.tally.flush_turned_away(self.gate.as_ref());
        self.tally.record_unfinished(self.gate.as_ref());
    }
}

/// Binds the proxy inside the container's network namespace and serves it
/// on a thread of its own.
/// A rootless container's hook has bound it already (`bound`).
pub(super) fn start(
    ctx: &Arc<Ctx>,
    init_pid: i32,
    bound: Option<std::net::TcpListener>,
) -> Result<Egress, SupervisorError> {
    let listener = match bound {
        Some(l) => l,
        None => proxy::bind_in_netns(init_pid, PROXY_PORT).map_err(|e| {
            SupervisorError::Setup(format!(
                "proxy: bind 127.0.0.1:{PROXY_PORT} in the container's network namespace: {e}"
            ))
        })?,
    };
    let gate: Arc<dyn Gate> = Arc::new(ProxyGate(Arc::clone(ctx), Throttle::new(20)));
    let tally = Arc::new(proxy::Tally::default());
    let (g, t) = (Arc::clone(&gate), Arc::clone(&tally));
    std::thread::Builder::new()
        .name("proxy-accept".into())
        .spawn(move || proxy::serve(listener, g, Limits::default(), t))
        .map_err(|e| SupervisorError::Setup(format!("proxy thread: {e}")))?;
    Ok(Egress { tally, gate })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_lines_are_throttled_and_the_held_ones_counted() {
        let t = Throttle::new(3);
        let t0 = Instant::now();
        let got: Vec<Option<u64>> = (0..6).map(|_| t.admit(t0)).collect();
        assert_eq!(got, [Some(0), Some(0), Some(0), None, None, None]);
        // The next second: the first line says how many were held back.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(t.admit(t1), Some(3));
        assert_eq!(t.admit(t1), Some(0));
    }
}
