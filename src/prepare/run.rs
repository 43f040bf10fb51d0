//! Run mode: what `buntime run` hands `create` instead of a bundle's
//! annotations, and its translation.

use std::path::PathBuf;

use libcontainer::oci_spec::runtime::{Mount, Spec};

use super::{landlock_abi, PrepareError, PreparedContainer};
use crate::landlock::LandlockPlan;
use crate::policy::{Policy, PolicyOrigin, ResolvedPolicy};
use crate::spec::{translate, HostLimits, SpecContext, SpecMode};

/// The policy itself (host paths), the caller's environment, and the
/// worker's own pieces the policy does not name.
#[derive(Clone, Debug, Default)]
pub struct RunSandbox {
    /// Absolute host paths.
    pub policy: Policy,
    pub origin: String,
    /// The caller's environment, filtered by the policy's env rules.
    pub host_env: Vec<(String, String)>,
    /// Variables the worker needs (`PYTHONPATH`, ...), set after filtering.
    pub worker_env: Vec<String>,
    /// Mounted after the policy's binds, so a bind of a parent (`/opt`)
    /// does not hide them.
    pub late_mounts: Vec<Mount>,
    /// Container paths Landlock must let the sandbox read / execute.
    pub landlock_read: Vec<PathBuf>,
    pub landlock_exec: Vec<PathBuf>,
    /// In a user namespace of an ordinary user: libcontainer gets no
    /// resources (its devices controller needs CAP_SYS_ADMIN); the caller
    /// writes the limits into the delegated cgroup itself.
    pub rootless: bool,
}

/// Translate a `buntime run` sandbox (Run mode: policy paths are host
/// paths, bound at the same place). The mode travels in the container's
/// metadata ([`PreparedContainer::mode`]), not in the spec.
pub fn prepare_run(bundle: &Spec, run: &RunSandbox) -> Result<PreparedContainer, PrepareError> {
    // Host paths this machine does not have (`/lib32`) cannot be bound and
    // grant nothing: they are left out of the applied policy.
    let mut policy = run.policy.clone();
    for list in [
        &mut policy.filesystem.read,
        &mut policy.filesystem.write,
        &mut policy.filesystem.exec,
    ] {
        list.retain(|p| p.as_path().exists());
    }
    let resolved = ResolvedPolicy {
        policy,
        origin: PolicyOrigin::CommandLine(run.origin.clone()),
        from_annotation: false,
        ceiling: None,
    };
    let ctx = SpecContext {
        mode: SpecMode::Run,
        host_limits: HostLimits::current(),
        proxy_port: Some(crate::proxy::PROXY_PORT),
        host_env: Some(run.host_env.clone()),
    };
    let translated = translate(&resolved.policy, bundle, &ctx)?;
    let effective = add_worker_pieces(translated.spec, run);
    let mut landlock = LandlockPlan::from_policy(&resolved.policy, &effective, ctx.proxy_port);
    landlock.read.extend(run.landlock_read.iter().cloned());
    landlock.exec.extend(run.landlock_exec.iter().cloned());
    let landlock_abi = landlock_abi(&resolved.policy, &landlock)?;
    Ok(PreparedContainer {
        resolved,
        mode: SpecMode::Run,
        effective,
        stacked_seccomp: translated.stacked_seccomp,
        landlock,
        landlock_abi,
    })
}

/// The worker's mounts and variables, and no resources for a rootless
/// sandbox.
fn add_worker_pieces(mut effective: Spec, run: &RunSandbox) -> Spec {
    let mut mounts = effective.mounts().clone().unwrap_or_default();
    mounts.extend(run.late_mounts.iter().cloned());
    effective.set_mounts(Some(mounts));
    if let Some(mut process) = effective.process().clone() {
        let mut env = process.env().clone().unwrap_or_default();
        for var in &run.worker_env {
            let name = var.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(name));
            env.push(var.clone());
        }
        process.set_env(Some(env));
        effective.set_process(Some(process));
    }
    if run.rootless {
        if let Some(mut linux) = effective.linux().clone() {
            linux.set_resources(None);
            effective.set_linux(Some(linux));
        }
    }
    effective
}
