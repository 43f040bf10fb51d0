//! One source of truth for the IPC constants: this crate (`protocol::kind`,
//! `control::ctl`, the limits, flags and env var names). The Python and
//! TypeScript workers, the C header and the bench clients write them again by
//! hand (no build step generates them, so a worker stays a plain file); this
//! test reads those files and fails on any value or name that differs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use buntime_ipc::control::{self, ctl};
use buntime_ipc::protocol::{self, kind};
use buntime_ipc::ENV_CONTROL;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(u64),
    Str(String),
}

type Consts = BTreeMap<String, Value>;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// `0x1f`, `42`, `256 << 10`, `"text"`, Python's `int.from_bytes(b"ABCD",
/// "little")`; anything else is not a constant this test knows.
fn parse_value(v: &str) -> Option<Value> {
    let v = v.trim().trim_end_matches(';').trim();
    if let Some(s) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        return Some(Value::Str(s.to_string()));
    }
    if let Some(rest) = v.strip_prefix("int.from_bytes(b\"") {
        let (bytes, tail) = rest.split_once('"')?;
        if tail.trim() != ", \"little\")" || bytes.len() > 8 {
            return None;
        }
        let mut buf = [0u8; 8];
        buf[..bytes.len()].copy_from_slice(bytes.as_bytes());
        return Some(Value::Int(u64::from_le_bytes(buf)));
    }
    if let Some((a, b)) = v.split_once("<<") {
        let (Some(Value::Int(a)), Some(Value::Int(b))) = (parse_value(a), parse_value(b)) else {
            return None;
        };
        return Some(Value::Int(a << b));
    }
    let int = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    int.ok().map(Value::Int)
}

fn is_const_name(n: &str) -> bool {
    let n = n.trim_start_matches('_');
    n.starts_with(|c: char| c.is_ascii_uppercase())
        && n.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Top-level `NAME = value` lines of a Python module.
fn python(rel: &str) -> Consts {
    let mut out = Consts::new();
    for line in read(rel).lines() {
        let Some((name, value)) = line.split_once(" = ") else {
            continue;
        };
        if let (true, Some(v)) = (is_const_name(name), parse_value(value)) {
            out.insert(name.to_string(), v);
        }
    }
    out
}

/// `const NAME = value;` lines of a TypeScript module, and the entries of
/// `export const OBJ = { NAME: value, ... }` blocks as `OBJ.NAME`.
fn typescript(rel: &str) -> Consts {
    let mut out = Consts::new();
    let mut object: Option<String> = None;
    for line in read(rel).lines() {
        let line = line.trim();
        if let Some(obj) = &object {
            if line.starts_with('}') {
                object = None;
            } else if let Some((name, value)) = line.split_once(':') {
                let value = value.trim().trim_end_matches(',');
                if let (true, Some(v)) = (is_const_name(name), parse_value(value)) {
                    out.insert(format!("{obj}.{name}"), v);
                }
            }
            continue;
        }
        let decl = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = decl
            .strip_prefix("const ")
            .and_then(|d| d.split_once(" = "))
        else {
            continue;
        };
        if value.trim() == "{" {
            object = Some(name.to_string());
        } else if let (true, Some(v)) = (is_const_name(name), parse_value(value)) {
            out.insert(name.to_string(), v);
        }
    }
    out
}

/// `#define NAME value` lines of a C header.
fn c_header(rel: &str) -> Consts {
    let mut out = Consts::new();
    for line in read(rel).lines() {
        let mut w = line.split_whitespace();
        if let (Some("#define"), Some(name), Some(value)) = (w.next(), w.next(), w.next()) {
            if let Some(v) = parse_value(value) {
                out.insert(name.to_string(), v);
            }
        }
    }
    out
}

/// Every message kind, named as in `protocol::kind`.
fn kinds() -> Vec<(&'static str, u8)> {
    vec![
        ("STDOUT", kind::STDOUT),
        ("FS_READ", kind::FS_READ),
        ("FS_WRITE", kind::FS_WRITE),
        ("NET_CONNECT", kind::NET_CONNECT),
        ("EXEC", kind::EXEC),
        ("LISTDIR", kind::LISTDIR),
        ("STDERR", kind::STDERR),
        ("EXIT", kind::EXIT),
        ("ALLOW", kind::ALLOW),
        ("DENY", kind::DENY),
    ]
}

/// `pub const NAME: u8 = ...;` lines of `protocol.rs`'s `mod kind`: the list
/// above must name them all, so a kind added in Rust fails here until every
/// copy has it.
#[test]
fn kind_list_covers_protocol_rs() {
    let src = read("crates/buntime-ipc/src/protocol.rs");
    let block = src
        .split_once("pub mod kind {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(block, _)| block)
        .expect("protocol.rs has `pub mod kind { ... }`");
    let mut in_rust: Vec<String> = block
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_string()))
        .collect();
    let mut listed: Vec<String> = kinds().iter().map(|(n, _)| n.to_string()).collect();
    in_rust.sort();
    listed.sort();
    assert_eq!(in_rust, listed, "message kinds in protocol.rs vs this test");
}

