//! Deno-style permission flags -> policy, shared by `buntime init-policy`
//! and (later) `buntime run`, which flattens [`PolicyFlags`].
//!
//! Grammar: `--allow-read[=P,…]`, `--allow-write[=P,…]`, `--allow-net[=H,…]`,
//! `--allow-run[=PROG,…]`, `--allow-env[=NAME,…]`, `--deny-read=P,…`,
//! `--deny-net=H,…`, plus `--net=MODE`, `--memory`, `--cpu`, `--pids`,
//! `--timeout`, `--output`. A flag without a value grants everything of
//! its kind (`--allow-net` alone: any public host through the proxy).
//! Flags repeat and add up. They extend a base policy (`--base`, the
//! built-in default unless told otherwise).

use std::num::NonZeroU32;
use std::path::Path;

use clap::Args;

use super::model::{ByteSize, Cpus, EnvPattern, FsPath, NetMode, Policy, Program, TimeSpan};
use super::net::NetRule;
use super::{builtin_policy, load_policy_file, LoadError, PolicyError};

/// The permission flags.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct PolicyFlags {
    /// Start from this policy: a shipped name (default, strict, no-network,
    /// python-dev), "none" for an empty deny-all policy, or a file.
    #[arg(long, value_name = "NAME|FILE", default_value = "default")]
    pub base: String,

    /// Allow reading these paths (all paths if no value).
    #[arg(long = "allow-read", value_name = "PATH,…", num_args = 0..=1, require_equals = true,
          default_missing_value = "", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub allow_read: Vec<String>,

    /// Allow writing (and reading) these paths (all paths if no value).
    #[arg(long = "allow-write", value_name = "PATH,…", num_args = 0..=1, require_equals = true,
          default_missing_value = "", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub allow_write: Vec<String>,

    /// Allow reaching these hosts through the proxy: names, *.domain,
    /// host:port, IPs, CIDR ranges (any public host if no value).
    #[arg(long = "allow-net", value_name = "HOST,…", num_args = 0..=1, require_equals = true,
          default_missing_value = "", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub allow_net: Vec<String>,

    /// Allow running these programs: absolute paths or names in PATH (any
    /// program if no value).
    #[arg(long = "allow-run", value_name = "PROGRAM,…", num_args = 0..=1, require_equals = true,
          default_missing_value = "", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub allow_run: Vec<String>,

    /// Pass these host environment variables in: names or PREFIX_* (all if
    /// no value).
    #[arg(long = "allow-env", value_name = "NAME,…", num_args = 0..=1, require_equals = true,
          default_missing_value = "", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub allow_env: Vec<String>,

    /// Never allow these paths, even inside allowed ones.
    #[arg(long = "deny-read", value_name = "PATH,…", require_equals = true,
          value_delimiter = ',', action = clap::ArgAction::Append)]
    pub deny_read: Vec<String>,

    /// Never allow these destinations.
    #[arg(long = "deny-net", value_name = "HOST,…", require_equals = true,
          value_delimiter = ',', action = clap::ArgAction::Append)]
    pub deny_net: Vec<String>,

    /// Network mode: none, proxy, bundle (the template's own namespace,
    /// inet sockets allowed) or host.
    #[arg(long = "net", value_name = "MODE", require_equals = true)]
    pub net: Option<String>,

    /// Memory limit, e.g. 512M or 2G.
    #[arg(long, value_name = "SIZE", require_equals = true)]
    pub memory: Option<String>,

    /// CPU cores, fractional allowed (e.g. 0.5).
    #[arg(long, value_name = "CORES", require_equals = true)]
    pub cpu: Option<String>,

    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N", require_equals = true)]
    pub pids: Option<String>,

    /// Wall-clock timeout, e.g. 30s, 5m.
    #[arg(long, value_name = "DURATION", require_equals = true)]
    pub timeout: Option<String>,

    /// Output-size limit, e.g. 10M.
    #[arg(long, value_name = "SIZE", require_equals = true)]
    pub output: Option<String>,
}

