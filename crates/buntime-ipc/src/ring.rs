//! Single-producer/single-consumer byte ring over a shared mapping.
//!
//! Frames are `[u32 LE length][payload]`, written contiguously modulo the
//! capacity (a frame may wrap around the end of the data region). `head` and
//! `tail` are free-running u32 counters; `head - tail` (wrapping) is the
//! number of bytes in use. The producer publishes `head` once per frame,
//! after the bytes, so a consumer never sees a partial frame from an honest
//! peer: a frame that does not fit in `head - tail` is corruption.
//!
//! Hostile-peer rules (the worker may rewrite any byte at any time):
//! each side keeps its own index in private memory and only *writes* it to
//! the mapping; the peer's index is loaded once per operation and checked
//! against the capacity; the capacity in the mapping is never re-read; every
//! offset is masked, so no access can leave the data region; payloads are
//! copied out before anything parses them.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::error::{IpcError, Result, RingId};
use super::layout::{
    RING_CAPACITY, RING_CONSUMER_WAIT, RING_DATA, RING_HEAD, RING_PRODUCER_WAIT, RING_TAIL,
};
use super::segment::Mapping;
use super::wait::{self, WaitConfig, WAIT_DOORBELL, WAIT_FUTEX};

/// Bytes of the length prefix.
pub const LEN_PREFIX: u32 = 4;

/// A ring inside a mapping. Holds the mapping alive.
pub(crate) struct RingRef {
    _map: Arc<Mapping>,
    hdr: *mut u8,
    data: *mut u8,
    cap: u32,
    id: RingId,
}

// SAFETY: the raw pointers point into the mapping kept alive by `_map`; all
// access to shared words is atomic and byte copies go through raw pointers.
unsafe impl Send for RingRef {}

impl RingRef {
    /// `offset`/`cap` must come from a validated `Layout` for `map`.
    pub(crate) fn new(map: Arc<Mapping>, offset: usize, cap: u32, id: RingId) -> Result<Self> {
        let end = offset
            .checked_add(RING_DATA)
            .and_then(|x| x.checked_add(cap as usize));
        if end.is_none_or(|e| e > map.len()) || !cap.is_power_of_two() || offset & 63 != 0 {
            return Err(IpcError::BadSegment(format!(
                "{id} ring at {offset} with capacity {cap} does not fit the mapping"
            )));
        }
        // SAFETY: offset + RING_DATA + cap <= map.len(), checked above.
        let hdr = unsafe { map.base().add(offset) };
        let data = unsafe { hdr.add(RING_DATA) };
        Ok(RingRef {
            _map: map,
            hdr,
            data,
            cap,
            id,
        })
    }

    /// Another reference to the same ring (the mapping stays alive).
    fn share(&self) -> RingRef {
        RingRef {
            _map: Arc::clone(&self._map),
            hdr: self.hdr,
            data: self.data,
            cap: self.cap,
            id: self.id,
        }
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: off < RING_DATA, 4-aligned, inside the mapping; AtomicU32
        // has the layout of u32 and tolerates concurrent writers.
        unsafe { &*(self.hdr.add(off) as *const AtomicU32) }
    }
    pub(crate) fn head(&self) -> &AtomicU32 {
        self.word(RING_HEAD)
    }
    pub(crate) fn tail(&self) -> &AtomicU32 {
        self.word(RING_TAIL)
    }
    pub(crate) fn consumer_wait(&self) -> &AtomicU32 {
        self.word(RING_CONSUMER_WAIT)
    }
    pub(crate) fn producer_wait(&self) -> &AtomicU32 {
        self.word(RING_PRODUCER_WAIT)
    }
    pub(crate) fn capacity_word(&self) -> &AtomicU32 {
        self.word(RING_CAPACITY)
    }

    fn corrupt(&self, detail: String) -> IpcError {
        IpcError::Corrupt {
            ring: self.id,
            detail,
        }
    }

    /// Copy `dst.len()` bytes starting at counter `pos` out of the ring.
    fn copy_out(&self, pos: u32, dst: &mut [u8]) {
        // SAFETY: dst is valid for dst.len() bytes.
        unsafe { self.copy_out_raw(pos, dst.as_mut_ptr(), dst.len()) }
    }

