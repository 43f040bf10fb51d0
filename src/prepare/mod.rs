//! The pipeline from a policy to what the kernel is given: policy + bundle
//! + mode -> effective spec, Landlock plan, the seccomp profile to stack.
//!
//! `policy` resolves and holds the data (where a container's policy comes
//! from, [`crate::policy::PolicySources`]); `spec` translates it (a pure
//! function); this module strings the two together for the two modes, OCI
//! (`buntime-runc create`: [`prepare_container`], or
//! [`resolve_container`] then [`prepare_resolved`]) and Run (`buntime run`:
//! [`prepare_run`]), checks that an annotation policy only narrows its
//! bundle, and plans Landlock; then finishes the spec for the container's
//! root filesystem and state directory ([`finish_for_container`]: deny
//! masks, the supervisor's directory). Nothing here has side effects:
//! `create` (`runtime::create`) writes the result to the state directory,
//! adds only what depends on files it makes there (the rootless network
//! hook, precompiled seccomp programs, the learning filter, staged binds),
//! and builds.

pub mod container;
pub mod mounts;
mod run;

use std::path::PathBuf;

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};

use crate::landlock::{LandlockError, LandlockPlan};
use crate::policy::{LandlockRequirement, Policy, PolicySources, ResolvedPolicy, SourceError};
pub use crate::spec::{check_only_narrows, NarrowingError};
use crate::spec::{translate, SpecContext, SpecError, SpecMode};

pub use container::{finish_for_container, ContainerSite, Finished};
pub use run::{prepare_run, RunSandbox};

/// Why a container's policy could not be resolved or applied. `create`
/// must fail with this message and create nothing.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Narrowing(#[from] NarrowingError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    /// The container cannot be given what its policy says (a mask through
    /// a symlink, a deny pattern's directory that cannot be listed).
    #[error("{0}")]
    Refused(String),
    #[error("{context}: {err}")]
    Io {
        context: String,
        err: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Everything `create` needs, computed without side effects.
#[derive(Clone, Debug)]
pub struct PreparedContainer {
    pub resolved: ResolvedPolicy,
    /// Whose paths the policy names; kept in the container's metadata.
    pub mode: SpecMode,
    /// Hand this to libcontainer instead of the bundle's spec; also write
    /// it to the state directory for inspection.
    pub effective: Spec,
    /// buntime's profile stacked on the bundle's own (`isolation.seccomp:
    /// buntime` with a bundle that brings a profile).
    pub stacked_seccomp: Option<LinuxSeccomp>,
    /// Apply in the container right before exec; store in the state
    /// directory for `exec`.
    pub landlock: LandlockPlan,
    /// The kernel's Landlock ABI at create time (`None`: not applied,
    /// because the policy turns it off or the kernel has none).
    pub landlock_abi: Option<u32>,
}

/// The `policies/` directory of the source checkout the running binary was
/// built in (`<repo>/target/<profile>/<bin>`), if any: searched after the
/// node's policy directory.
pub fn checkout_policies_dir() -> Option<PathBuf> {
    let exe = crate::exeseal::exe_path().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|d| d.join("Cargo.toml").is_file() && d.join("policies").is_dir())
        .map(|d| d.join("policies"))
}

/// The node's policy sources (`PolicySources::system`).
pub fn node_sources() -> Result<PolicySources, SourceError> {
    PolicySources::system(checkout_policies_dir())
}

/// The Landlock ABI the plan is applied with; `None` when it is not
/// applied: `"landlock": "off"`, or a kernel without Landlock (refused
/// before when the policy requires it).
fn landlock_abi(policy: &Policy, plan: &LandlockPlan) -> Result<Option<u32>, PrepareError> {
    // `pod` mode's TCP rule is applied even with `"landlock": "off"`
    // (the plan then has no filesystem rules).
    if policy.landlock == LandlockRequirement::Off && !plan.needs_tcp_rules() {
        return Ok(None);
    }
    Ok(plan.check_supported()?)
}

/// Resolve, translate and check a bundle's policy (OCI mode). Any error
/// means `create` must fail and create nothing.
pub fn prepare_container(
    bundle: &Spec,
    sources: &PolicySources,
    ctx: &SpecContext,
) -> Result<PreparedContainer, PrepareError> {
    let resolved = resolve_container(bundle, sources)?;
    prepare_resolved(bundle, resolved, ctx)
}

/// The policy of a bundle (OCI mode), from its annotations, the node's
/// configuration and the defaults: the first half of [`prepare_container`]
/// (`create` binds a `pod`-mode proxy between the two halves, as the
/// proxy's port goes into the spec).
pub fn resolve_container(
    bundle: &Spec,
    sources: &PolicySources,
) -> Result<ResolvedPolicy, SourceError> {
    let cwd = bundle
        .process()
        .as_ref()
        .map(|p| p.cwd().clone())
        .filter(|c| c.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/"));
    sources.resolve(bundle.annotations().as_ref(), &cwd)
}

/// Translate and check a resolved policy: the second half of
/// [`prepare_container`].
pub fn prepare_resolved(
    bundle: &Spec,
    resolved: ResolvedPolicy,
    ctx: &SpecContext,
) -> Result<PreparedContainer, PrepareError> {
    let translated = translate(&resolved.policy, bundle, ctx)?;
    if resolved.from_annotation {
        check_only_narrows(bundle, &translated.spec)?;
    }
    let landlock = LandlockPlan::from_policy(&resolved.policy, &translated.spec, ctx.proxy_port);
    let landlock_abi = landlock_abi(&resolved.policy, &landlock)?;
    Ok(PreparedContainer {
        resolved,
        mode: SpecMode::Oci,
        effective: translated.spec,
        stacked_seccomp: translated.stacked_seccomp,
        landlock,
        landlock_abi,
    })
}

#[cfg(test)]
mod tests;
