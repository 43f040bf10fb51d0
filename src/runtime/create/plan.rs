//! `create`'s plan of the container, and the steps that carry it out:
//! the prepared spec finished for this root filesystem and state directory
//! ([`Plan::make`], no side effects), the state written and the spec's
//! last edits, which need files made ([`Plan::write_state`]),
//! the supervisor started ([`Plan::start_supervisor`]), the metadata
//! ([`Plan::write_meta`]).

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Spec};

use super::denied::make_denied_file;
use super::policy_step::PolicyStep;
use super::seccomp_files::precompile_seccomp;
use super::{has_new_netns, has_new_userns, landlock_note, CreateOptions};
use super::{ANNOTATION_PROXY, ANNOTATION_SUPERVISOR_OFF};
use crate::landlock::LandlockPlan;
use crate::policy::ResolvedPolicy;
use crate::prepare::{finish_for_container, ContainerSite};
use crate::runtime::error::{Result, RuntimeError};
use crate::runtime::refusal::PolicyRef;
use crate::runtime::seccomp_bpf::Program;
use crate::runtime::state::{Meta, Root};
use crate::runtime::userns::{self, MappedRoot};
use crate::spec::{canonical_spec_json, SpecMode};
use crate::statedir::{StateDir, EFFECTIVE_FILE, LANDLOCK_FILE, POLICY_FILE};

/// Everything `create` knows about the container before and while it
/// makes it.
pub(super) struct Plan {
    pub resolved: ResolvedPolicy,
    pub mode: SpecMode,
    /// The spec libcontainer runs, finished step by step.
    pub spec: Spec,
    pub stacked_seccomp: Option<LinuxSeccomp>,
    pub landlock: LandlockPlan,
    pub landlock_abi: Option<u32>,
    pub rootfs: PathBuf,
    pub learning: bool,
    /// A learning container's state directory, held open while `create`
    /// runs: libcontainer (this process) reaches the learn socket through
    /// it (`/proc/self/fd/N/learn.sock`), since the absolute path can be
    /// longer than a socket address (containerd's ids are 64 characters).
    pub learn_dir: Option<std::os::fd::OwnedFd>,
    pub pod_listener: Option<TcpListener>,
    pub proxy_port: Option<u16>,
    /// A user namespace's root that cannot reach the state directory.
    pub mapped_root: Option<MappedRoot>,
    /// Where what the container binds from buntime lies.
    pub bind_dir: PathBuf,
    /// Some `filesystem.deny` entry is a file: it gets the unreadable file.
    pub deny_files: bool,
    pub supervised: bool,
    /// A new network namespace an ordinary user cannot enter from the host.
    pub rootless_netns: bool,
    /// The precompiled seccomp programs, in the executor's order.
    pub programs: Vec<Program>,
    /// What `state` shows (`buntime.dev/*`).
    pub annotations: BTreeMap<String, String>,
}

impl Plan {
    /// The prepared spec finished for this container
    /// (`prepare::finish_for_container`), and the check whether the init
    /// must run from a sealed binary. No side effects.
    pub fn make(
        root: &Root,
        opts: &CreateOptions,
        rootfs: PathBuf,
        policy: PolicyStep,
    ) -> Result<Plan> {
        let mut prepared = policy.prepared;
        let mode = prepared.mode;
        // A user namespace's root cannot reach the state directory: what the
        // container binds from buntime (the supervisor's directory, the
        // unreadable file of deny masks) lies behind a gate (`userns`).
        // (`buntime run` stages what its sandbox cannot reach instead: `stage`.)
        let mapped_root = match mode {
            SpecMode::Oci => userns::mapped_root(&prepared.effective)?,
            SpecMode::Run => None,
        };
        let bind_dir = match mapped_root {
            Some(_) => userns::gate_dir(root, &opts.id),
            None => root.extra_dir(&opts.id),
        };
        let site = ContainerSite {
            rootfs: &rootfs,
            bind_dir: &bind_dir,
        };
        let finished = finish_for_container(&mut prepared, site)?;
        let (spec, landlock) = (prepared.effective, prepared.landlock);
        check_seal(&spec, &landlock, prepared.landlock_abi, &rootfs)?;
        Ok(Plan {
            resolved: prepared.resolved,
            mode,
            rootless_netns: has_new_netns(&spec) && !nix::unistd::geteuid().is_root(),
            spec,
            stacked_seccomp: prepared.stacked_seccomp,
            landlock,
            landlock_abi: prepared.landlock_abi,
            rootfs,
            learning: policy.learning,
            learn_dir: None,
            pod_listener: policy.pod_listener,
            proxy_port: policy.proxy_port,
            mapped_root,
            bind_dir,
            deny_files: finished.deny_files,
            supervised: finished.supervised,
            programs: Vec::new(),
            annotations: BTreeMap::new(),
        })
    }

