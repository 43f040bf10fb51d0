//! What the proxy counts rather than audits line by line: connections
//! turned away at the limit or refused at admission, and those whose own
//! line is not written yet when the supervisor exits.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::{Attempt, Gate};
use crate::audit::Verdict;
use crate::policy::RuleRef;

/// What the supervisor follows of its proxy before it exits: connections
/// whose audit line is not written yet, and connections turned away at the
/// limit that are not audited yet.
#[derive(Debug, Default)]
pub struct Tally {
    unrecorded: AtomicUsize,
    pub(super) turned_away: AtomicU64,
    /// Clients the gate refused at admission (`Gate::admit`) since the
    /// last flush, and the last one's reason.
    refused: AtomicU64,
    last_refused: Mutex<String>,
    /// The proxy's address: the subject of the lines written in aggregate.
    pub(super) subject: OnceLock<String>,
    /// Set when the proxy is to stop accepting ([`Tally::stop`]): the
    /// accept loop and the once-a-second auditor end.
    stopped: AtomicBool,
    /// Held from taking the turned-away count to writing its line, so a
    /// flush at exit waits for one under way.
    flushing: Mutex<()>,
}

impl Tally {
    /// Asks the proxy to stop accepting: `serve` returns at its next
    /// accept error or connection (the owner of the listener shuts it
    /// down to wake the accept: `proxy::serve` retries other errors).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Whether [`Tally::stop`] was called.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Accepted connections whose audit line is not written yet.
    pub fn unrecorded(&self) -> usize {
        self.unrecorded.load(Ordering::SeqCst)
    }

    /// A client refused at admission: counted, and audited with the others
    /// in one line a second at most, whatever the rate (any local user can
    /// connect to the learning proxy: a line each would use the log's quota
    /// up and crowd out the sandbox's own records).
    pub(super) fn refuse_client(&self, reason: String) {
        *self.last_refused.lock().unwrap_or_else(|p| p.into_inner()) = reason;
        self.refused.fetch_add(1, Ordering::SeqCst);
    }

    /// Audits the connections turned away and the clients refused since
    /// the last call, one line each with their count (none when there were
    /// none).
    pub fn flush_turned_away(&self, gate: &dyn Gate) {
        let _flushing = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.turned_away.swap(0, Ordering::SeqCst);
        if n > 0 {
            let reason = format!("too many connections ({n} turned away)");
            self.record_aggregate(gate, Verdict::Deny, RuleRef::ProxyLimits, reason);
        }
        let n = self.refused.swap(0, Ordering::SeqCst);
        if n > 0 {
            // Kept, not taken: one counted after this swap may have set it.
            let last = self
                .last_refused
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let reason = format!("{n} connection(s) refused (last: {last})");
            self.record_aggregate(gate, Verdict::Deny, RuleRef::Proxy, reason);
        }
    }

    /// When the supervisor exits: one line for the connections whose own
    /// line was not written in time (still deciding, connecting or
    /// relaying when the container ended).
    pub fn record_unfinished(&self, gate: &dyn Gate) {
        let n = self.unrecorded();
        if n > 0 {
            let reason = format!("connections still open when the container ended: {n}");
            self.record_aggregate(gate, Verdict::Close, RuleRef::Proxy, reason);
        }
    }

    fn record_aggregate(&self, gate: &dyn Gate, decision: Verdict, rule: RuleRef, reason: String) {
        gate.record(&Attempt {
            target: self.subject.get().cloned().unwrap_or_default(),
            addr: None,
            decision,
            rule,
            reason,
            bytes_up: 0,
            bytes_down: 0,
            decide: Duration::ZERO,
            duration: Duration::ZERO,
        });
    }
}

/// A connection not audited yet; counted in `Tally::unrecorded` until
/// dropped, which `handle` does once the line is written.
pub(super) struct Unrecorded(Arc<Tally>);

impl Unrecorded {
    pub(super) fn new(tally: &Arc<Tally>) -> Unrecorded {
        tally.unrecorded.fetch_add(1, Ordering::SeqCst);
        Unrecorded(Arc::clone(tally))
    }
}

impl Drop for Unrecorded {
    fn drop(&mut self) {
        self.0.unrecorded.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Connections turned away at the limit are audited once a second, as one
/// line with their count, by a thread of their own: the accept loop never
/// waits on the audit log, and a sandbox reconnecting in a loop adds a
/// line a second, not one per connect (which would rotate its own trail
/// out of the log). The supervisor flushes what is left when it exits.
pub(super) fn audit_turned_away(gate: &Arc<dyn Gate>, tally: &Arc<Tally>) {
    let (gate, tally) = (Arc::clone(gate), Arc::clone(tally));
    let spawned = std::thread::Builder::new()
        .name("proxy-limit".into())
        .stack_size(64 << 10)
        .spawn(move || {
            while !tally.stopped() {
                std::thread::sleep(Duration::from_secs(1));
                tally.flush_turned_away(gate.as_ref());
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(target: "supervisor", "proxy: connections turned away will not be audited: {e}");
    }
}
