//! The supervisor's side of the egress proxy: binding it in the
//! container's network namespace (or taking the socket a rootless
//! container's hook bound there), and the gate that decides with the same
//! rules as the broker's NET_CONNECT (`serve::net_check`) and audits every
//! connection attempt.

use std::sync::Arc;

use super::serve::{net_check, Outcome};
use super::{record, Ctx, SupervisorError};
use crate::proxy::{self, Attempt, Gate, Granted, Limits, Refused, PROXY_PORT};

struct ProxyGate(Arc<Ctx>);

impl Gate for ProxyGate {
    fn check(&self, host: &str, port: u16) -> Result<Granted, Refused> {
        // The proxy's peer is a TCP connection: no pid to report.
        match net_check(&self.0, 0, host, port) {
            Ok((addrs, rule)) => Ok(Granted { addrs, rule }),
            Err(Outcome::Deny { rule, reason }) => Err(Refused { rule, reason }),
            Err(Outcome::Allow { .. }) => Err(Refused {
                rule: "default".into(),
                reason: "internal error".into(),
            }),
        }
    }

    fn record(&self, a: &Attempt) {
        let ctx = &self.0;
        let mut r = record(ctx, 0, "proxy", a.target.clone());
        r.decision = a.decision.into();
        r.rule = a.rule.clone();
        r.reason = a.reason.clone();
        r.latency_us = a.decide.as_micros() as u64;
        r.bytes = a.bytes_up + a.bytes_down;
        r.addr = a.addr.map(|x| x.to_string());
        r.bytes_up = Some(a.bytes_up);
        r.bytes_down = Some(a.bytes_down);
        r.duration_ms = Some(a.duration.as_millis() as u64);
        if a.decision != "allow" {
            tracing::warn!(target: "supervisor", container = %ctx.id,
                "proxy refused {}: {}", a.target, a.reason);
        }
        ctx.audit.record(&r);
    }
}

/// Binds the proxy inside the container's network namespace and serves it
/// on a thread of its own.
/// A rootless container's hook has bound it already (`bound`).
pub(super) fn start(
    ctx: &Arc<Ctx>,
    init_pid: i32,
    bound: Option<std::net::TcpListener>,
) -> Result<(), SupervisorError> {
    let listener = match bound {
        Some(l) => l,
        None => proxy::bind_in_netns(init_pid, PROXY_PORT).map_err(|e| {
            SupervisorError::Setup(format!(
                "proxy: bind 127.0.0.1:{PROXY_PORT} in the container's network namespace: {e}"
            ))
        })?,
    };
    let gate: Arc<dyn Gate> = Arc::new(ProxyGate(Arc::clone(ctx)));
    std::thread::Builder::new()
        .name("proxy-accept".into())
        .spawn(move || proxy::serve(listener, gate, Limits::default()))
        .map_err(|e| SupervisorError::Setup(format!("proxy thread: {e}")))?;
    Ok(())
}
