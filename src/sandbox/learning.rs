//! `buntime run --learn` (docs/learn.md): the observer the sandbox's
//! seccomp notifications go to, and the learning proxy that learns the
//! hosts proxy-aware clients ask for by name.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use super::{sandbox_host_ids, setup, RunRequest, SandboxError};
use crate::learn::proxy::{LearningProxy, Serving};
use crate::learn::{Listener, Observed};

/// What a learned run adds to a run.
pub(super) struct Learning {
    listener: Listener,
    addr: SocketAddr,
    /// Until it serves (after the create: threads only then).
    bound: Option<LearningProxy>,
    serving: Option<Serving>,
    /// The base policy, for the learning proxy.
    base: crate::policy::Policy,
}

/// Learn mode: the listener attached to `spec`, and the learning proxy
/// bound, its variables in the run's environment (`worker_env`, set after
/// the env rules, as in proxy mode: loopback stays direct).
pub(super) fn start(
    req: &RunRequest,
    bundle: &Path,
    spec: &mut libcontainer::oci_spec::runtime::Spec,
    sandbox: &mut crate::prepare::RunSandbox,
) -> Result<Option<Learning>, SandboxError> {
    let Some(base) = &req.learn else {
        return Ok(None);
    };
    // Said before anything of the run's happens, not only after (once:
    // a run re-executed from a sealed copy, `exeseal`, said it already).
    if crate::exeseal::sealed().is_none() {
        crate::logging::say(
        "buntime: --learn: this run is NOT sandboxed by filesystem or network rules (it may read, write, run and connect as far as its uid may; docs/learn.md): learn only with code you would run without a sandbox",
        );
    }
    let proxy = LearningProxy::bind().map_err(|e| {
        setup(format!(
            "--learn: bind the learning proxy on 127.0.0.1: {e}"
        ))
    })?;
    let addr = proxy.addr();
    sandbox
        .worker_env
        .extend(crate::spec::proxy_vars(addr.port(), true));
    let dir = bundle.join("learn");
    let listener = Listener::start(&dir).map_err(|e| {
        setup(format!(
            "--learn: listen on {}: {e}",
            dir.join(crate::learn::observe::SOCKET_NAME).display()
        ))
    })?;
    crate::learn::observe::attach(spec, &listener.socket).map_err(setup)?;
    Ok(Some(Learning {
        listener,
        addr,
        bound: Some(proxy),
        serving: None,
        base: base.clone(),
    }))
}

impl Learning {
    /// Serves the learning proxy for sandbox `id`, auditing to its log in
    /// `state` (the supervisor's, which learning reads).
    pub(super) fn serve(&mut self, state: &Path, id: &str) -> Result<(), SandboxError> {
        let Some(proxy) = self.bound.take() else {
            return Ok(());
        };
        // A quota of its own, well under the supervisor's, so the two
        // writers of the file stay below its rotation size together.
        let quota = crate::audit::Quota {
            all: 8 << 20,
            allow: 6 << 20,
        };
        let path = state.join(crate::statedir::AUDIT_FILE);
        let log = crate::audit::AuditLog::open_with(&path, crate::audit::MAX_AUDIT_BYTES, quota)
            .map_err(|e| setup(format!("--learn: the learning proxy's audit log: {e}")))?;
        let serving = proxy
            .serve(log, id, sandbox_host_ids(), self.base.clone())
            .map_err(|e| setup(format!("--learn: learning proxy thread: {e}")))?;
        tracing::debug!(target: "cli", "run: learning proxy on {}", self.addr);
        self.serving = Some(serving);
        Ok(())
    }

    /// Once the sandbox has exited: the proxy's last audit lines written.
    pub(super) fn wind_down(&self) {
        if let Some(s) = &self.serving {
            s.wind_down(Instant::now() + crate::supervisor::WIND_DOWN);
        }
    }

    /// What the run was seen to use: the observer's record, with the hosts
    /// asked of the learning proxy by name, and the proxy's port (connects
    /// to it are buntime's own, as its worker files are: not granted).
    pub(super) fn finish(self, records: &[crate::audit::AuditRecord]) -> Observed {
        let mut seen = self.listener.finish();
        seen.proxy = Some(self.addr.port());
        seen.events
            .extend(crate::learn::proxy::hosts_asked(records));
        seen.records_dropped = crate::learn::records_dropped(records);
        seen
    }
}