/// Each `(name, value)` in `want` is in `have` with that value, and, when
/// `exact`, `have` holds nothing else under `prefix`.
fn check(file: &str, have: &Consts, prefix: &str, want: &[(String, Value)], exact: bool) {
    for (name, value) in want {
        let key = format!("{prefix}{name}");
        assert_eq!(
            have.get(&key),
            Some(value),
            "{file}: {key} (Rust: {value:?})"
        );
    }
    if exact {
        let extra: Vec<&String> = have
            .keys()
            .filter(|k| k.starts_with(prefix))
            .filter(|k| !want.iter().any(|(n, _)| format!("{prefix}{n}") == **k))
            .collect();
        assert!(extra.is_empty(), "{file}: {extra:?} not in Rust");
    }
}

fn ints<T: Into<u64> + Copy>(list: &[(&str, T)]) -> Vec<(String, Value)> {
    list.iter()
        .map(|&(n, v)| (n.to_string(), Value::Int(v.into())))
        .collect()
}

#[test]
fn message_kinds_match_everywhere() {
    let want = ints(&kinds());
    let py = "workers/python/buntime_worker/protocol.py";
    check(py, &python(py), "", &want, true);
    let ts = "workers/bun/ipc.ts";
    check(ts, &typescript(ts), "Kind.", &want, true);
    let h = "crates/buntime-ipc/include/buntime_ipc.h";
    check(h, &c_header(h), "BI_", &want, true);
    let bench = "bench/ipc/client.ts";
    let some = ints(&[("FS_READ", kind::FS_READ), ("EXIT", kind::EXIT)]);
    check(bench, &typescript(bench), "", &some, false);
}

#[test]
fn python_handshake_matches_the_control_protocol() {
    let wire = "workers/python/buntime_worker/wire.py";
    let have = python(wire);
    // The control kinds a pure-Python start sends or reads (not FD).
    let kinds = ints(&[
        ("HELLO", ctl::HELLO),
        ("WELCOME", ctl::WELCOME),
        ("REJECT", ctl::REJECT),
        ("READY", ctl::READY),
        ("DATA", ctl::DATA),
        ("STOP", ctl::STOP),
        ("EXIT", ctl::EXIT),
    ]);
    check(wire, &have, "", &kinds, false);
    let rest = vec![
        ("_CTL_HEADER".into(), Value::Int(control::CTL_HEADER as u64)),
        (
            "_MAX_CONTROL".into(),
            Value::Int(control::MAX_CONTROL_MSG as u64),
        ),
        ("_MAGIC".into(), Value::Int(control::CONTROL_MAGIC.into())),
        (
            "VERSION".into(),
            Value::Int(control::PROTOCOL_VERSION.into()),
        ),
        (
            "FLAG_DOORBELL_WAKE".into(),
            Value::Int(control::FLAG_DOORBELL_WAKE.into()),
        ),
    ];
    check(wire, &have, "", &rest, false);
}

