//! A second process connects as a worker, then rewrites its mapping of the
//! segment with random bytes (headers included) while the supervisor side
//! reads and replies. The supervisor must end with a clean, auditable error:
//! no crash, no hang (every round is bounded by a deadline).

mod ipc_common;

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use buntime_ipc::{
    Client, ControlListener, IpcError, Message, PeerPolicy, Segment, SupervisorChannel,
    SupervisorConfig,
};
use ipc_common::{role, spawn_child, wait_child, Rng};
use memmap2::MmapMut;

const ROUNDS: u64 = 12;

/// Child: handshake honestly, send a few valid messages, then scribble.
fn scribbler() {
    let ctl = PathBuf::from(std::env::var("CTL").unwrap());
    let seg = PathBuf::from(std::env::var("SEG").unwrap());
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let mut client = Client::connect(&ctl, None).expect("connect");
    for i in 0..3 {
        client
            .write_stdout(format!("line {i}\n").as_bytes())
            .unwrap();
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    // SAFETY (test): a second shared mapping of the segment.
    let mut map = unsafe { MmapMut::map_mut(&file).unwrap() };
    let layout = Segment::open(&seg).unwrap().layout();
    let headers = [0usize, layout.s2w_offset, layout.w2s_offset];
    let mut rng = Rng(seed | 1);
    // Runs until the parent kills us; bounded anyway.
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        match rng.below(4) {
            // A random word in one of the headers.
            0 | 1 => {
                let off = headers[rng.below(3) as usize] + 4 * rng.below(16) as usize;
                let v = match rng.below(3) {
                    0 => rng.next() as u32,
                    // Plausible: a small step from the current value, so
                    // the reader gets past the index checks to the frames.
                    1 => {
                        let cur = u32::from_le_bytes(map[off..off + 4].try_into().unwrap());
                        cur.wrapping_add(rng.below(64) as u32)
                    }
                    _ => u32::MAX - rng.below(8) as u32,
                };
                map[off..off + 4].copy_from_slice(&v.to_le_bytes());
            }
            // A burst of random bytes anywhere.
            2 => {
                let off = rng.below(map.len() as u64) as usize;
                let n = (rng.below(256) as usize).min(map.len() - off);
                for b in &mut map[off..off + n] {
                    *b = rng.next() as u8;
                }
            }
            // Keep producing honestly too, so the two interleave.
            _ => {
                let _ = client.send(0, b"more output");
            }
        }
    }
}

#[test]
fn scribbler_child() {
    if role().as_deref() == Some("scribbler") {
        scribbler();
    }
}

#[test]
fn supervisor_survives_a_scribbling_worker() {
    if role().is_some() {
        return;
    }
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let ctl = dir.path().join("control.sock");
        let seg_path = dir.path().join("ipc");
        let listener = ControlListener::bind(&ctl).unwrap();
        let seg = Segment::create(&seg_path, 4096, 16384).unwrap();
        let mut child = spawn_child(
            "scribbler_child",
            "scribbler",
            &[
                ("CTL", ctl.display().to_string()),
                ("SEG", seg_path.display().to_string()),
                (
                    "SEED",
                    (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(round + 1)).to_string(),
                ),
            ],
        );
        let cfg = SupervisorConfig {
            peer: PeerPolicy::same_uid(),
            send_timeout: Duration::from_millis(20),
            ..Default::default()
        };
        let mut chan = SupervisorChannel::accept(&listener, seg, cfg).expect("handshake");

        let deadline = Instant::now() + Duration::from_secs(20);
        let mut valid = 0u32;
        let err = loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: supervisor did not detect corruption in time"
            );
            match chan.recv_timeout(Duration::from_millis(5)) {
                Ok(Some(Message::Stdout(_))) => valid += 1,
                Ok(Some(m)) => {
                    // A random write can form a well-formed message; fine,
                    // as long as it was fully validated.
                    let _ = m;
                    valid += 1;
                }
                Ok(None) => {}
                Err(e) => break e,
            }
            // Reply traffic exercises the producer's tail checks.
            if let Err(e) = chan.allow(1, b"ok") {
                break e;
            }
        };
        assert!(
            err.is_peer_fault(),
            "round {round}: unexpected error kind: {err}"
        );
        assert!(
            matches!(
                err,
                IpcError::Corrupt { .. }
                    | IpcError::Decode(_)
                    | IpcError::Protocol(_)
                    | IpcError::Full
            ),
            "round {round}: {err}"
        );
        // The channel is closed for good after a peer fault.
        assert!(chan.is_closed());
        assert!(matches!(chan.try_recv(), Err(IpcError::Poisoned)));
        eprintln!("round {round}: {valid} messages, then: {err}");
        let _ = child.kill();
        wait_child(&mut child, Duration::from_secs(5));
        drop(chan);
        assert!(
            !seg_path.exists(),
            "segment file must be unlinked when the channel drops"
        );
    }
}