    /// Whether the supervisor serves a proxy (`proxy`, `pod`).
    pub fn proxy_mode(&self) -> bool {
        self.resolved.policy.network.mode.is_proxied()
    }

    /// Writes the container's state into its (claimed) directory: the gate
    /// and deny file, the effective spec, the seccomp programs, the
    /// supervisor's directory, the spec libcontainer runs, the policy and
    /// the Landlock plan. Returns the rootless network hook's socket.
    pub fn write_state(
        &mut self,
        root: &Root,
        opts: &CreateOptions,
        base: &Spec,
        dir: &StateDir,
    ) -> Result<Option<crate::runtime::netns_hook::HookSocket>> {
        if let Some(m) = self.mapped_root {
            userns::make_gate(root, &opts.id, m.gid)?;
        }
        if self.deny_files {
            make_denied_file(&self.bind_dir)?;
        }
        // The effective spec as the policy made it, seccomp included
        // (`spec --explain`); libcontainer's copy below may lack the
        // profile, which then runs as a precompiled program.
        dir.write_json(EFFECTIVE_FILE, &canonical_spec_json(&self.spec))?;
        let hook = self.finish_spec(root, dir)?;
        self.make_run_dir(root, opts, dir)?;
        if let Some(m) = self.mapped_root {
            let dirs = userns::added_mount_dirs(&self.spec, base);
            userns::make_mountpoints(&self.rootfs, m, &dirs)?;
        }
        // Root's `buntime run`: the sandbox's uid mounts the binds itself.
        if self.mode == SpecMode::Run
            && nix::unistd::geteuid().is_root()
            && has_new_userns(&self.spec)
        {
            crate::runtime::stage::stage_sources(&mut self.spec, &opts.bundle)?;
        }
        crate::runtime::bundle::write_spec(dir.path(), &self.spec)?;
        dir.write_text(POLICY_FILE, &self.resolved.canonical_json())?;
        dir.write_json(LANDLOCK_FILE, &self.landlock)?;
        self.note_annotations();
        Ok(hook)
    }

    /// The spec's last edits, which make files: the rootless network hook,
    /// the precompiled seccomp programs, the learning filter.
    fn finish_spec(
        &mut self,
        root: &Root,
        dir: &StateDir,
    ) -> Result<Option<crate::runtime::netns_hook::HookSocket>> {
        use crate::runtime::netns_hook;
        // A new network namespace is set up from the host after the build
        // (`lo` up; the supervisor binds the proxy there). Rootless that is
        // not possible: in proxy mode a hook does both from inside
        // (`netns_hook`); otherwise `lo` stays down (mode `none` has no
        // inet sockets anyway).
        let mut hook = None;
        if self.rootless_netns && self.supervised && self.proxy_mode() {
            let h = netns_hook::HookSocket::bind(dir.path())?;
            netns_hook::add_to_spec(&mut self.spec, h.dir(), crate::proxy::PROXY_PORT)?;
            hook = Some(h);
        }
        let (programs, seccomp_note) =
            precompile_seccomp(root, dir, &mut self.spec, self.stacked_seccomp.as_ref())?;
        self.programs = programs;
        self.annotations
            .insert("buntime.dev/seccomp".to_string(), seccomp_note);
        if self.learning {
            // After the precompiled programs are made: the bundle's own
            // profile stays whole for init and every `exec`; the observing
            // filter only adds itself to init's (learn::container::attach).
            let held = open_path_dir(dir.path())?;
            let socket = PathBuf::from(format!(
                "/proc/self/fd/{}/{}",
                std::os::fd::AsRawFd::as_raw_fd(&held),
                crate::statedir::LEARN_SOCKET
            ));
            self.learn_dir = Some(held);
            crate::learn::container::attach(&mut self.spec, &socket)
                .map_err(RuntimeError::Policy)?;
        }
        tracing::debug!(target: "cli", "create: seccomp ready");
        Ok(hook)
    }

