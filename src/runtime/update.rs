//! `update`: change a running container's cgroup limits.

use std::fs;
use std::io::Read;
use std::path::Path;

use libcgroups::common::{CgroupManager, ControllerOpt};
use libcontainer::oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};

use super::bundle::{parse_spec, write_stored_spec};
use super::cgroup;
use super::error::{Result, RuntimeError};
use super::state::Root;

/// Limits given as flags; each overrides the same field of `--resources`.
#[derive(Debug, Clone, Default)]
pub struct UpdateOptions {
    pub resources: Option<String>,
    pub memory: Option<String>,
    pub memory_reservation: Option<String>,
    pub memory_swap: Option<String>,
    pub pids_limit: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub blkio_weight: Option<u16>,
}

/// Parses a byte size as the policy does (`512m`, `1G`, bytes), plus runc's
/// -1 for unlimited.
pub fn parse_bytes(flag: &str, text: &str) -> Result<i64> {
    if text.trim() == "-1" {
        return Ok(-1);
    }
    crate::policy::ByteSize::parse(text.trim())
        .ok()
        .and_then(|b| i64::try_from(b.bytes()).ok())
        .ok_or_else(|| {
            RuntimeError::Invalid(format!(
                "invalid {flag} {text:?}: expected bytes, e.g. 512m"
            ))
        })
}

fn read_resources(source: &str) -> Result<Value> {
    let (name, text) = if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| RuntimeError::io("read --resources from stdin", e))?;
        ("<stdin>".to_string(), s)
    } else {
        let s = fs::read_to_string(source)
            .map_err(|e| RuntimeError::io(format!("--resources {source}"), e))?;
        (source.to_string(), s)
    };
    serde_json::from_str(&text)
        .map_err(|e| RuntimeError::Invalid(format!("--resources {name}: {e}")))
}

fn set(obj: &mut Value, section: &str, key: &str, value: Value) {
    if !obj.is_object() {
        *obj = json!({});
    }
    if let Some(map) = obj.as_object_mut() {
        let entry = map
            .entry(section.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(inner) = entry.as_object_mut() {
            inner.insert(key.to_string(), value);
        }
    }
}

/// Builds the resources from the file and the flags.
pub fn resources(opts: &UpdateOptions) -> Result<LinuxResources> {
    let mut v = match &opts.resources {
        Some(src) => read_resources(src)?,
        None => json!({}),
    };
    if let Some(m) = &opts.memory {
        set(
            &mut v,
            "memory",
            "limit",
            json!(parse_bytes("--memory", m)?),
        );
    }
    if let Some(m) = &opts.memory_reservation {
        let n = parse_bytes("--memory-reservation", m)?;
        set(&mut v, "memory", "reservation", json!(n));
    }
    if let Some(m) = &opts.memory_swap {
        set(
            &mut v,
            "memory",
            "swap",
            json!(parse_bytes("--memory-swap", m)?),
        );
    }
    if let Some(p) = opts.pids_limit {
        set(&mut v, "pids", "limit", json!(p));
    }
    if let Some(q) = opts.cpu_quota {
        set(&mut v, "cpu", "quota", json!(q));
    }
    if let Some(p) = opts.cpu_period {
        set(&mut v, "cpu", "period", json!(p));
    }
    if let Some(s) = opts.cpu_shares {
        set(&mut v, "cpu", "shares", json!(s));
    }
    if let Some(c) = &opts.cpuset_cpus {
        set(&mut v, "cpu", "cpus", json!(c));
    }
    if let Some(m) = &opts.cpuset_mems {
        set(&mut v, "cpu", "mems", json!(m));
    }
    if let Some(w) = opts.blkio_weight {
        set(&mut v, "blockIO", "weight", json!(w));
    }
    let de = v.clone();
    serde_path_to_error::deserialize::<_, LinuxResources>(de)
        .map_err(|e| RuntimeError::Invalid(format!("--resources: {}: {}", e.path(), e.inner())))
}

/// Applies new limits to the container's cgroup and records them in its
/// effective spec.
pub fn update(root: &Root, id: &str, opts: &UpdateOptions) -> Result<()> {
    let c = root.load(id)?;
    let res = resources(opts)?;
    let mgr = cgroup::manager(&c)?;
    mgr.apply(&ControllerOpt {
        resources: &res,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(|e| RuntimeError::backend(format!("update cgroup of {id:?}"), &e))?;
    record(&root.extra_dir(id), &res)
}

/// Merges the applied limits into the stored effective spec, so `exec` and
/// later readers see what is in force.
fn record(extra: &Path, res: &LinuxResources) -> Result<()> {
    let file = extra.join(crate::statedir::SPEC_FILE);
    let Ok(text) = fs::read(&file) else {
        return Ok(());
    };
    let mut spec = parse_spec(&file, &text)?;
    if let Some(mut linux) = spec.linux().clone() {
        let mut cur = linux.resources().clone().unwrap_or_default();
        if res.memory().is_some() {
            cur.set_memory(*res.memory());
        }
        if res.cpu().is_some() {
            cur.set_cpu(res.cpu().clone());
        }
        if res.pids().is_some() {
            cur.set_pids(*res.pids());
        }
        if res.block_io().is_some() {
            cur.set_block_io(res.block_io().clone());
        }
        linux.set_resources(Some(cur));
        spec.set_linux(Some(linux));
    }
    write_stored_spec(extra, &spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("--memory", "512m").ok(), Some(512 << 20));
        assert_eq!(parse_bytes("--memory", "1G").ok(), Some(1 << 30));
        assert_eq!(parse_bytes("--memory", "4096").ok(), Some(4096));
        assert_eq!(parse_bytes("--memory", "-1").ok(), Some(-1));
        let err = parse_bytes("--memory", "lots").expect_err("bad");
        assert!(err.to_string().contains("--memory"));
    }

    #[test]
    fn flags_become_resources() {
        let opts = UpdateOptions {
            memory: Some("64m".into()),
            pids_limit: Some(10),
            ..Default::default()
        };
        let r = resources(&opts).expect("resources");
        assert_eq!(r.memory().as_ref().and_then(|m| m.limit()), Some(64 << 20));
        assert_eq!(r.pids().as_ref().map(|p| p.limit()), Some(10));
    }
}