    /// # Safety
    /// `dst` valid for `len` bytes, `len <= cap`.
    unsafe fn copy_out_raw(&self, pos: u32, dst: *mut u8, len: usize) {
        let idx = (pos & (self.cap - 1)) as usize;
        let first = len.min(self.cap as usize - idx);
        // SAFETY: idx < cap and first <= cap - idx, and len <= cap (all
        // callers check), so both ranges are inside the data region. The
        // peer may write concurrently: we copy raw bytes and validate after.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(idx), dst, first);
            std::ptr::copy_nonoverlapping(self.data, dst.add(first), len - first);
        }
    }

    /// Copy `src` into the ring starting at counter `pos`.
    fn copy_in(&self, pos: u32, src: &[u8]) {
        let idx = (pos & (self.cap - 1)) as usize;
        let first = src.len().min(self.cap as usize - idx);
        // SAFETY: as in copy_out; src.len() <= free space <= cap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(idx), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data, src.len() - first);
        }
    }
}

/// Outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Not enough free space right now; nothing was written.
    Full,
    /// Written. `doorbell`: the consumer asked to be signalled on the control
    /// socket rather than by futex.
    Done { doorbell: bool },
}

/// Writing end of a ring.
pub struct Producer {
    ring: RingRef,
    fast: bool,
    head: u32,
    last_tail: u32,
    max_message: u32,
}

impl Producer {
    pub(crate) fn new(ring: RingRef, start: u32, max_message: u32) -> Self {
        let max_message = max_message.min(ring.cap - LEN_PREFIX);
        Producer {
            ring,
            fast: false,
            head: start,
            last_tail: start,
            max_message,
        }
    }

    /// Publish `head` with a plain store (see wait.rs): only when the
    /// consumer issues membarrier before sleeping and we are registered.
    pub fn set_fast_publish(&mut self, fast: bool) {
        self.fast = fast && wait::membarrier_ok();
    }

    /// Largest payload this ring accepts.
    pub fn max_message(&self) -> u32 {
        self.max_message
    }

    pub fn capacity(&self) -> u32 {
        self.ring.cap
    }

    /// Read the consumer's tail once and return the bytes in use, checking
    /// that the tail moved forward by at most what we have written.
    fn used(&mut self) -> Result<u32> {
        let tail = self.ring.tail().load(Ordering::Acquire);
        let used = self.head.wrapping_sub(tail);
        let outstanding = self.head.wrapping_sub(self.last_tail);
        if used > outstanding {
            return Err(self.ring.corrupt(format!(
                "tail {tail} outside [{}, {}]",
                self.last_tail, self.head
            )));
        }
        self.last_tail = tail;
        Ok(used)
    }

    /// Free bytes right now.
    pub fn free(&mut self) -> Result<u32> {
        Ok(self.ring.cap - self.used()?)
    }

    /// Append one frame whose payload is the concatenation of `parts`.
    pub fn try_push(&mut self, parts: &[&[u8]]) -> Result<Pushed> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 || len > self.max_message as usize {
            return Err(IpcError::TooLarge {
                len,
                max: self.max_message as usize,
            });
        }
        let total = len as u32 + LEN_PREFIX;
        // Read the consumer's tail only when the last one we saw does not
        // leave enough room: the header line then stays with us on the fast
        // path instead of bouncing between the cores.
        let cached_free = self.ring.cap - self.head.wrapping_sub(self.last_tail);
        if cached_free < total && self.ring.cap - self.used()? < total {
            return Ok(Pushed::Full);
        }
        let mut pos = self.head;
        self.ring.copy_in(pos, &(len as u32).to_le_bytes());
        pos = pos.wrapping_add(LEN_PREFIX);
        for p in parts {
            self.ring.copy_in(pos, p);
            pos = pos.wrapping_add(p.len() as u32);
        }
        self.head = pos;
        // Store, then read the announcement: see wait.rs.
        wait::publish(self.ring.head(), pos, self.fast);
        let doorbell = wait::notify(self.ring.head(), self.ring.consumer_wait());
        Ok(Pushed::Done { doorbell })
    }

    /// Block until `need` payload bytes fit (spin, then futex on `tail`).
    /// Returns false on timeout. A corrupt tail counts as "ready" so the next
    /// push reports the corruption instead of sleeping on it.
    pub fn wait_space(&self, need: u32, cfg: &WaitConfig, timeout: Option<Duration>) -> bool {
        let head = self.head;
        let cap = self.ring.cap;
        let need = need.saturating_add(LEN_PREFIX);
        // The consumer defers publishing its tail; ask for it before spinning.
        wait::announce(self.ring.producer_wait(), WAIT_FUTEX);
        wait::wait_on(
            self.ring.tail(),
            self.ring.producer_wait(),
            cfg,
            timeout,
            |tail| {
                let used = head.wrapping_sub(tail);
                used > cap || cap - used >= need
            },
        )
    }
}

