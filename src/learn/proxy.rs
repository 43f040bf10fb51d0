//! The learning proxy of `buntime run --learn` (docs/learn.md, "Hosts by
//! name"): the learned run has the host's network, so the seccomp observer
//! sees only addresses; a proxy offered through the proxy variables sees
//! the names proxy-aware clients ask for. It lets every public host
//! through (the learned run is not sandboxed by network rules), but not an
//! internal address the base policy does not allow (loopback, private,
//! link-local, metadata, the host's own: learning would never grant one),
//! and connects upstream with the sandbox's uid and gid, so uid-owner
//! egress rules see the sandbox, not `buntime run`'s root. It audits each
//! request as the egress proxy does; learning reads the names from those
//! records.
//!
//! It listens on the host's loopback, so it serves only the sandbox: a
//! client's socket must be a live one owned by the sandbox's uid
//! ([`socket_uid`], one exact sock_diag lookup).
//! As root that uid is the run's own (`deputy::ids`), which no other
//! process has; rootless it is the caller's, whose other processes could
//! reach every host as that uid anyway.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use super::sock_owner::socket_uid;
use crate::audit::{AuditLog, AuditRecord, Kind, Verdict};
use crate::deputy::creds::SandboxCreds;
use crate::learn::observe::Event;
use crate::policy::{HostAddrs, Policy, RuleRef};
use crate::proxy::{connect_any, Attempt, ConnectFailed, Gate, Granted, Limits, Refused, Tally};

/// Smaller than the egress proxy's: its threads are `buntime run`'s, not
/// charged to the sandbox's cgroup (docs/learn.md).
const LIMITS: Limits = Limits {
    max_connections: 64,
    connect_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(60),
    head_timeout: Duration::from_secs(10),
};

/// The learning proxy, bound (its port goes into the run's environment)
/// and not serving yet.
pub struct LearningProxy {
    listener: TcpListener,
    addr: SocketAddr,
}

impl LearningProxy {
    /// Binds 127.0.0.1 on a free port of the host's loopback.
    pub fn bind() -> io::Result<LearningProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        Ok(LearningProxy { listener, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves on a thread of its own, for clients owned by the sandbox's
    /// host `ids` (uid, gid), auditing to `audit` as sandbox `id`;
    /// internal addresses only as far as `base` allows them.
    pub fn serve(
        self,
        audit: AuditLog,
        id: &str,
        ids: (u32, u32),
        base: Policy,
    ) -> io::Result<Serving> {
        // As root the sandbox is another uid: upstream sockets are made as
        // it. Rootless the proxy is the sandbox's uid already (and may not
        // call setgroups).
        let upstream_as = (nix::unistd::geteuid().as_raw() != ids.0).then(|| SandboxCreds {
            uid: ids.0,
            gid: ids.1,
            groups: vec![],
        });
        let gate = Arc::new(LearnGate {
            audit,
            id: id.to_string(),
            uid: ids.0,
            upstream_as,
            own: HostAddrs::read().unwrap_or_default(),
            base,
        });
        let tally = Arc::new(Tally::default());
        // To wake the accept when it stops (the same socket).
        let listener = self.listener.try_clone()?;
        let g: Arc<dyn Gate> = Arc::clone(&gate) as Arc<dyn Gate>;
        let (t, l) = (Arc::clone(&tally), self.listener);
        std::thread::Builder::new()
            .name("learn-proxy".into())
            .spawn(move || crate::proxy::serve(l, g, LIMITS, t))?;
        Ok(Serving {
            tally,
            gate,
            listener,
        })
    }
}

/// The learning proxy serving; it stops accepting when dropped (or wound
/// down), not only when `buntime` exits.
pub struct Serving {
    tally: Arc<Tally>,
    gate: Arc<LearnGate>,
    listener: TcpListener,
}

impl Serving {
    /// Stops accepting: new connections are refused by the kernel, and
    /// the accept thread ends (connections being served go on).
    pub fn stop(&self) {
        if self.tally.stopped() {
            return;
        }
        self.tally.stop();
        // A listening socket shut down for reading stops listening and
        // wakes its accept with an error, which the loop now ends on.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.listener);
        if let Err(e) = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Read) {
            tracing::warn!(target: "learn", "stop the learning proxy: {e}");
        }
    }

    /// Once the sandbox is gone: stops accepting, lets connections write
    /// their audit lines until `until` at most, then audits what is left
    /// (as the supervisor's egress proxy does).
    pub fn wind_down(&self, until: Instant) {
        self.stop();
        while self.tally.unrecorded() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.tally.flush_turned_away(self.gate.as_ref());
        self.tally.record_unfinished(self.gate.as_ref());
        // What the quota dropped, summed up by kind.
        self.gate.audit.finish(&self.gate.id);
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop();
    }
}

struct LearnGate {
    audit: AuditLog,
    id: String,
    uid: u32,
    /// Whose credentials upstream sockets are made with (`None`: the
    /// proxy's own are the sandbox's).
    upstream_as: Option<SandboxCreds>,
    /// The host's own addresses, read when the proxy starts.
    own: HostAddrs,
    /// The base policy, which alone lets an internal address through.
    base: Policy,
}

impl Gate for LearnGate {
    fn admit(&self, client: &TcpStream) -> Result<(), String> {
        let (peer, local) = (client.peer_addr(), client.local_addr());
        let (Ok(peer), Ok(local)) = (peer, local) else {
            return Err("a connection whose addresses are gone: refused".into());
        };
        match socket_uid(peer, local) {
            Some(u) if u == self.uid => Ok(()),
            Some(u) => Err(format!(
                "a connection from {peer} (uid {u}) is not the sandbox's (uid {}): the learning proxy serves only its sandbox",
                self.uid
            )),
            None => Err(format!(
                "a connection from {peer} whose socket's owner is not known: the learning proxy serves only its sandbox"
            )),
        }
    }

