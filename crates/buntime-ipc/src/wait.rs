//! Spin briefly, then sleep on a futex word in the shared mapping.
//!
//! The rule that keeps the two sides from deadlocking: a waiter publishes
//! "I am going to sleep" in its announcement word, re-reads the condition,
//! and futex-waits on the exact value it saw. The other side publishes its
//! index first and reads the announcement second (both SeqCst), so either it
//! sees the announcement and wakes the waiter, or the waiter sees the new
//! index. FUTEX_WAIT itself re-checks the value atomically in the kernel, so a
//! wake-up between the re-check and the syscall is not lost.

use std::sync::atomic::{compiler_fence, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// The publisher's SeqCst store (a locked instruction on x86) waits for the
// store buffer to drain: it tripled the cost of a round trip here. With
// membarrier(2) the fence moves to the sleeper, which is on its slow path
// anyway: the publisher does a plain release store, the sleeper, between its
// announcement and its re-check, makes every CPU running a registered
// process execute a full barrier (MEMBARRIER_CMD_GLOBAL_EXPEDITED). Then
// either the publisher's store is visible to the re-check or its read of the
// announcement comes after the barrier and sees it. A side only publishes
// this way if it registered and its peer said (in the handshake) that it
// issues the barrier before sleeping.
const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0u32, 0i32) }
}

/// True if this process can issue global expedited barriers and is
/// registered as a target of them (done once, on first use).
pub fn membarrier_ok() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        // Registering waits for an RCU grace period once the process has
        // threads (6-16 ms here, e.g. in Bun): such a process keeps the
        // plain SeqCst protocol instead, which its peer is told.
        if thread_count() > 1 {
            return false;
        }
        let q = membarrier(MEMBARRIER_CMD_QUERY);
        q >= 0
            && q as libc::c_int & MEMBARRIER_CMD_GLOBAL_EXPEDITED != 0
            && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0
    })
}

fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// The sleeper's half of the asymmetric fence (a plain SeqCst fence if
/// membarrier is unavailable; then the peer publishes with SeqCst stores).
fn heavy_barrier() {
    if !membarrier_ok() || membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0 {
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

/// Store a new index value. `fast`: plain release store (the peer's sleep
/// path issues the barrier); otherwise SeqCst.
pub fn publish(word: &AtomicU32, value: u32, fast: bool) {
    if fast {
        word.store(value, Ordering::Release);
        // Keep the compiler from moving the announcement load (in `notify`)
        // above the store; the CPU's reordering is what membarrier covers.
        compiler_fence(Ordering::SeqCst);
    } else {
        word.store(value, Ordering::SeqCst);
    }
}

/// Announce a sleep in `flag` (WAIT_FUTEX or WAIT_DOORBELL) so that a
/// publisher, fast or not, either sees it or has its index visible to us.
pub fn announce(flag: &AtomicU32, value: u32) {
    flag.store(value, Ordering::SeqCst);
    heavy_barrier();
}

/// Announcement values (ring header `consumer_wait` / `producer_wait`).
pub const WAIT_AWAKE: u32 = 0;
/// Sleeping in FUTEX_WAIT: wake with FUTEX_WAKE on the index word.
pub const WAIT_FUTEX: u32 = 1;
/// Sleeping in an event loop: send a DATA doorbell on the control socket.
pub const WAIT_DOORBELL: u32 = 2;

/// How long a waiter spins before it sleeps. Long enough to cover a
/// request/response turnaround, short enough that an idle side is asleep
/// within ~50 µs.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Longest single futex sleep. A safety net only: with an honest peer every
/// sleep ends with a wake-up; a hostile one can at worst make us poll at this
/// period.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Spin/sleep tuning.
#[derive(Clone, Copy, Debug)]
pub struct WaitConfig {
    pub spin: Duration,
}

impl Default for WaitConfig {
    fn default() -> Self {
        WaitConfig { spin: DEFAULT_SPIN }
    }
}

/// FUTEX_WAIT (shared, not private: the word lives in a MAP_SHARED file
/// mapping used by two processes). Returns when woken (true), or (false)
/// when the word no longer holds `expected`, on a signal, or after
/// `timeout`.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call;
    // the kernel only reads it. Errors (EAGAIN, EINTR, ETIMEDOUT) all mean
    // "re-check the condition", which every caller does.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    r == 0
}

/// Wake-ups in a row that found the condition still false before each
/// further one costs a pause. An honest peer wakes us only after it has
/// published (at most one stale wake-up per publication, when our sleep
/// began just after its index became visible), so only a peer that calls
/// FUTEX_WAKE on the shared word for nothing gets here: without the pause
/// each of its wake-ups would cost us a futex round trip and a
/// membarrier, at the rate it can issue them.
const EMPTY_WAKES_BEFORE_BACKOFF: u32 = 4;
/// The pause: a storm then costs a few wake-ups per millisecond; a real
/// publication during it is seen at most this late (on that ring only).
const EMPTY_WAKE_BACKOFF: Duration = Duration::from_millis(1);

/// FUTEX_WAKE all waiters on `word`; how many were woken.
pub fn futex_wake(word: &AtomicU32) -> i64 {
    // SAFETY: as above; FUTEX_WAKE does not access the word's memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    }
}

/// After this much spinning, the spinner also yields the CPU at every clock
/// check: an answer normally comes within a couple of microseconds, so a
/// longer wait suggests the peer is runnable on our core (more runnable
/// threads than cores) and needs it.
const YIELD_AFTER: Duration = Duration::from_micros(5);

/// A yield that took at least `RAN_PEER_MIN` ran another thread meanwhile;
/// one that ended with the answer there and took less than `RAN_PEER_MAX`
/// ran the peer. A longer one was someone else's time slice (a build on
/// our CPU), after which the answer would be there either way.
const RAN_PEER_MIN: Duration = Duration::from_micros(1);
const RAN_PEER_MAX: Duration = Duration::from_micros(200);

/// Waits answered in a row while yielding to the peer before a thread
/// that may move ([`move_off_a_shared_cpu`]) moves: long enough that a
/// passing co-location is left to the scheduler.
const SHARED_WAITS_BEFORE_MOVE: u32 = 64;
/// At most one move per this long: if the scheduler keeps putting the two
/// back together, the moves stay a small share of the time.
const MOVE_AT_MOST_EVERY: Duration = Duration::from_millis(10);

thread_local! {
    /// This thread's waits answered in a row while it yielded to its peer.
    /// Any: the two share a CPU, where spinning only keeps the peer from
    /// answering (each side spun `YIELD_AFTER` per round trip: 16 µs
    /// instead of 3), so the next wait yields from the start. Back to 0 at
    /// the first wait answered otherwise (the scheduler moved one of
    /// them), a spin that runs out (the peer is idle), or a move.
    static SHARED_WAITS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Set by [`move_off_a_shared_cpu`]: this thread, not its peer, moves
    /// (one side only, so the two cannot swap CPUs and stay together).
    static MAY_MOVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LAST_MOVE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Whether this thread's waits currently yield from the start (tests).
pub fn yields_at_once() -> bool {
    SHARED_WAITS.with(|c| c.get()) > 0
}

/// Lets this thread move itself to another CPU of its affinity mask when
/// it finds its peer sharing its CPU round trip after round trip (the
/// scheduler sometimes keeps a hot ping-pong pair on one vCPU while
/// another idles: two context switches per round trip instead of none).
/// A mask is put back at once (`move_to_another_cpu` says which); only
/// where the thread is now changes. The supervisor's connection threads
/// call this; a worker does not.
pub fn move_off_a_shared_cpu() {
    MAY_MOVE.with(|m| m.set(true));
}

/// Ends a wait that was answered: `ran_peer` if while yielding to the
/// peer. After enough such waits in a row, a thread that may move moves
/// (and spins again on its next wait).
fn answered(ran_peer: bool) {
    if !ran_peer {
        SHARED_WAITS.with(|c| c.set(0));
        return;
    }
    let n = SHARED_WAITS.with(|c| {
        let n = c.get().saturating_add(1);
        c.set(n);
        n
    });
    if n < SHARED_WAITS_BEFORE_MOVE || !MAY_MOVE.with(|m| m.get()) {
        return;
    }
    let now = Instant::now();
    if LAST_MOVE.with(|l| l.get().is_some_and(|t| now - t < MOVE_AT_MOST_EVERY)) {
        return;
    }
    LAST_MOVE.with(|l| l.set(Some(now)));
    SHARED_WAITS.with(|c| c.set(0));
    move_to_another_cpu();
}

/// Sets this thread's mask to its current one less the CPU it runs on
/// (which migrates it now), then puts a mask back. Does nothing with a
/// one-CPU mask.
///
/// Since Linux 6.2 a mask set by `sched_setaffinity` is remembered and
/// later cpuset changes are only intersected with it. So when the mask
/// read spans every online CPU (no one restricted this thread), the one
/// put back is all CPUs: the thread keeps following its cpuset, as before
/// the move. A mask that was narrower is put back as it was. If putting
/// it back fails (a cpuset changed in between), all CPUs are tried, which
/// the kernel narrows to what the cpuset allows.
fn move_to_another_cpu() {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: cpu_set_t is plain data; the calls get/set this thread's
    // own mask (pid 0) with the set's size.
    unsafe {
        let mut mask: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut mask) != 0 {
            return;
        }
        let cpu = libc::sched_getcpu();
        let count = libc::CPU_COUNT(&mask);
        if cpu < 0 || count < 2 || !libc::CPU_ISSET(cpu as usize, &mask) {
            return;
        }
        let mut others = mask;
        libc::CPU_CLR(cpu as usize, &mut others);
        if libc::sched_setaffinity(0, size, &others) != 0 {
            return;
        }
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(c, &mut all);
        }
        let online = libc::sysconf(libc::_SC_NPROCESSORS_ONLN);
        let back = if i64::from(count) >= online as i64 {
            &all
        } else {
            &mask
        };
        if libc::sched_setaffinity(0, size, back) != 0 {
            let _ = libc::sched_setaffinity(0, size, &all);
        }
    }
}