/// Reading end of a ring.
pub struct Consumer {
    ring: RingRef,
    tail: u32,
    /// The tail last stored in the mapping. Publishing is deferred: every
    /// store moves the header's cache line to our core and back, which is
    /// most of a round trip's cost. We publish when a quarter of the ring
    /// is consumed, when the producer announces it waits for space (seen in
    /// `try_pop` and while spinning), and before sleeping, so a producer is
    /// never left waiting on bytes already consumed.
    published: u32,
    max_message: u32,
    fast: bool,
}

impl Consumer {
    pub(crate) fn new(ring: RingRef, start: u32, max_message: u32) -> Self {
        let max_message = max_message.min(ring.cap - LEN_PREFIX);
        Consumer {
            ring,
            tail: start,
            published: start,
            max_message,
            fast: false,
        }
    }

    /// Publish `tail` with a plain store (see `Producer::set_fast_publish`).
    pub fn set_fast_publish(&mut self, fast: bool) {
        self.fast = fast && wait::membarrier_ok();
    }

    /// Store our tail in the mapping (if it moved) and wake a producer
    /// waiting for space.
    pub fn publish(&mut self) {
        if self.published != self.tail {
            self.published = self.tail;
            wait::publish(self.ring.tail(), self.tail, self.fast);
            // A producer waiting for space sleeps on `tail`.
            wait::notify(self.ring.tail(), self.ring.producer_wait());
        }
    }

    pub fn capacity(&self) -> u32 {
        self.ring.cap
    }

    /// Take the next frame's payload into `out` (cleared first). Ok(false)
    /// if the ring is empty. Any inconsistency is `IpcError::Corrupt`; after
    /// that the ring must not be used again.
    pub fn try_pop(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        // Read the producer's head exactly once.
        let head = self.ring.head().load(Ordering::Acquire);
        if self.ring.producer_wait().load(Ordering::Relaxed) != 0 {
            self.publish();
        }
        let avail = head.wrapping_sub(self.tail);
        if avail == 0 {
            return Ok(false);
        }
        if avail > self.ring.cap {
            return Err(self.ring.corrupt(format!(
                "head {head} is {avail} bytes past tail {}, capacity {}",
                self.tail, self.ring.cap
            )));
        }
        if avail < LEN_PREFIX {
            return Err(self.ring.corrupt(format!(
                "{avail} bytes published, less than a length prefix"
            )));
        }
        let mut len_bytes = [0u8; 4];
        self.ring.copy_out(self.tail, &mut len_bytes);
        let len = u32::from_le_bytes(len_bytes);
        if len == 0 || len > self.max_message {
            return Err(self.ring.corrupt(format!(
                "frame length {len} not in 1..={}",
                self.max_message
            )));
        }
        if len > avail - LEN_PREFIX {
            return Err(self.ring.corrupt(format!(
                "frame length {len} exceeds the {} published bytes",
                avail - LEN_PREFIX
            )));
        }
        // Copy straight into the spare capacity: zero-filling first would
        // double the memory traffic for large messages.
        out.reserve(len as usize);
        // SAFETY: reserve made room for len bytes, len <= max_message <
        // cap; copy_out_raw initialises all of them before set_len.
        unsafe {
            self.ring.copy_out_raw(
                self.tail.wrapping_add(LEN_PREFIX),
                out.as_mut_ptr(),
                len as usize,
            );
            out.set_len(len as usize);
        }
        self.tail = self.tail.wrapping_add(LEN_PREFIX + len);
        if self.tail.wrapping_sub(self.published) >= self.ring.cap / 4 {
            self.publish();
        }
        Ok(true)
    }

