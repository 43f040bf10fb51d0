//! Replays the fuzzer's committed seed corpus (fuzz/seeds/) through the
//! decoder, so CI checks it without a nightly toolchain. `ok-*` seeds must
//! decode and re-encode byte-for-byte, `bad-*` seeds must be rejected, any
//! other file (e.g. a crash reproducer) must simply not panic.

use std::path::Path;

use buntime_ipc::decode;

#[test]
fn seed_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/seeds exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        let r = decode(&data);
        if name.starts_with("ok-") {
            let m = r.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.encode(), data, "{name}: re-encoding differs");
        } else if name.starts_with("bad-") {
            assert!(r.is_err(), "{name}: malformed seed was accepted: {r:?}");
        }
        n += 1;
    }
    assert!(n >= 10, "seed corpus missing ({n} files)");
}

/// Every prefix of every seed, and every single-byte mutation of the
/// header, must be handled without a panic (a cheap deterministic fuzz).
#[test]
fn seed_mutations_do_not_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for end in 0..=data.len() {
            let _ = decode(&data[..end]);
        }
        for i in 0..data.len().min(16) {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut d = data.clone();
                d[i] = v;
                if let Ok(m) = decode(&d) {
                    assert_eq!(m.encode(), d);
                }
            }
        }
    }
}
