//! An audit record as its JSON line, written straight into a reused buffer:
//! byte for byte what `serde_json` writes for `AuditRecord` (the fields in
//! their order, the optional ones skipped alike, strings escaped as
//! serde_json escapes them), without serde's rule clone and its text made
//! for each record. A connection thread writes one after every answer.

use std::fmt::Write as _;
use std::io::Write as _;

use super::AuditRecord;

/// `r` as one JSON line (ending in `\n`) in `buf`, emptied first. `scratch`
/// holds the rule's text between records.
pub(super) fn line_into(buf: &mut Vec<u8>, scratch: &mut String, r: &AuditRecord) {
    buf.clear();
    buf.extend_from_slice(b"{\"time\":");
    string(buf, &r.time);
    buf.extend_from_slice(b",\"container\":");
    string(buf, &r.container);
    number(buf, "pid", r.pid);
    buf.extend_from_slice(b",\"kind\":");
    string(buf, r.kind.as_str());
    buf.extend_from_slice(b",\"subject\":");
    string(buf, &r.subject);
    buf.extend_from_slice(b",\"decision\":");
    string(buf, r.decision.as_str());
    buf.extend_from_slice(b",\"rule\":");
    scratch.clear();
    let _ = write!(scratch, "{}", r.rule);
    string(buf, scratch);
    if !r.reason.is_empty() {
        buf.extend_from_slice(b",\"reason\":");
        string(buf, &r.reason);
    }
    number(buf, "latency_us", r.latency_us);
    number(buf, "bytes", r.bytes);
    if let Some(addr) = &r.addr {
        buf.extend_from_slice(b",\"addr\":");
        string(buf, addr);
    }
    for (key, v) in [
        ("bytes_up", r.bytes_up),
        ("bytes_down", r.bytes_down),
        ("duration_ms", r.duration_ms),
        ("count", r.count),
    ] {
        if let Some(v) = v {
            number(buf, key, v);
        }
    }
    buf.extend_from_slice(b"}\n");
}

/// `,"key":v`.
fn number(buf: &mut Vec<u8>, key: &str, v: impl std::fmt::Display) {
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(b"\":");
    let _ = write!(buf, "{v}");
}

/// `s` quoted as serde_json quotes it: `"` and `\` escaped, the control
/// characters below 0x20 as `\b \t \n \f \r` or `\u00xx` (lower-case hex),
/// everything else (DEL, non-ASCII) as it is.
fn string(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(&[b'\\', short]);
        if short == b'u' {
            buf.extend_from_slice(&[b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Kind, Verdict};
    use crate::policy::RuleRef;

    fn serde_line(r: &AuditRecord) -> Vec<u8> {
        let mut v = serde_json::to_vec(r).expect("serialize");
        v.push(b'\n');
        v
    }

    fn ours(r: &AuditRecord) -> Vec<u8> {
        let (mut buf, mut scratch) = (Vec::new(), String::new());
        line_into(&mut buf, &mut scratch, r);
        buf
    }

    #[test]
    fn the_line_is_serde_jsons_byte_for_byte() {
        // Every byte below 0x80, DEL, quotes and backslashes, non-ASCII, and
        // a non-UTF-8 path as the broker's subject holds it (lossy).
        let all_ascii: String = (0u8..0x80).map(char::from).collect();
        let lossy = String::from_utf8_lossy(b"/data/\xff\xfe\"x\\y\n").into_owned();
        let subjects = [
            String::new(),
            "/data/small.txt".into(),
            all_ascii.clone(),
            lossy,
            "caf\u{e9} \u{1f600} \u{2028}\u{2029} \u{7f}".into(),
            "\"\\\"\\\\".into(),
        ];
        let rules = [
            RuleRef::Default,
            RuleRef::AuditQuota,
            RuleRef::ResourcesOutput,
            RuleRef::Other(all_ascii.clone()),
            RuleRef::from("filesystem.read /data".to_string()),
            RuleRef::from("network.deny *:443".to_string()),
        ];
        for (n, subject) in subjects.iter().enumerate() {
            for rule in &rules {
                let mut r =
                    AuditRecord::new("job\"1\u{1}", -(n as i32), Kind::ALL[n], subject.clone());
                r.rule = rule.clone();
                r.decision = Verdict::ALL[n % Verdict::ALL.len()];
                assert_eq!(ours(&r), serde_line(&r), "{r:?}");
                // Every optional field present, and the numbers' extremes.
                r.reason = all_ascii.clone();
                r.addr = Some(subject.clone());
                r.bytes_up = Some(u64::MAX);
                r.bytes_down = Some(0);
                r.duration_ms = Some(7);
                r.count = Some(u64::MAX);
                r.latency_us = u64::MAX;
                r.bytes = 12345;
                r.pid = i32::MIN;
                assert_eq!(ours(&r), serde_line(&r), "{r:?}");
            }
        }
    }
}