    /// The supervisor's directory, made now: the container binds it.
    fn make_run_dir(&self, root: &Root, opts: &CreateOptions, dir: &StateDir) -> Result<()> {
        if !self.supervised {
            return Ok(());
        }
        let run_dir = dir.run_dir();
        match self.mapped_root {
            Some(_) => userns::make_run(root, &opts.id, &run_dir),
            None => fs::DirBuilder::new()
                .mode(0o755)
                .create(&run_dir)
                .map_err(|e| RuntimeError::io(format!("create {}", run_dir.display()), e)),
        }
    }

    /// The `buntime.dev/*` annotations `state` shows.
    fn note_annotations(&mut self) {
        let a = &mut self.annotations;
        a.insert(
            "buntime.dev/policy-sha256".to_string(),
            self.resolved.sha256(),
        );
        a.insert(
            "buntime.dev/policy-origin".to_string(),
            self.resolved.origin.to_string(),
        );
        a.insert(
            "buntime.dev/landlock".to_string(),
            landlock_note(
                self.resolved.policy.landlock,
                self.landlock_abi,
                self.landlock.restricts_tcp(),
            ),
        );
        if let Some(port) = self.proxy_port {
            // `exec` sets the same proxy variables (the port is per
            // container in `pod` mode); `state` shows where it listens.
            a.insert(ANNOTATION_PROXY.to_string(), format!("127.0.0.1:{port}"));
        }
    }

    /// Starts the supervisor (into `slot`, which the guard aborts on a
    /// failure) while the container is built; a learning container's must
    /// be ready first.
    pub fn start_supervisor(
        &mut self,
        root: &Root,
        opts: &CreateOptions,
        dir: &StateDir,
        slot: &mut Option<crate::supervisor::Spawned>,
    ) -> Result<()> {
        if self.supervised {
            let pid_ns = if crate::spec::has_new_ns(&self.spec, LinuxNamespaceType::Pid) {
                crate::supervisor::PidNamespace::Own
            } else {
                crate::supervisor::PidNamespace::Shared
            };
            let s = crate::supervisor::spawn(root.path(), &opts.id, dir.path(), pid_ns)
                .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
            *slot = Some(s);
            tracing::debug!(target: "cli", "create: supervisor started");
        }
        if !self.learning {
            return Ok(());
        }
        // Its learn socket must listen before libcontainer hands it the
        // filter, and the init's first calls wait for its answers.
        let s = slot.as_mut().ok_or_else(|| {
            RuntimeError::Policy(format!(
                "annotation {}: learning needs the supervisor ({ANNOTATION_SUPERVISOR_OFF}: off is set)",
                crate::learn::container::ANNOTATION_LEARN
            ))
        })?;
        s.wait_ready()
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        self.annotations.insert(
            crate::learn::container::ANNOTATION_LEARN.to_string(),
            "observing".to_string(),
        );
        Ok(())
    }

    /// buntime's metadata of the container, the mode with it.
    pub fn write_meta(
        &self,
        root: &Root,
        opts: &CreateOptions,
        bundle: &Path,
        supervisor_pid: Option<i32>,
    ) -> Result<()> {
        let meta = Meta {
            bundle: bundle.to_path_buf(),
            rootfs: self.rootfs.clone(),
            annotations: self.annotations.clone(),
            supervisor_pid,
            policy_name: Some(self.resolved.origin.name()),
            mode: self.mode,
        };
        root.write_meta(&opts.id, &meta)
    }

    /// The Landlock plan the init applies, if Landlock applies.
    pub fn applied_landlock(&self) -> Option<LandlockPlan> {
        self.landlock_abi.map(|_| self.landlock.clone())
    }

    /// The policy, for refusals the executor reports.
    pub fn policy_ref(&self) -> PolicyRef {
        PolicyRef::new(self.resolved.origin.name(), &self.resolved.policy)
    }
}

/// The init and intermediate are clones of this process: decide now,
/// before anything is made, whether they must run from a sealed copy.
fn check_seal(spec: &Spec, landlock: &LandlockPlan, abi: Option<u32>, rootfs: &Path) -> Result<()> {
    crate::exeseal::check(
        abi.filter(|_| landlock.filesystem).map(|_| landlock),
        abi,
        spec,
        &crate::exeseal::ContainerView::Planned {
            rootfs,
            mounts: spec.mounts().as_deref().unwrap_or_default(),
        },
    )
    .map_err(RuntimeError::Reseal)
}

/// `dir` opened `O_PATH`, for paths through `/proc/self/fd/N`.
fn open_path_dir(dir: &Path) -> Result<std::os::fd::OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(dir)
        .map(std::os::fd::OwnedFd::from)
        .map_err(|e| RuntimeError::io(format!("open {}", dir.display()), e))
}
