//! Fuzz the ring message decoder: any byte string must decode or be
//! rejected, never panic; a decoded message must re-encode to the input
//! (the format has exactly one encoding per message).
#![no_main]

use buntime_ipc::protocol::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode(data) {
        assert_eq!(m.encode(), data, "non-canonical encoding accepted");
    }
});
