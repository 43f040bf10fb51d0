//! The audit record's time stamp, RFC 3339 UTC with microseconds, as
//! chrono writes it (`2026-12-07T02:43:26.123456Z`), but formatted through
//! chrono once per second per thread: a broker answer is followed by its
//! record, and chrono's formatting of a whole date cost as much as the
//! rest of the line.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

thread_local! {
    /// The last second formatted on this thread and its text without `Z`.
    static SECOND: RefCell<Option<(u64, String)>> = const { RefCell::new(None) };
}

/// Now, as `AuditRecord::time` holds it.
pub(crate) fn now() -> String {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => SECOND.with(|c| at(&mut c.borrow_mut(), d.as_secs(), d.subsec_nanos())),
        // A clock before 1970: chrono's own formatting, uncached.
        Err(_) => Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
    }
}

/// `secs.nanos` after the epoch, the second's text taken from `cache` when
/// it is that second's (and put there otherwise).
fn at(cache: &mut Option<(u64, String)>, secs: u64, nanos: u32) -> String {
    let hit = matches!(cache, Some((s, _)) if *s == secs);
    if !hit {
        *cache = Some((secs, second(secs)));
    }
    let prefix = cache.as_ref().map_or("", |(_, p)| p.as_str());
    let mut out = String::with_capacity(prefix.len() + 8);
    out.push_str(prefix);
    // chrono's `Micros`: the fraction truncated to six digits, always shown.
    let micros = nanos / 1_000;
    out.push('.');
    for div in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push(char::from(b'0' + ((micros / div) % 10) as u8));
    }
    out.push('Z');
    out
}

/// The whole second's text, without the `Z` chrono ends it with.
fn second(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        .unwrap_or_default();
    let mut s = t.to_rfc3339_opts(SecondsFormat::Secs, true);
    if s.ends_with('Z') {
        s.pop();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono_at(secs: u64, nanos: u32) -> String {
        DateTime::<Utc>::from_timestamp(secs as i64, nanos)
            .expect("in range")
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    #[test]
    fn the_cached_stamp_is_chronos_byte_for_byte() {
        let mut cache = None;
        let seconds = [
            0,
            1,
            59,
            951_782_400,
            1_765_075_406,
            4_102_444_799,
            253_402_300_799,
        ];
        let fractions = [0, 1, 999, 1_000, 123_456_789, 500_000_000, 999_999_999];
        for &s in &seconds {
            // Twice each: from the cache the second time.
            for _ in 0..2 {
                for &n in &fractions {
                    assert_eq!(at(&mut cache, s, n), chrono_at(s, n), "{s}.{n}");
                }
            }
        }
        // Going back a second re-formats it.
        assert_eq!(at(&mut cache, 59, 7_000), chrono_at(59, 7_000));
    }

    #[test]
    fn now_reads_as_a_time_stamp() {
        let t = now();
        let parsed = DateTime::parse_from_rfc3339(&t).expect("RFC 3339");
        assert_eq!(parsed.to_rfc3339_opts(SecondsFormat::Micros, true), t);
    }
}
