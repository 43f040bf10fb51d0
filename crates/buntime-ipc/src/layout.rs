//! Byte layout of the shared segment (documented in docs/ipc.md).
//!
//! ```text
//! 0x0000  segment header (one page)
//! 0x1000  ring S2W: 64-byte ring header, then `s2w_capacity` data bytes
//! ......  ring W2S: page-aligned, 64-byte ring header, then data
//! ```

use super::error::{IpcError, Result};

/// `b"BNTI"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"BNTI");
/// Version of the segment layout (bumped on any incompatible change).
pub const LAYOUT_VERSION: u32 = 1;
pub const PAGE: usize = 4096;
/// The segment header occupies the first page.
pub const HEADER_SIZE: usize = PAGE;

// Segment header fields (all little-endian, written once by the supervisor).
pub const OFF_MAGIC: usize = 0x00;
pub const OFF_VERSION: usize = 0x04;
pub const OFF_HEADER_SIZE: usize = 0x08;
pub const OFF_FLAGS: usize = 0x0C;
pub const OFF_S2W_OFFSET: usize = 0x10;
pub const OFF_S2W_CAPACITY: usize = 0x14;
pub const OFF_W2S_OFFSET: usize = 0x18;
pub const OFF_W2S_CAPACITY: usize = 0x1C;
pub const OFF_TOTAL_SIZE: usize = 0x20; // u64
pub const OFF_SUPERVISOR_PID: usize = 0x28;

// Ring header fields, relative to the ring's offset.
/// Producer's write counter (free-running, modulo 2^32). Also the futex word
/// a sleeping consumer waits on.
pub const RING_HEAD: usize = 0;
/// Consumer's read counter. Also the futex word a producer waiting for space
/// waits on.
pub const RING_TAIL: usize = 4;
/// Data bytes in the ring, a power of two.
pub const RING_CAPACITY: usize = 8;
/// Consumer's sleep announcement: 0 awake, 1 futex, 2 wants a doorbell.
pub const RING_CONSUMER_WAIT: usize = 12;
/// Producer's sleep announcement: 0 awake, 1 waiting on `tail` for space.
pub const RING_PRODUCER_WAIT: usize = 16;
/// Data region offset inside the ring (as in the seed design).
pub const RING_DATA: usize = 64;

pub const MIN_CAPACITY: u32 = 4096;
/// Counters are compared with wrapping arithmetic, which needs cap <= 2^31.
pub const MAX_CAPACITY: u32 = 1 << 30;

/// Where each ring lives in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub s2w_offset: usize,
    pub s2w_capacity: u32,
    pub w2s_offset: usize,
    pub w2s_capacity: u32,
    pub total_size: usize,
}

fn align_up(x: usize) -> usize {
    x.div_ceil(PAGE) * PAGE
}

fn check_capacity(cap: u32) -> Result<()> {
    if !cap.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) {
        return Err(IpcError::BadSegment(format!(
            "ring capacity {cap} is not a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}"
        )));
    }
    Ok(())
}

impl Layout {
    /// Layout for a new segment with the given ring capacities.
    pub fn new(s2w_capacity: u32, w2s_capacity: u32) -> Result<Self> {
        check_capacity(s2w_capacity)?;
        check_capacity(w2s_capacity)?;
        let s2w_offset = HEADER_SIZE;
        let w2s_offset = align_up(s2w_offset + RING_DATA + s2w_capacity as usize);
        let total_size = align_up(w2s_offset + RING_DATA + w2s_capacity as usize);
        Ok(Layout {
            s2w_offset,
            s2w_capacity,
            w2s_offset,
            w2s_capacity,
            total_size,
        })
    }

    /// Serialise the segment header.
    pub fn header_bytes(&self, supervisor_pid: u32) -> [u8; 64] {
        let mut h = [0u8; 64];
        let mut put = |off: usize, v: u32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put(OFF_MAGIC, MAGIC);
        put(OFF_VERSION, LAYOUT_VERSION);
        put(OFF_HEADER_SIZE, HEADER_SIZE as u32);
        put(OFF_FLAGS, 0);
        put(OFF_S2W_OFFSET, self.s2w_offset as u32);
        put(OFF_S2W_CAPACITY, self.s2w_capacity);
        put(OFF_W2S_OFFSET, self.w2s_offset as u32);
        put(OFF_W2S_CAPACITY, self.w2s_capacity);
        put(OFF_SUPERVISOR_PID, supervisor_pid);
        h[OFF_TOTAL_SIZE..OFF_TOTAL_SIZE + 8]
            .copy_from_slice(&(self.total_size as u64).to_le_bytes());
        h
    }

    /// Parse and validate a header copied out of a mapping of `map_len`
    /// bytes. Used by the worker side; the supervisor never re-reads it.
    pub fn parse(h: &[u8; 64], map_len: usize) -> Result<Self> {
        let get = |off: usize| u32::from_le_bytes([h[off], h[off + 1], h[off + 2], h[off + 3]]);
        if get(OFF_MAGIC) != MAGIC {
            return Err(IpcError::BadSegment("bad magic".into()));
        }
        if get(OFF_VERSION) != LAYOUT_VERSION {
            return Err(IpcError::BadSegment(format!(
                "layout version {} unsupported (want {LAYOUT_VERSION})",
                get(OFF_VERSION)
            )));
        }
        let mut total = [0u8; 8];
        total.copy_from_slice(&h[OFF_TOTAL_SIZE..OFF_TOTAL_SIZE + 8]);
        let total_size = u64::from_le_bytes(total);
        let layout = Layout::new(get(OFF_S2W_CAPACITY), get(OFF_W2S_CAPACITY))?;
        // Offsets are derived, not free: anything else is a corrupt header.
        if get(OFF_HEADER_SIZE) as usize != HEADER_SIZE
            || get(OFF_S2W_OFFSET) as usize != layout.s2w_offset
            || get(OFF_W2S_OFFSET) as usize != layout.w2s_offset
            || total_size != layout.total_size as u64
        {
            return Err(IpcError::BadSegment("inconsistent offsets".into()));
        }
        if layout.total_size > map_len {
            return Err(IpcError::BadSegment(format!(
                "segment needs {} bytes, mapping has {map_len}",
                layout.total_size
            )));
        }
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let l = Layout::new(64 * 1024, 1 << 20).unwrap();
        assert_eq!(l.s2w_offset, 4096);
        assert_eq!(l.w2s_offset % PAGE, 0);
        assert!(l.w2s_offset >= l.s2w_offset + 64 + 64 * 1024);
        let h = l.header_bytes(42);
        assert_eq!(&h[0..4], b"BNTI");
        assert_eq!(Layout::parse(&h, l.total_size).unwrap(), l);
        assert!(Layout::parse(&h, l.total_size - 1).is_err());
    }

    #[test]
    fn rejects_bad_capacities() {
        assert!(Layout::new(3000, 4096).is_err());
        assert!(Layout::new(4096, 1 << 31).is_err());
        assert!(Layout::new(2048, 4096).is_err());
    }
}
