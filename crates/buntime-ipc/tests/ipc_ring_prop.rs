//! Property tests: random operation sequences against a model queue, and
//! random rewrites of the shared mapping (hostile peer) between operations.

use std::collections::VecDeque;
use std::fs::File;

use buntime_ipc::ring::Pushed;
use buntime_ipc::{IpcError, Segment};
use memmap2::MmapMut;
use proptest::prelude::*;

const CAP: u32 = 4096;

#[derive(Debug, Clone)]
enum Op {
    Push(usize, u8),
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..=700, any::<u8>()).prop_map(|(n, b)| Op::Push(n, b)),
        Just(Op::Pop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The worker-to-supervisor ring behaves like a FIFO of byte strings
    /// with CAP bytes of room (each frame costs 4 + len), across wrap-around.
    #[test]
    fn ring_matches_model(ops in proptest::collection::vec(op(), 1..400)) {
        let seg = Segment::create_anonymous(CAP, CAP).unwrap();
        let (mut tx, _) = seg.worker_ends(u32::MAX).unwrap();
        let (_, mut rx) = seg.supervisor_ends(u32::MAX).unwrap();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut used = 0usize;
        let mut out = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Push(n, b) => {
                    let msg: Vec<u8> = (0..n).map(|j| b.wrapping_add((i + j) as u8)).collect();
                    let fits = used + 4 + n <= CAP as usize;
                    let r = tx.try_push(&[&msg[..1], &msg[1..]]).unwrap();
                    prop_assert_eq!(r == Pushed::Full, !fits);
                    if fits {
                        used += 4 + n;
                        model.push_back(msg);
                    }
                }
                Op::Pop => {
                    let got = rx.try_pop(&mut out).unwrap();
                    // Consumed space reaches the producer on publish (which
                    // the next try_pop or wait does by itself).
                    rx.publish();
                    match model.pop_front() {
                        Some(m) => {
                            prop_assert!(got);
                            used -= 4 + m.len();
                            prop_assert_eq!(&out, &m);
                        }
                        None => prop_assert!(!got),
                    }
                }
            }
            prop_assert_eq!(tx.free().unwrap() as usize, CAP as usize - used);
        }
    }

    /// Whatever the peer writes into the segment (headers included), the
    /// supervisor's consumer and producer either work or return Corrupt;
    /// they never panic or return more than a ring's worth of bytes.
    #[test]
    fn hostile_writes_never_panic(
        ops in proptest::collection::vec((0usize..3, any::<u32>(), any::<u32>()), 1..200)
    ) {
        let seg = Segment::create_anonymous(CAP, CAP).unwrap();
        let layout = seg.layout();
        let file = File::from(seg.fd().try_clone_to_owned().unwrap());
        // SAFETY (test): our own second mapping of the memfd.
        let mut evil = unsafe { MmapMut::map_mut(&file).unwrap() };
        let (mut wtx, _) = seg.worker_ends(u32::MAX).unwrap();
        let (mut stx, mut srx) = seg.supervisor_ends(u32::MAX).unwrap();
        let mut out = Vec::new();
        let mut rx_dead = false;
        let mut tx_dead = false;
        for (what, a, b) in ops {
            match what {
                // Poke a ring header word (head, tail, capacity, wait flags).
                0 => {
                    let ring = if a & 1 == 0 { layout.w2s_offset } else { layout.s2w_offset };
                    let off = ring + ((a >> 1) as usize % 5) * 4;
                    evil[off..off + 4].copy_from_slice(&b.to_le_bytes());
                }
                // An honest push, so there is something to read.
                1 => { let _ = wtx.try_push(&[&b.to_le_bytes()[..(a as usize % 4) + 1]]); }
                // Poke a data byte anywhere in the mapping.
                _ => {
                    let off = a as usize % evil.len();
                    evil[off] = b as u8;
                }
            }
            if !rx_dead {
                match srx.try_pop(&mut out) {
                    Ok(true) => prop_assert!(out.len() <= CAP as usize - 4 && !out.is_empty()),
                    Ok(false) => {}
                    Err(IpcError::Corrupt { .. }) => rx_dead = true,
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            if !tx_dead {
                match stx.try_push(&[b"reply"]) {
                    Ok(_) => {}
                    Err(IpcError::Corrupt { .. }) => tx_dead = true,
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
        }
    }
}

/// The consumer defers publishing its tail; a producer that waits for
/// space must still get it: the consumer publishes when it sees the
/// producer's announcement (here: while it spins for more data), and wakes
/// it. No deadlock, bounded by a deadline.
#[test]
fn full_producer_is_not_left_waiting() {
    use buntime_ipc::WaitConfig;
    use std::time::Duration;
    let seg = Segment::create_anonymous(CAP, CAP).unwrap();
    let (mut tx, _) = seg.worker_ends(u32::MAX).unwrap();
    let (_, mut rx) = seg.supervisor_ends(u32::MAX).unwrap();
    let msg = vec![7u8; 1000];
    let mut pushed = 0;
    while tx.try_push(&[&msg]).unwrap() != Pushed::Full {
        pushed += 1;
    }
    let producer = std::thread::spawn(move || {
        // Short spin so the futex sleep path is exercised too.
        let cfg = WaitConfig {
            spin: Duration::from_micros(1),
        };
        let got_space = tx.wait_space(1000, &cfg, Some(Duration::from_secs(10)));
        assert!(got_space, "producer waited in vain");
        assert!(matches!(tx.try_push(&[&msg]).unwrap(), Pushed::Done { .. }));
    });
    let mut out = Vec::new();
    for _ in 0..pushed {
        assert!(rx.try_pop(&mut out).unwrap());
    }
    // Nothing left: spin/sleep for the producer's next message, which it can
    // only write once we publish the space we consumed.
    let cfg = WaitConfig::default();
    assert!(
        rx.wait_readable(&cfg, Some(Duration::from_secs(10))),
        "deadlock"
    );
    assert!(rx.try_pop(&mut out).unwrap());
    assert_eq!(out, vec![7u8; 1000]);
    producer.join().unwrap();
}