    fn check(&self, host: &str, port: u16) -> Result<Granted, Refused> {
        let refused = |reason: String| Refused {
            rule: RuleRef::Learning,
            reason,
            addr: None,
        };
        match (host, port).to_socket_addrs() {
            Ok(a) => {
                let addrs: Vec<SocketAddr> = a.collect();
                if addrs.is_empty() {
                    return Err(refused(format!("{host} has no address")));
                }
                self.internal_refusal(host, port, &addrs)?;
                Ok(Granted {
                    addrs,
                    rule: RuleRef::Learning,
                })
            }
            Err(e) => Err(refused(format!("cannot resolve {host}: {e}"))),
        }
    }

    /// The socket's owner, which uid-owner egress rules (iptables, nft
    /// `skuid`, `ip rule uidrange`) match, is the creating thread's fsuid
    /// at `socket()`: made inside the guard, it is the sandbox's.
    fn connect(
        &self,
        addrs: &[SocketAddr],
        timeout: Duration,
    ) -> Result<(TcpStream, SocketAddr), ConnectFailed> {
        let Some(creds) = &self.upstream_as else {
            return connect_any(addrs, timeout);
        };
        let _as_sandbox = creds.assume().map_err(|e| ConnectFailed {
            error: io::Error::other(format!("cannot take the sandbox's credentials: {e}")),
            addr: None,
        })?;
        connect_any(addrs, timeout)
    }

    fn record(&self, a: &Attempt) {
        self.audit.record(&a.audit_record(&self.id));
    }
}

impl LearnGate {
    /// Refuses a name or address any of whose addresses is internal and
    /// not allowed by the base (every address: enforcement checks each
    /// one a name resolves to, so the learned policy would not reach it).
    fn internal_refusal(&self, host: &str, port: u16, addrs: &[SocketAddr]) -> Result<(), Refused> {
        for a in addrs {
            if let Some(what) = super::generalise::internal(&self.base, &self.own, *a, false) {
                return Err(Refused {
                    rule: RuleRef::Learning,
                    reason: format!(
                        "{host}:{port} resolves to {a}, {what}: the learning proxy lets it through only when the base policy allows it (--allow-net={a})"
                    ),
                    addr: Some(*a),
                });
            }
        }
        Ok(())
    }
}

/// The hosts the learning proxy was asked for, by name, with the address
/// it reached (or refused as internal) for each (its own records only:
/// rule `learn`). A request whose upstream then failed counts (the name
/// resolved, the run asked for it); one whose name did not resolve does
/// not.
pub fn hosts_asked(records: &[AuditRecord]) -> Vec<Event> {
    records
        .iter()
        .filter(|r| r.kind == Kind::Proxy && r.rule == RuleRef::Learning)
        .filter(|r| matches!(r.decision, Verdict::Allow | Verdict::Error | Verdict::Deny))
        .filter_map(proxied_event)
        .filter(|e| matches!(e, Event::Proxied { .. }))
        .collect()
}

/// What a proxy's (or a connect's) audit record says the run asked for:
/// the host with the address it reached or was refused (`Proxied`), the
/// host alone when the record has no address (`Host`), nothing when it
/// names no host. Its kind and decision are the caller's to judge.
pub(crate) fn proxied_event(r: &AuditRecord) -> Option<Event> {
    if r.subject.is_empty() {
        return None;
    }
    let host = r.subject.clone();
    Some(match r.addr.as_deref().and_then(|a| a.parse().ok()) {
        Some(addr) => Event::Proxied { host, addr },
        None => Event::Host(host),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learning_proxy_stops_accepting_when_wound_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&dir.path().join("audit.log")).expect("log");
        let proxy = LearningProxy::bind().expect("bind");
        let addr = proxy.addr();
        let ids = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let serving = proxy
            .serve(log, "t", ids, Policy::default())
            .expect("serve");
        // Served: an answer comes (a bad request, but an answer).
        let mut c = TcpStream::connect(addr).expect("connect");
        std::io::Write::write_all(&mut c, b"BAD\r\n\r\n").expect("send");
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut c, &mut answer);
        assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
        serving.wind_down(Instant::now());
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn only_the_learning_proxys_resolved_requests_are_hosts() {
        let rec = |rule: RuleRef, d: Verdict, addr: Option<&str>| {
            let mut r = AuditRecord::new("run-1", 0, Kind::Proxy, "example.org:443");
            r.rule = rule;
            r.decision = d;
            r.addr = addr.map(str::to_string);
            r
        };
        let got = hosts_asked(&[
            rec(RuleRef::Learning, Verdict::Allow, Some("203.0.113.5:443")),
            rec(RuleRef::Learning, Verdict::Deny, None),
            rec(RuleRef::Proxy, Verdict::Allow, Some("203.0.113.6:443")),
        ]);
        assert_eq!(
            got,
            vec![Event::Proxied {
                host: "example.org:443".into(),
                addr: "203.0.113.5:443".parse().unwrap()
            }]
        );
    }
}
