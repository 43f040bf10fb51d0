//! Accepting the proxy's connections: the thread that accepts a
//! connection handles it, after handing the accepting on to another
//! thread when no other is accepting (leader/follower); a thread done with
//! its connection goes back to accepting while fewer than two do, so that
//! one-at-a-time connections need no hand-off at all. Handing the
//! connection itself to a parked thread put a second wake-up, on a host
//! whose CPUs are busy often the longest step, into every connection's
//! set-up; the hand-off of the accepting runs while the connection is
//! already being served.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::http::answer;
use super::tally::{audit_turned_away, Unrecorded};
use super::{handle, pool, Gate, Limits, Tally};

/// Threads kept in `accept` when the proxy is idle: one takes the next
/// connection, the other the one after without being woken for it.
const SPARE_ACCEPTORS: usize = 2;

/// One proxy's listener and what its connections share.
struct Serving {
    listener: TcpListener,
    gate: Arc<dyn Gate>,
    limits: Limits,
    tally: Arc<Tally>,
    /// Connections being served.
    open: AtomicUsize,
    /// Threads in `accept` (or about to be).
    accepting: AtomicUsize,
}

/// Accepts and serves connections until the process exits or
/// [`Tally::stop`]; `tally` is what the supervisor waits for before it
/// exits.
pub fn serve(listener: TcpListener, gate: Arc<dyn Gate>, limits: Limits, tally: Arc<Tally>) {
    if let Ok(a) = listener.local_addr() {
        let _ = tally.subject.set(a.to_string());
    }
    audit_turned_away(&gate, &tally);
    let sv = Arc::new(Serving {
        listener,
        gate,
        limits,
        tally,
        open: AtomicUsize::new(0),
        accepting: AtomicUsize::new(0),
    });
    accept_loop(&sv, true, false);
}

/// Accepts and handles connections. The caller's thread (`home`) returns
/// only when the proxy stops; a pooled one also once it has handled a
/// connection while [`SPARE_ACCEPTORS`] others accept. Some thread is
/// always in `accept`: the one that takes a connection when no other is
/// accepting starts another before it handles it.
///
/// `reserved`: this thread's place among the accepting is counted already.
fn accept_loop(sv: &Arc<Serving>, home: bool, mut reserved: bool) {
    loop {
        if !std::mem::take(&mut reserved) {
            sv.accepting.fetch_add(1, Ordering::SeqCst);
        }
        let accepted = sv.listener.accept();
        let others = sv.accepting.fetch_sub(1, Ordering::SeqCst) - 1;
        if sv.tally.stopped() {
            return;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(target: "supervisor", "proxy accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if let Some((stream, slot, unrecorded)) = admit(sv, stream, others) {
            handle(stream, sv.gate.as_ref(), &sv.limits, unrecorded);
            drop(slot);
        }
        // Back to accepting unless two threads already are: with one
        // waiting while another takes a connection, the next connection
        // finds a thread in `accept` and no hand-off wakes one for it.
        // The place is taken in one step: threads finishing together must
        // not all see fewer than two and all go back.
        if !home {
            let place = sv
                .accepting
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| {
                    (a < SPARE_ACCEPTORS).then_some(a + 1)
                });
            match place {
                Ok(_) => reserved = true,
                Err(_) => return,
            }
        }
    }
}

/// Whether `stream` is served: the gate admits its client, a slot is free
/// and (`others`: no other thread is accepting) another thread takes over
/// accepting. Answers and closes it when not.
fn admit(
    sv: &Arc<Serving>,
    stream: TcpStream,
    others: usize,
) -> Option<(TcpStream, Slot, Unrecorded)> {
    let tally = &sv.tally;
    // Before a slot is taken: a client the gate refuses costs the
    // sandbox's clients nothing but this check.
    if let Err(reason) = sv.gate.admit(&stream) {
        // Counted before the answer, as those turned away are.
        tally.refuse_client(reason.clone());
        turn_away(stream, &reason);
        return None;
    }
    if sv.open.fetch_add(1, Ordering::SeqCst) >= sv.limits.max_connections {
        sv.open.fetch_sub(1, Ordering::SeqCst);
        // Counted before the answer: a flush after the client has its
        // answer includes it.
        tally.turned_away.fetch_add(1, Ordering::SeqCst);
        let mut s = stream;
        answer(&mut s, 503, None, "buntime proxy: too many connections");
        return None;
    }
    let slot = Slot(Arc::clone(sv));
    if others == 0 {
        let next = Arc::clone(sv);
        // Counted at once, so that this thread, done before the new one
        // runs, does not take itself for the last and leave.
        sv.accepting.fetch_add(1, Ordering::SeqCst);
        let started = pool::THREADS.run(Box::new(move || accept_loop(&next, false, true)));
        if let Err(e) = started {
            sv.accepting.fetch_sub(1, Ordering::SeqCst);
            // Handled here, no one would accept meanwhile: closed
            // unanswered, audited with those turned away.
            tally.turned_away.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(target: "supervisor", "proxy thread: {e}");
            return None;
        }
    }
    Some((stream, slot, Unrecorded::new(tally)))
}

/// Answers a refused client `403` and closes at once, never waiting on it:
/// what it already sent is read without blocking, so the close sends no
/// reset over the answer in the usual case.
fn turn_away(mut client: TcpStream, reason: &str) {
    let _ = client.set_nonblocking(true);
    let mut sink = [0u8; 4096];
    let _ = client.read(&mut sink);
    answer(&mut client, 403, None, &format!("buntime proxy: {reason}"));
    let _ = client.shutdown(std::net::Shutdown::Write);
}

/// A connection being served, counted against the limit until dropped.
struct Slot(Arc<Serving>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}