/// A flag value that does not fit its grammar, or a base that cannot load.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("--{flag}: {message}")]
    Invalid { flag: &'static str, message: String },
    #[error("--base: {0}")]
    Base(#[from] LoadError),
    #[error("--base: {0}")]
    BuiltinBase(PolicyError),
}

fn invalid(flag: &'static str, message: impl Into<String>) -> FlagError {
    FlagError::Invalid {
        flag,
        message: message.into(),
    }
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, item: T) {
    if !v.contains(&item) {
        v.push(item);
    }
}

impl PolicyFlags {
    /// True when no flag beyond `--base` was given.
    pub fn is_empty(&self) -> bool {
        *self
            == PolicyFlags {
                base: self.base.clone(),
                ..PolicyFlags::default()
            }
    }

    /// Load the base policy named by `--base` (files relative to `cwd`).
    pub fn base_policy(&self, cwd: &Path) -> Result<Policy, FlagError> {
        match self.base.as_str() {
            "none" | "" => Ok(Policy::default()),
            name => {
                let looks_like_file = name.contains('/') || Path::new(name).exists();
                if !looks_like_file {
                    if let Some(p) = builtin_policy(name) {
                        return p.map_err(FlagError::BuiltinBase);
                    }
                }
                Ok(load_policy_file(&cwd.join(name))?)
            }
        }
    }

    /// The base policy with these flags applied.
    pub fn to_policy(&self, cwd: &Path) -> Result<Policy, FlagError> {
        let base = self.base_policy(cwd)?;
        self.apply(base)
    }

    /// Apply the flags to `policy`. Paths are kept as written (relative
    /// ones resolve where the policy is used).
    pub fn apply(&self, mut policy: Policy) -> Result<Policy, FlagError> {
        self.apply_fs(&mut policy)?;
        self.apply_run_env(&mut policy)?;
        self.apply_net(&mut policy)?;
        self.apply_resources(&mut policy)?;
        Ok(policy)
    }

    /// `--allow-read`, `--allow-write`, `--deny-read`.
    fn apply_fs(&self, policy: &mut Policy) -> Result<(), FlagError> {
        use super::paths::{check_deny_path, check_grant_path};
        for s in &self.allow_read {
            check_grant_path(s).map_err(|m| invalid("allow-read", m))?;
            push_unique(&mut policy.filesystem.read, flag_path("allow-read", s)?);
        }
        for s in &self.allow_write {
            check_grant_path(s).map_err(|m| invalid("allow-write", m))?;
            push_unique(&mut policy.filesystem.write, flag_path("allow-write", s)?);
        }
        for s in &self.deny_read {
            if s.is_empty() {
                return Err(invalid("deny-read", "expected a path"));
            }
            check_deny_path(s).map_err(|m| invalid("deny-read", m))?;
            push_unique(&mut policy.filesystem.deny, flag_path("deny-read", s)?);
        }
        Ok(())
    }

    /// `--allow-run`, `--allow-env`.
    fn apply_run_env(&self, policy: &mut Policy) -> Result<(), FlagError> {
        for s in &self.allow_run {
            if s.is_empty() {
                push_unique(&mut policy.filesystem.exec, flag_path("allow-run", "/")?);
            } else {
                let prog = Program::new(s.as_str()).map_err(|m| invalid("allow-run", m))?;
                push_unique(&mut policy.exec.allow, prog);
            }
        }
        for s in &self.allow_env {
            let pat = if s.is_empty() { "*" } else { s.as_str() };
            let pat = EnvPattern::new(pat).map_err(|m| invalid("allow-env", m))?;
            push_unique(&mut policy.env.pass, pat);
        }
        Ok(())
    }

    /// `--allow-net`, `--deny-net`, `--net`.
    fn apply_net(&self, policy: &mut Policy) -> Result<(), FlagError> {
        if !self.allow_net.is_empty() {
            // Reaching a host means going through the proxy, unless the
            // caller asked for host networking explicitly.
            if policy.network.mode == NetMode::None {
                policy.network.mode = NetMode::Proxy;
            }
            for s in &self.allow_net {
                let s = if s.is_empty() { "*" } else { s.as_str() };
                let r = NetRule::parse(s).map_err(|m| invalid("allow-net", m))?;
                push_unique(&mut policy.network.allow, r);
            }
        }
        for s in &self.deny_net {
            let r = NetRule::parse(s).map_err(|m| invalid("deny-net", m))?;
            push_unique(&mut policy.network.deny, r);
        }
        if let Some(m) = &self.net {
            policy.network.mode = match m.as_str() {
                "none" => NetMode::None,
                "proxy" => NetMode::Proxy,
                "pod" => NetMode::Pod,
                "bundle" => NetMode::Bundle,
                "host" => NetMode::Host,
                other => {
                    return Err(invalid(
                        "net",
                        format!("expected one of none, proxy, pod, bundle, host, got {other:?}"),
                    ))
                }
            };
        }
        Ok(())
    }

    /// `--memory`, `--output`, `--timeout`, `--cpu`, `--pids`.
    fn apply_resources(&self, policy: &mut Policy) -> Result<(), FlagError> {
        let r = &mut policy.resources;
        if let Some(s) = &self.memory {
            r.memory = Some(ByteSize::parse(s).map_err(|m| invalid("memory", m))?);
        }
        if let Some(s) = &self.output {
            r.output = Some(ByteSize::parse(s).map_err(|m| invalid("output", m))?);
        }
        if let Some(s) = &self.timeout {
            r.timeout = Some(TimeSpan::parse(s).map_err(|m| invalid("timeout", m))?);
        }
        if let Some(s) = &self.cpu {
            let v: f64 = s.parse().map_err(|_| {
                invalid("cpu", format!("expected a number of CPU cores, got {s:?}"))
            })?;
            r.cpu = Some(Cpus::new(v).map_err(|m| invalid("cpu", m))?);
        }
        if let Some(s) = &self.pids {
            let n: NonZeroU32 = s.parse().map_err(|_| {
                invalid(
                    "pids",
                    format!("expected a positive number of processes, got {s:?}"),
                )
            })?;
            r.pids = Some(n);
        }
        Ok(())
    }
}

/// A path flag's value (empty: `/`).
fn flag_path(flag: &'static str, s: &str) -> Result<FsPath, FlagError> {
    let s = if s.is_empty() { "/" } else { s };
    FsPath::new(s).map_err(|m| invalid(flag, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        flags: PolicyFlags,
    }

    fn flags(args: &[&str]) -> PolicyFlags {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap().flags
    }

    fn policy(args: &[&str]) -> Policy {
        flags(args).to_policy(Path::new("/")).unwrap()
    }

    fn err(args: &[&str]) -> String {
        flags(args)
            .to_policy(Path::new("/"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn lists_split_on_commas_and_repeat() {
        let p = policy(&[
            "--base=none",
            "--allow-read=/a,/b",
            "--allow-read=/c",
            "--allow-write=out",
        ]);
        let read: Vec<_> = p.filesystem.read.iter().map(|p| p.as_str()).collect();
        assert_eq!(read, ["/a", "/b", "/c"]);
        assert_eq!(p.filesystem.write[0].as_str(), "out");
    }

    #[test]
    fn bare_flags_grant_everything_of_their_kind() {
        let p = policy(&[
            "--base=none",
            "--allow-read",
            "--allow-net",
            "--allow-env",
            "--allow-run",
        ]);
        assert_eq!(p.filesystem.read[0].as_str(), "/");
        assert_eq!(p.network.mode, NetMode::Proxy);
        assert_eq!(p.network.allow[0].to_string(), "*");
        assert_eq!(p.env.pass[0].as_str(), "*");
        assert_eq!(p.filesystem.exec[0].as_str(), "/");
    }

    #[test]
    fn net_rules_and_modes() {
        let p = policy(&[
            "--base=none",
            "--allow-net=pypi.org:443,*.pythonhosted.org",
            "--deny-net=10.0.0.0/8",
        ]);
        assert_eq!(p.network.mode, NetMode::Proxy);
        assert_eq!(p.network.allow.len(), 2);
        assert_eq!(p.network.deny[0].to_string(), "10.0.0.0/8");
        let p = policy(&["--base=none", "--allow-net=example.com", "--net=host"]);
        assert_eq!(p.network.mode, NetMode::Host);
        let p = policy(&["--base=none", "--net=bundle"]);
        assert_eq!(p.network.mode, NetMode::Bundle);
    }

    #[test]
    fn programs_env_and_resources() {
        let p = policy(&[
            "--base=none",
            "--allow-run=python3,/bin/sh",
            "--allow-env=PATH,LC_*",
            "--memory=512M",
            "--timeout=30s",
            "--cpu=0.5",
            "--pids=32",
            "--output=1M",
            "--deny-read=/etc/shadow",
        ]);
        assert_eq!(p.exec.allow.len(), 2);
        assert_eq!(p.env.pass[1].as_str(), "LC_*");
        assert_eq!(p.resources.memory, Some(ByteSize(512 << 20)));
        assert_eq!(p.resources.timeout, Some(TimeSpan(30_000)));
        assert_eq!(p.resources.cpu.map(|c| c.get()), Some(0.5));
        assert_eq!(p.resources.pids.map(|n| n.get()), Some(32));
        assert_eq!(p.filesystem.deny[0].as_str(), "/etc/shadow");
    }

    #[test]
    fn base_default_is_extended() {
        let p = policy(&["--allow-read=/data"]);
        assert!(p.filesystem.read.iter().any(|x| x.as_str() == "/usr"));
        assert!(p.filesystem.read.iter().any(|x| x.as_str() == "/data"));
        let p = policy(&["--base=strict"]);
        assert_eq!(p, crate::policy::builtin_policy("strict").unwrap().unwrap());
    }

    #[test]
    fn bad_values_name_the_flag_and_expectation() {
        let e = err(&["--allow-net=bad host"]);
        assert!(e.starts_with("--allow-net: expected a host name"), "{e}");
        let e = err(&["--allow-net=example.com:0"]);
        assert!(e.contains("expected a port between 1 and 65535"), "{e}");
        let e = err(&["--memory=lots"]);
        assert!(e.starts_with("--memory: expected a size"), "{e}");
        let e = err(&["--timeout=1d"]);
        assert!(e.starts_with("--timeout: expected a duration"), "{e}");
        let e = err(&["--allow-env=A-B"]);
        assert!(
            e.starts_with("--allow-env: expected a variable name"),
            "{e}"
        );
        let e = err(&["--allow-run=bin/sh"]);
        assert!(
            e.starts_with("--allow-run: expected an absolute path"),
            "{e}"
        );
        let e = err(&["--cpu=-1"]);
        assert!(
            e.starts_with("--cpu: expected a number of CPU cores"),
            "{e}"
        );
        let e = err(&["--pids=0"]);
        assert!(e.starts_with("--pids: expected a positive number"), "{e}");
        let e = err(&["--net=open"]);
        assert!(
            e.contains("expected one of none, proxy, pod, bundle, host"),
            "{e}"
        );
        let e = err(&["--allow-read=~/x"]);
        assert!(e.contains("\"~\" is not expanded"), "{e}");
        let e = err(&["--base=/nonexistent/p.json"]);
        assert!(
            e.starts_with("--base: /nonexistent/p.json: cannot read policy"),
            "{e}"
        );
    }

    #[test]
    fn equals_is_required_so_values_are_not_swallowed() {
        // `--allow-read /x` must not silently take /x as the value.
        let mut v = vec!["t", "--allow-read", "/x"];
        assert!(Cli::try_parse_from(v.drain(..)).is_err());
    }
}
