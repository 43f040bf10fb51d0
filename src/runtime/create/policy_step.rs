//! `create`'s first step: the container's policy, prepared
//! (`crate::prepare`), and what OCI mode adds around it (learning, the
//! `pod`-mode proxy bound in the pod's namespace).

use std::net::TcpListener;

use libcontainer::oci_spec::runtime::Spec;

use crate::policy::NetMode;
use crate::prepare::{prepare_resolved, prepare_run, resolve_container, PreparedContainer};
use crate::runtime::error::{Result, RuntimeError};
use crate::spec::SpecContext;

/// The prepared policy and what goes with it.
pub(super) struct PolicyStep {
    pub prepared: PreparedContainer,
    /// `buntime.dev/learn`: observed under its own policy (learn).
    pub learning: bool,
    /// `pod` mode in a namespace the bundle joins: the proxy's listener.
    pub pod_listener: Option<TcpListener>,
    /// Where the container's proxy listens, if it has one.
    pub proxy_port: Option<u16>,
}

fn policy_err(e: impl ToString) -> RuntimeError {
    RuntimeError::Policy(e.to_string())
}

/// The policy: resolved from annotations, node config and defaults, or
/// given by `buntime run`, and translated into the spec libcontainer runs.
/// Any error: nothing made.
pub(super) fn prepare_policy(
    base: &Spec,
    sandbox: Option<&crate::prepare::RunSandbox>,
) -> Result<PolicyStep> {
    let (prepared, learning, pod_listener) = match sandbox {
        None => prepare_oci(base)?,
        Some(run) => (prepare_run(base, run).map_err(policy_err)?, false, None),
    };
    let proxy_port = match (&pod_listener, prepared.resolved.policy.network.mode) {
        (Some(l), _) => l.local_addr().ok().map(|a| a.port()),
        (None, m) if m.is_proxied() => Some(crate::proxy::PROXY_PORT),
        _ => None,
    };
    Ok(PolicyStep {
        prepared,
        learning,
        pod_listener,
        proxy_port,
    })
}

fn prepare_oci(base: &Spec) -> Result<(PreparedContainer, bool, Option<TcpListener>)> {
    let sources = crate::prepare::node_sources().map_err(policy_err)?;
    let learning =
        crate::learn::container::requested(base, &sources).map_err(RuntimeError::Policy)?;
    let resolved = resolve_container(base, &sources).map_err(policy_err)?;
    let mut ctx = SpecContext::oci();
    let mut pod_listener = None;
    if resolved.policy.network.mode == NetMode::Pod {
        if let Some(l) = bind_pod_proxy(base)? {
            ctx.proxy_port = Some(
                l.local_addr()
                    .map_err(|e| RuntimeError::io("the pod proxy's address", e))?
                    .port(),
            );
            pod_listener = Some(l);
        }
    }
    let prepared = prepare_resolved(base, resolved, &ctx).map_err(policy_err)?;
    Ok((prepared, learning, pod_listener))
}

/// `pod` mode in a namespace the bundle joins (the pod's): the proxy is
/// bound there now, on a port of its own (the pod's containers share its
/// loopback), as the port goes into the spec.
fn bind_pod_proxy(base: &Spec) -> Result<Option<TcpListener>> {
    let Some(path) = crate::spec::pod_netns(base).map_err(policy_err)? else {
        return Ok(None);
    };
    crate::proxy::bind_in_netns_path(&path, 0)
        .map(Some)
        .map_err(|e| {
            RuntimeError::Policy(format!(
                "network.mode \"pod\": bind the proxy on 127.0.0.1 in the pod's network namespace {}: {e}",
                path.display()
            ))
        })
}