/// Spin until `ready()` or `spin` has elapsed. Reads the clock only every
/// 64 iterations (every iteration, yielding, while the peer shares our
/// CPU): the condition check is a load, the clock is not free.
pub fn spin_until(spin: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let shared = yields_at_once();
    // The clock is first read after 64 iterations: most answers come sooner,
    // and a clock read costs as much as a few cache misses here.
    let mut start: Option<Instant> = None;
    let mut i: u32 = 0;
    let mut ran_peer = false;
    loop {
        if ready() {
            answered(ran_peer);
            return true;
        }
        i = i.wrapping_add(1);
        if shared || i & 63 == 0 {
            let now = Instant::now();
            let spent = now.duration_since(*start.get_or_insert(now));
            if spent >= spin {
                SHARED_WAITS.with(|c| c.set(0));
                return false;
            }
            if shared || spent >= YIELD_AFTER {
                std::thread::yield_now();
                let took = now.elapsed();
                ran_peer = (RAN_PEER_MIN..RAN_PEER_MAX).contains(&took) && ready();
            }
        }
        std::hint::spin_loop();
    }
}

/// Wait until `ready(word)` holds: spin, then announce in `flag` and sleep on
/// `word`. Returns false if `timeout` (counted from the end of the spin: the
/// clock is not read on the fast path) passed first.
pub fn wait_on(
    word: &AtomicU32,
    flag: &AtomicU32,
    cfg: &WaitConfig,
    timeout: Option<Duration>,
    ready: impl Fn(u32) -> bool,
) -> bool {
    if spin_until(cfg.spin, || ready(word.load(Ordering::Acquire))) {
        return true;
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut empty_wakes = 0u32;
    loop {
        if empty_wakes > EMPTY_WAKES_BEFORE_BACKOFF {
            let pause = deadline.map_or(EMPTY_WAKE_BACKOFF, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(EMPTY_WAKE_BACKOFF)
            });
            std::thread::sleep(pause);
            if ready(word.load(Ordering::Acquire)) {
                return true;
            }
        }
        let mut timeout = MAX_SLEEP;
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ready(word.load(Ordering::Acquire));
            }
            timeout = timeout.min(left);
        }
        announce(flag, WAIT_FUTEX);
        let seen = word.load(Ordering::SeqCst);
        if ready(seen) {
            flag.store(WAIT_AWAKE, Ordering::Relaxed);
            return true;
        }
        let woken = futex_wait(word, seen, Some(timeout));
        flag.store(WAIT_AWAKE, Ordering::Relaxed);
        if ready(word.load(Ordering::Acquire)) {
            return true;
        }
        if woken {
            empty_wakes = empty_wakes.saturating_add(1);
        }
    }
}