#[test]
fn request_limits_and_env_names_match() {
    let limit = |n: &str, v: usize| (n.to_string(), Value::Int(v as u64));
    let broker = "workers/python/buntime_worker/broker.py";
    let want = vec![
        limit("MAX_PATH", protocol::MAX_PATH),
        limit("MAX_HOST", protocol::MAX_HOST),
        limit("MAX_ARGS", protocol::MAX_ARGS),
        ("CONTROL_ENV".into(), Value::Str(ENV_CONTROL.into())),
    ];
    check(broker, &python(broker), "", &want, false);
    let ts = "workers/bun/buntime.ts";
    let want = vec![
        limit("MAX_PATH", protocol::MAX_PATH),
        limit("MAX_ARGS", protocol::MAX_ARGS),
    ];
    check(ts, &typescript(ts), "", &want, false);
    // The Bun worker reads the variable inline, without a constant.
    for file in ["workers/bun/ipc.ts", "workers/bun/worker.ts"] {
        assert!(
            read(file).contains(&format!("env.{ENV_CONTROL}")),
            "{file} does not read {ENV_CONTROL}"
        );
    }
}

#[test]
fn parser_reads_what_it_is_given() {
    // Guards the checks above against a parser that finds nothing.
    assert_eq!(parse_value("0x11"), Some(Value::Int(0x11)));
    assert_eq!(parse_value("256 << 10;"), Some(Value::Int(256 << 10)));
    assert_eq!(
        parse_value("int.from_bytes(b\"BNTC\", \"little\")"),
        Some(Value::Int(u32::from_le_bytes(*b"BNTC").into()))
    );
    assert_eq!(parse_value("\"X\""), Some(Value::Str("X".into())));
    assert_eq!(parse_value("getattr(x)"), None);
}

#[test]
fn python_ring_client_matches_the_layout() {
    use buntime_ipc::{layout, wait};
    let file = "workers/python/buntime_worker/doorbell.py";
    let int = |n: &str, v: u64| (n.to_string(), Value::Int(v));
    let want = vec![
        int("SEGMENT_MAGIC", layout::MAGIC.into()),
        int("LAYOUT_VERSION", layout::LAYOUT_VERSION.into()),
        int("HEADER_SIZE", layout::HEADER_SIZE as u64),
        int("RING_DATA", layout::RING_DATA as u64),
        int("MIN_CAPACITY", layout::MIN_CAPACITY.into()),
        int("MAX_CAPACITY", layout::MAX_CAPACITY.into()),
        int("MAX_PAYLOAD", protocol::MAX_PAYLOAD as u64),
        int("MAX_REASON", protocol::MAX_REASON as u64),
        int("FLAG_FD_FOLLOWS", protocol::FLAG_FD_FOLLOWS.into()),
        int("FD", ctl::FD.into()),
        int("STOP_PROTOCOL", control::stop::PROTOCOL_ERROR.into()),
        int("STOP_CORRUPTION", control::stop::CORRUPTION.into()),
        int("WAIT_DOORBELL", wait::WAIT_DOORBELL.into()),
    ];
    check(file, &python(file), "", &want, false);
    // The ring header's word indexes (u32 words from the ring's offset).
    let src = read(file);
    let words = format!(
        "_HEAD, _TAIL, _CONSUMER_WAIT, _PRODUCER_WAIT = {}, {}, {}, {}",
        layout::RING_HEAD / 4,
        layout::RING_TAIL / 4,
        layout::RING_CONSUMER_WAIT / 4,
        layout::RING_PRODUCER_WAIT / 4
    );
    assert!(src.contains(&words), "{file}: want `{words}`");
}
