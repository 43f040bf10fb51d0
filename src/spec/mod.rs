//! Translation of a policy into an OCI runtime spec: one pure function,
//! `policy + bundle spec -> effective spec` ([`effective_spec`]), and the
//! check that a spec derived from an annotation policy only takes rights
//! away ([`check_only_narrows`]).

pub mod capabilities;
mod env;
pub mod narrow;
pub mod seccomp;
mod translate;

use std::path::PathBuf;

use libcontainer::oci_spec::runtime::{
    LinuxNamespaceType, LinuxSeccomp, Mount, PosixRlimitType, Spec,
};

use crate::policy::Policy;

pub use env::{filter_env, process_env, proxy_vars, split_env};
pub use narrow::{check_only_narrows, NarrowingError};
pub use seccomp::default_seccomp;
#[cfg(test)]
use translate::bind_mount;
pub use translate::{seccomp_placement, translate, SeccompPlacement, Translated};

/// Where the spec is used. Also the container's mode in its metadata
/// (`runtime::state::Meta`): the supervisor opens a `Run` container's
/// policy paths on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecMode {
    /// `buntime-runc create`: the bundle's rootfs is the sandbox's world;
    /// no host path is ever added.
    #[default]
    Oci,
    /// `buntime run`: the person running it binds their own host paths;
    /// policy paths are host paths, bound at the same place.
    Run,
}

/// Hard resource limits of the host; the spec never asks for more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLimits {
    /// (type, hard limit); `u64::MAX` means unlimited. Types not listed are
    /// treated as unlimited.
    pub hard: Vec<(PosixRlimitType, u64)>,
}

impl HostLimits {
    /// The calling process's hard limits (what a child could get at most).
    pub fn current() -> Self {
        let read = |res: libc::__rlimit_resource_t| -> u64 {
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit only writes the struct we pass.
            let rc = unsafe { libc::getrlimit(res, &mut r) };
            if rc != 0 || r.rlim_max == libc::RLIM_INFINITY {
                u64::MAX
            } else {
                r.rlim_max
            }
        };
        HostLimits {
            hard: vec![
                (PosixRlimitType::RlimitNofile, read(libc::RLIMIT_NOFILE)),
                (PosixRlimitType::RlimitCore, read(libc::RLIMIT_CORE)),
                (PosixRlimitType::RlimitFsize, read(libc::RLIMIT_FSIZE)),
                (PosixRlimitType::RlimitNproc, read(libc::RLIMIT_NPROC)),
                (PosixRlimitType::RlimitStack, read(libc::RLIMIT_STACK)),
                (PosixRlimitType::RlimitMemlock, read(libc::RLIMIT_MEMLOCK)),
                (PosixRlimitType::RlimitAs, read(libc::RLIMIT_AS)),
            ],
        }
    }

    /// No limits at all (for tests and golden files).
    pub fn unlimited() -> Self {
        HostLimits { hard: Vec::new() }
    }

    pub fn hard(&self, typ: PosixRlimitType) -> u64 {
        self.hard
            .iter()
            .find(|(t, _)| *t == typ)
            .map_or(u64::MAX, |(_, v)| *v)
    }
}

/// Everything besides the policy and the bundle that the translation needs.
#[derive(Clone, Debug)]
pub struct SpecContext {
    pub mode: SpecMode,
    pub host_limits: HostLimits,
    /// The allow-list proxy's TCP port in `proxy` and `pod` modes (Landlock
    /// and the proxy variables).
    pub proxy_port: Option<u16>,
    /// In `Run` mode, the caller's environment, filtered by the env rules.
    /// `None`: the bundle's `process.env` is the environment filtered.
    pub host_env: Option<Vec<(String, String)>>,
}

impl SpecContext {
    /// OCI mode with the host's real limits.
    pub fn oci() -> Self {
        SpecContext {
            mode: SpecMode::Oci,
            host_limits: HostLimits::current(),
            proxy_port: Some(crate::proxy::PROXY_PORT),
            host_env: None,
        }
    }
}

/// Errors of the translation.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("policy path {0:?} is relative; resolve policy paths before translating")]
    RelativePath(String),
    #[error("network.mode \"pod\" keeps the network namespace the bundle gives, but this bundle has none (it shares the host's network, e.g. hostNetwork or --network host); give the container a network namespace, or use a policy whose network.mode is \"host\"")]
    PodWithoutNetns,
    #[error("network.mode \"pod\" is for containers an engine runs in a pod's network namespace; `buntime run` has none: use \"proxy\"")]
    PodInRun,
}

/// The network namespace a `pod`-mode container keeps: `Some(path)` when
/// the bundle joins one (a pod's, made before the container), `None` when
/// the container makes its own. A bundle without one is refused.
pub fn pod_netns(bundle: &Spec) -> Result<Option<PathBuf>, SpecError> {
    bundle
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
        .map(|n| n.path().clone())
        .ok_or(SpecError::PodWithoutNetns)
}

/// runc's default masked paths.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Used when the env rules leave no PATH: a search path is not a secret and
/// without one the entrypoint could not be found.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CFS period we use with a CPU quota (100ms, the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// A bind mount: by type, or by a `bind`/`rbind` option.
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// The effective spec for running `bundle` under `policy` (see
/// [`translate`]).
pub fn effective_spec(
    policy: &Policy,
    bundle: &Spec,
    ctx: &SpecContext,
) -> Result<Spec, SpecError> {
    translate(policy, bundle, ctx).map(|t| t.spec)
}

/// The profile `create` stacks on the bundle's own seccomp profile
/// ([`seccomp_placement`]).
pub fn stacked_seccomp(policy: &Policy, bundle: &Spec) -> Option<LinuxSeccomp> {
    match seccomp_placement(policy, bundle) {
        SeccompPlacement::Stacked(ours) => Some(ours),
        _ => None,
    }
}

/// A stable JSON form of a spec for golden files and the state directory:
/// object keys sorted, capability sets sorted.
pub fn canonical_spec_json(spec: &Spec) -> serde_json::Value {
    fn sort(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.sort_keys();
                for (k, val) in m.iter_mut() {
                    if matches!(
                        k.as_str(),
                        "bounding" | "effective" | "inheritable" | "permitted" | "ambient"
                    ) {
                        if let serde_json::Value::Array(a) = val {
                            a.sort_by_key(|x| x.to_string());
                        }
                    }
                    sort(val);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(sort),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    sort(&mut v);
    v
}

/// The spec makes a namespace of `typ` of its own (not one joined by path).
pub fn has_new_ns(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == typ && n.path().is_none()))
}

#[cfg(test)]
mod tests;