/// Called by the side that just published a new index in `word`: wake the
/// peer if it announced sleep. Returns true if it asked for a doorbell (the
/// caller then signals on the control socket).
pub fn notify(word: &AtomicU32, flag: &AtomicU32) -> bool {
    // Load first: the common case (peer spinning) stays a read-only access to
    // the peer's cache line.
    if flag.load(Ordering::SeqCst) == WAIT_AWAKE {
        return false;
    }
    match flag.swap(WAIT_AWAKE, Ordering::SeqCst) {
        WAIT_FUTEX => {
            let _ = futex_wake(word);
            false
        }
        WAIT_DOORBELL => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sleeper_is_woken_by_notify() {
        let word = Arc::new(AtomicU32::new(0));
        let flag = Arc::new(AtomicU32::new(0));
        let (w, f) = (word.clone(), flag.clone());
        let t = std::thread::spawn(move || {
            let cfg = WaitConfig {
                spin: Duration::from_micros(1),
            };
            wait_on(&w, &f, &cfg, Some(Duration::from_secs(20)), |v| v == 7)
        });
        // Wait until the thread announced its sleep, then publish + notify.
        while flag.load(Ordering::SeqCst) != WAIT_FUTEX {
            std::thread::yield_now();
        }
        word.store(7, Ordering::SeqCst);
        assert!(!notify(&word, &flag));
        assert!(t.join().unwrap());
    }

    #[test]
    fn wait_times_out() {
        let word = AtomicU32::new(0);
        let flag = AtomicU32::new(0);
        let cfg = WaitConfig::default();
        assert!(!wait_on(
            &word,
            &flag,
            &cfg,
            Some(Duration::from_millis(5)),
            |v| v != 0
        ));
        assert_eq!(flag.load(Ordering::SeqCst), WAIT_AWAKE);
    }

    /// A peer that only calls FUTEX_WAKE (never publishes) makes the
    /// sleeper pause between wake-ups instead of waking at its rate.
    #[test]
    fn empty_wake_ups_back_off() {
        use std::sync::atomic::AtomicBool;
        let word = Arc::new(AtomicU32::new(0));
        let flag = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        // FUTEX_WAKE returns how many sleepers it woke: the storm counts
        // how many sleeps of the waiter it ended.
        let storm = {
            let (word, stop) = (word.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut woken = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let n = futex_wake(&word);
                    woken += n.max(0);
                }
                woken
            })
        };
        let cfg = WaitConfig {
            spin: Duration::from_micros(1),
        };
        let got = wait_on(&word, &flag, &cfg, Some(Duration::from_millis(100)), |v| {
            v != 0
        });
        stop.store(true, Ordering::Relaxed);
        let woken = storm.join().unwrap();
        assert!(!got);
        // Without the pause: a sleep ended per wake-up the waiter gets
        // scheduled for (thousands in 100 ms); with it, the first few, then
        // one per 1 ms pause at most.
        assert!(woken <= 120, "{woken} sleeps ended by empty wake-ups");
    }

    /// Pins the calling thread to `cpu`.
    fn pin(cpu: usize) -> bool {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; the call reads
        // `size_of` bytes of it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }

    /// Two threads ping-ponging on one CPU: a wait answered while it
    /// yielded to the peer makes the next waits yield at once; a wait
    /// answered without yielding ends that.
    #[test]
    fn a_peer_on_our_cpu_is_yielded_to_at_once() {
        // SAFETY: no arguments.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu < 0 || !pin(cpu as usize) {
            return;
        }
        let word = Arc::new(AtomicU32::new(0));
        let w = word.clone();
        let peer = std::thread::spawn(move || {
            // Unpinned, the peer answers from its own loop; the main thread
            // then never waits long and the test cannot see a shared CPU.
            assert!(pin(cpu as usize));
            for n in 0..400u32 {
                while !spin_until(Duration::from_millis(50), || {
                    w.load(Ordering::Acquire) == 2 * n + 1
                }) {}
                w.store(2 * n + 2, Ordering::Release);
            }
        });
        let mut shared = 0;
        for n in 0..400u32 {
            word.store(2 * n + 1, Ordering::Release);
            while !spin_until(Duration::from_millis(50), || {
                word.load(Ordering::Acquire) == 2 * n + 2
            }) {}
            shared += yields_at_once() as u32;
        }
        peer.join().unwrap();
        assert!(shared > 0, "no wait saw its peer run while it yielded");
        assert!(spin_until(Duration::from_millis(1), || true));
        assert!(!yields_at_once());
    }

    /// This thread's affinity mask.
    fn mask() -> Option<libc::cpu_set_t> {
        // SAFETY: as in `pin`; the call writes `size_of` bytes of `set`.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            (libc::sched_getaffinity(0, size, &mut set) == 0).then_some(set)
        }
    }

    /// A thread that may move, ping-ponging with a peer pinned to its CPU,
    /// leaves that CPU for another of its mask, and its mask is restored.
    #[test]
    fn a_thread_that_may_move_leaves_a_shared_cpu() {
        let Some(all) = mask() else { return };
        // SAFETY: CPU_COUNT reads the set; sched_getcpu has no arguments.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu < 0 || unsafe { libc::CPU_COUNT(&all) } < 2 {
            return; // one CPU: nowhere to move
        }
        let cpu = cpu as usize;
        let word = Arc::new(AtomicU32::new(0));
        let w = word.clone();
        let rounds = 4000u32;
        let peer = std::thread::spawn(move || {
            assert!(pin(cpu));
            for n in 0..rounds {
                while !spin_until(Duration::from_millis(50), || {
                    w.load(Ordering::Acquire) == 2 * n + 1
                }) {}
                w.store(2 * n + 2, Ordering::Release);
            }
        });
        // Start on the peer's CPU, then allow every CPU again: the
        // scheduler may leave us there; the move must not depend on it.
        assert!(pin(cpu));
        // SAFETY: `all` is the mask read above.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &all);
        }
        move_off_a_shared_cpu();
        let mut elsewhere = false;
        for n in 0..rounds {
            word.store(2 * n + 1, Ordering::Release);
            while !spin_until(Duration::from_millis(50), || {
                word.load(Ordering::Acquire) == 2 * n + 2
            }) {}
            // SAFETY: no arguments.
            elsewhere |= unsafe { libc::sched_getcpu() } as usize != cpu;
        }
        peer.join().unwrap();
        MAY_MOVE.with(|m| m.set(false));
        assert!(elsewhere, "never left the peer's CPU");
        let after = mask().expect("mask");
        // SAFETY: CPU_EQUAL reads both sets.
        assert!(
            unsafe { libc::CPU_EQUAL(&after, &all) },
            "mask not restored"
        );
    }

    #[test]
    fn doorbell_request_is_reported_once() {
        let word = AtomicU32::new(0);
        let flag = AtomicU32::new(WAIT_DOORBELL);
        assert!(notify(&word, &flag));
        assert!(!notify(&word, &flag));
    }
}