    /// Is there anything to read (one racy load; for polling loops)?
    pub fn has_data(&self) -> bool {
        self.ring.head().load(Ordering::Acquire) != self.tail
    }

    /// Spin, then futex-sleep until the head moves. False on timeout.
    pub fn wait_readable(&mut self, cfg: &WaitConfig, timeout: Option<Duration>) -> bool {
        self.wait_readable_or(cfg, timeout, &AtomicBool::new(false))
    }

    /// Like `wait_readable`, but also returns once `nudged` is set (by a
    /// `Nudge` of this ring, which wakes the futex after setting it).
    pub fn wait_readable_or(
        &mut self,
        cfg: &WaitConfig,
        timeout: Option<Duration>,
        nudged: &AtomicBool,
    ) -> bool {
        let tail = self.tail;
        // Spin; if the producer asks for space meanwhile, publish and spin
        // on (once: after that everything is published, and a hostile
        // producer keeping the flag up must not turn this into a busy loop).
        let mut watch_producer = self.published != tail;
        loop {
            let (head, pw) = (self.ring.head(), self.ring.producer_wait());
            let woke = wait::spin_until(cfg.spin, || {
                head.load(Ordering::Acquire) != tail
                    || nudged.load(Ordering::Relaxed)
                    || (watch_producer && pw.load(Ordering::Relaxed) != 0)
            });
            if !woke {
                break;
            }
            if head.load(Ordering::Acquire) != tail || nudged.load(Ordering::Relaxed) {
                return true;
            }
            self.publish();
            watch_producer = false;
        }
        self.publish();
        let no_spin = WaitConfig {
            spin: Duration::ZERO,
        };
        wait::wait_on(
            self.ring.head(),
            self.ring.consumer_wait(),
            &no_spin,
            timeout,
            |head| head != tail || nudged.load(Ordering::SeqCst),
        )
    }

    /// A handle that wakes this consumer's futex sleep from another thread.
    pub fn nudge(&self, nudged: Arc<AtomicBool>) -> Nudge {
        Nudge {
            ring: self.ring.share(),
            nudged,
        }
    }

    /// Ask the producer for a control-socket doorbell instead of a futex
    /// wake (for event loops). Returns true if data is already there, in
    /// which case the caller should read instead of going to sleep.
    pub fn arm_doorbell(&mut self) -> bool {
        self.publish();
        wait::announce(self.ring.consumer_wait(), WAIT_DOORBELL);
        if self.ring.head().load(Ordering::SeqCst) != self.tail {
            self.ring.consumer_wait().store(0, Ordering::SeqCst);
            return true;
        }
        false
    }
}

/// Initialise a ring header in a fresh segment.
pub(crate) fn init_header(ring: &RingRef) {
    ring.head().store(0, Ordering::Relaxed);
    ring.tail().store(0, Ordering::Relaxed);
    ring.capacity_word().store(ring.cap, Ordering::Relaxed);
    ring.consumer_wait().store(0, Ordering::Relaxed);
    ring.producer_wait().store(0, Ordering::SeqCst);
}

/// Ends a consumer's `wait_readable_or` early: sets its flag, then wakes
/// the ring's `head` futex. A wake that lands between the sleeper's last
/// look at the flag and its `FUTEX_WAIT` is lost (the kernel compares only
/// `head`): the sleep then lasts its timeout, as without the nudge.
pub struct Nudge {
    ring: RingRef,
    nudged: Arc<AtomicBool>,
}

impl Nudge {
    pub fn wake(&self) {
        self.nudged.store(true, Ordering::SeqCst);
        wait::futex_wake(self.ring.head());
    }
}
