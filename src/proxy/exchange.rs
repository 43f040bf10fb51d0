//! The start of a tunnel's relay, on the connection's own thread: both
//! directions with `poll`, while the exchange is small. Handing the second
//! direction to a pooled thread at once put a wake-up of that thread (on
//! this VM, of a halted vCPU: tens of µs) into every connection's set-up;
//! most connections' first exchanges are a few small messages each way.
//! The relay leaves this loop for its two threads (super::relay) as soon
//! as the exchange is not small: a read that fills the buffer, a write
//! the destination cannot take at once, or a quiet tick (the idle timeout
//! is then kept by the threads, on the shared clock).

use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

use super::relay::{source_ended, Idle};

/// One direction's state when the loop leaves it.
#[derive(Default)]
pub(super) struct Way {
    /// Its source ended (EOF passed on, or a failure passed on as a reset).
    pub done: bool,
    /// Bytes moved.
    pub moved: u64,
    /// Read but not yet written: the first thing its thread writes.
    pub pending: Vec<u8>,
}

/// A read this size is a bulk transfer: left to the threads.
const BUFFER: usize = 64 << 10;

thread_local! {
    /// The buffer of the last exchange on this thread that ended in this
    /// loop, for the next: zeroing a fresh one was a visible part of a
    /// small connection's set-up. One that goes on to the threads is
    /// freed rather than kept through a long transfer.
    static SPARE: std::cell::Cell<Option<Vec<u8>>> = const { std::cell::Cell::new(None) };
}

/// What a readable source led to.
enum Step {
    Go,
    Done,
    /// Not small any more: on to the threads.
    Leave,
}

/// Relays `client` ↔ `upstream` while the exchange is small; `ways[0]` is
/// client → upstream, `ways[1]` the other. Returns when both are done or
/// the threads must take over.
pub(super) fn small(client: &TcpStream, upstream: &TcpStream, idle: &Idle, ways: &mut [Way; 2]) {
    let mut buf = SPARE.take().unwrap_or_else(|| vec![0u8; BUFFER]);
    small_with(client, upstream, idle, ways, &mut buf);
    if ways[0].done && ways[1].done {
        SPARE.set(Some(buf));
    }
}

fn small_with(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: &Idle,
    ways: &mut [Way; 2],
    buf: &mut [u8],
) {
    let tick = PollTimeout::try_from(idle.tick()).unwrap_or(PollTimeout::MAX);
    let ends = [(client, upstream), (upstream, client)];
    while !(ways[0].done && ways[1].done) {
        let mut ready = [false; 2];
        // The directions not done, without an allocation per round.
        let (idx, n): ([usize; 2], usize) = match (ways[0].done, ways[1].done) {
            (false, false) => ([0, 1], 2),
            (true, _) => ([1, 1], 1),
            (false, true) => ([0, 0], 1),
        };
        let mut all = idx.map(|i| PollFd::new(ends[i].0.as_fd(), PollFlags::POLLIN));
        let fds = &mut all[..n];
        match poll(fds, tick) {
            Ok(0) => return, // quiet: the threads keep the idle timeout
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
        for (&i, f) in idx[..n].iter().zip(fds.iter()) {
            ready[i] = f.revents().is_some_and(|r| !r.is_empty());
        }
        for i in 0..2 {
            if !ready[i] {
                continue;
            }
            let (src, dst) = ends[i];
            match step(src, dst, idle, buf, &mut ways[i]) {
                Step::Go => {}
                Step::Done => ways[i].done = true,
                Step::Leave => return,
            }
        }
    }
}

/// One read from a readable `src` and its write to `dst`, neither
/// blocking; ends as the threads' copy loop does (super::relay::pump).
fn step(src: &TcpStream, dst: &TcpStream, idle: &Idle, buf: &mut [u8], way: &mut Way) -> Step {
    let n = match recv(src.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
        Ok(0) => {
            source_ended(false, dst, idle);
            return Step::Done;
        }
        Ok(n) => n,
        Err(Errno::EINTR) => return Step::Go,
        // Ready and yet nothing: never loop on it here; the threads'
        // blocking reads (with their idle timeout) take over.
        Err(Errno::EAGAIN) => return Step::Leave,
        // The source failed (its peer reset): a reset for the other end.
        Err(_) => {
            source_ended(true, dst, idle);
            return Step::Done;
        }
    };
    idle.touch();
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    // A write that fails is left to the thread too: it writes `pending`
    // first, fails the same way, and ends as a failed write does there.
    let wrote = send(dst.as_raw_fd(), &buf[..n], flags).unwrap_or_default();
    way.moved += wrote as u64;
    if wrote < n {
        way.pending = buf[wrote..n].to_vec();
        return Step::Leave;
    }
    idle.touch();
    if n == buf.len() {
        return Step::Leave;
    }
    Step::Go
}
