//! From a [`RunRequest`] to a plan: the target's argv and working
//! directory, the policy with the script's directory added, the worker
//! files' mounts; and the bundle's config.json from the template.

use std::fs;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{Mount, MountBuilder, Spec};

use super::{
    cgroup_path, kind, sandbox_host_ids, setup, workers, Kind, RunRequest, SandboxError, Target,
    WORKER_DIR,
};
use crate::policy::{FsAccess, FsDecision, FsPath, Policy};
use crate::prepare::RunSandbox;

fn fs_path(p: &Path) -> Result<FsPath, SandboxError> {
    FsPath::new(p.to_string_lossy()).map_err(|e| setup(format!("{}: {e}", p.display())))
}

/// What the template and the policy need to know about the target.
pub(super) struct Plan {
    pub(super) kind: Kind,
    pub(super) argv: Vec<String>,
    pub(super) cwd: PathBuf,
    pub(super) sandbox: RunSandbox,
}

pub(super) fn plan(req: &RunRequest) -> Result<Plan, SandboxError> {
    let here = std::env::current_dir().map_err(|e| setup(format!("current directory: {e}")))?;
    let mut policy = req.policy.clone();
    policy.resolve_relative(&here);
    let kind = req.target.kind();
    let path_var = path_var();
    let mut sandbox = RunSandbox {
        origin: req.origin.clone(),
        host_env: std::env::vars().collect(),
        rootless: !nix::unistd::geteuid().is_root(),
        ..RunSandbox::default()
    };
    let (cwd, head, rest) = match &req.target {
        Target::Script { path, args } => {
            let (dir, script) = script_target(path, &here, kind, &mut policy, &mut sandbox)?;
            (dir, script, args.clone())
        }
        Target::Command { argv } => command_target(argv, &here, &policy, &path_var)?,
    };
    let interpreter = interpreter(req, kind, &policy, &path_var)?;
    let template: serde_json::Value = serde_json::from_str(kind.template())
        .map_err(|e| setup(format!("bundle template {}: {e}", kind.name())))?;
    let argv = template_argv(&template, kind, interpreter.as_deref(), &head, &rest);
    if kind != Kind::Command {
        mount_workers(kind, interpreter.as_deref(), &policy, &mut sandbox)?;
    }
    sandbox.worker_env = template["process"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    sandbox.policy = policy;
    Ok(Plan {
        kind,
        argv,
        cwd,
        sandbox,
    })
}

/// A script: its directory (read-only, its working directory) and its
/// canonical path.
fn script_target(
    path: &Path,
    here: &Path,
    kind: Kind,
    policy: &mut Policy,
    sandbox: &mut RunSandbox,
) -> Result<(PathBuf, String), SandboxError> {
    let script =
        fs::canonicalize(here.join(path)).map_err(|e| setup(format!("{}: {e}", path.display())))?;
    if !script.is_file() {
        return Err(setup(format!("{}: not a regular file", path.display())));
    }
    let dir = script.parent().unwrap_or(Path::new("/")).to_path_buf();
    // The script's directory, read-only, is its working directory.
    if let FsDecision::DeniedBy(d) = policy.filesystem.decide(&script, FsAccess::Read) {
        return Err(setup(format!(
            "{}: the policy denies reading it ({})",
            script.display(),
            d.display()
        )));
    }
    let dir_rule = fs_path(&dir)?;
    if !policy.filesystem.read.contains(&dir_rule) {
        policy.filesystem.read.push(dir_rule);
    }
    if kind == Kind::Command {
        sandbox.landlock_exec.push(script.clone());
    }
    Ok((dir, script.to_string_lossy().into_owned()))
}

/// A command: its working directory, the program looked up in PATH, and
/// its arguments.
fn command_target(
    argv: &[String],
    here: &Path,
    policy: &Policy,
    path_var: &str,
) -> Result<(PathBuf, String, Vec<String>), SandboxError> {
    let (first, rest) = argv
        .split_first()
        .ok_or_else(|| setup("nothing to run: expected FILE or -- COMMAND"))?;
    // The current directory, when the policy shows it (under the
    // private /tmp it would be a different directory).
    let cwd = if policy.filesystem.decide(here, FsAccess::Read) == FsDecision::Allow
        && !here.starts_with("/tmp")
    {
        here.to_path_buf()
    } else {
        PathBuf::from("/tmp")
    };
    Ok((cwd, which(first, path_var)?, rest.to_vec()))
}

/// The interpreter the target runs under, checked against the policy.
fn interpreter(
    req: &RunRequest,
    kind: Kind,
    policy: &Policy,
    path_var: &str,
) -> Result<Option<PathBuf>, SandboxError> {
    Ok(match kind {
        Kind::Python => {
            let p = req
                .interpreter
                .clone()
                .unwrap_or_else(|| PathBuf::from(kind::DEFAULT_PYTHON));
            if !p.is_absolute() || !p.exists() {
                return Err(setup(format!(
                    "--interpreter: {} does not exist (an absolute host path is needed)",
                    p.display()
                )));
            }
            if !policy.may_exec(&p, path_var) {
                return Err(setup(format!(
                    "the policy does not let the sandbox run {}: add its directory to filesystem.exec (--allow-run={})",
                    p.display(),
                    p.display()
                )));
            }
            Some(p)
        }
        Kind::Bun => Some(
            req.interpreter
                .clone()
                .unwrap_or_else(|| PathBuf::from(kind::BUN_IN_SANDBOX)),
        ),
        Kind::Command => None,
    })
}

/// The template's `process.args` with the placeholders filled in.
fn template_argv(
    template: &serde_json::Value,
    kind: Kind,
    interpreter: Option<&Path>,
    head: &str,
    rest: &[String],
) -> Vec<String> {
    let mut argv = Vec::new();
    for a in template["process"]["args"].as_array().into_iter().flatten() {
        match a.as_str().unwrap_or_default() {
            "{{interpreter}}" => {
                argv.extend(interpreter.iter().map(|p| p.to_string_lossy().into_owned()))
            }
            "{{script}}" => argv.push(head.to_string()),
            "{{args}}" => {
                if kind == Kind::Command {
                    argv.push(head.to_string());
                }
                argv.extend(rest.iter().cloned());
            }
            other => argv.push(other.to_string()),
        }
    }
    argv
}

/// The worker files, bound read-only at [`WORKER_DIR`] (and Bun's binary
/// from there unless another interpreter was given).
fn mount_workers(
    kind: Kind,
    interpreter: Option<&Path>,
    policy: &Policy,
    sandbox: &mut RunSandbox,
) -> Result<(), SandboxError> {
    let home = workers::home()?;
    if kind == Kind::Bun && interpreter == Some(Path::new(kind::BUN_IN_SANDBOX)) {
        if !home.join("bin/bun").is_file() {
            return Err(setup(
                "Bun is not installed: run `bash hack/install-bun.sh` (or `make run`), or pass --interpreter",
            ));
        }
        sandbox
            .landlock_exec
            .push(PathBuf::from(WORKER_DIR).join("bin"));
    }
    if !home.join("lib/libbuntime_ipc.so").is_file() {
        tracing::warn!(target: "cli", "libbuntime_ipc.so is missing from {}: the worker runs without its supervisor (build with `cargo build --workspace`)", home.display());
    }
    sandbox
        .late_mounts
        .push(bind_ro(&home, Path::new(WORKER_DIR))?);
    sandbox.landlock_read.push(PathBuf::from(WORKER_DIR));
    make_mount_point(policy)?;
    Ok(())
}

/// The caller's PATH, or the default one `buntime run` looks commands up in.
pub(super) fn path_var() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
}

/// A command name looked up in PATH, as a shell would (the sandbox's root
/// is empty until it starts, so the runtime cannot look it up there).
pub(super) fn which(cmd: &str, path_var: &str) -> Result<String, SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    if cmd.contains('/') {
        return Ok(cmd.to_string());
    }
    path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(cmd))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| setup(format!("{cmd}: command not found in PATH")))
}

pub(super) fn bind_ro(src: &Path, dst: &Path) -> Result<Mount, SandboxError> {
    MountBuilder::default()
        .destination(dst)
        .typ("bind")
        .source(src)
        .options(
            ["rbind", "ro", "nosuid", "nodev"]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| setup(format!("mount {}: {e}", dst.display())))
}

/// When the policy binds a parent of `/opt/buntime` (`/opt`, `/`) from the
/// host, the mount point must exist there: an empty directory is made.
fn make_mount_point(policy: &Policy) -> Result<(), SandboxError> {
    let fs = &policy.filesystem;
    let target = Path::new(WORKER_DIR);
    let covered = fs
        .read
        .iter()
        .chain(&fs.write)
        .chain(&fs.exec)
        .any(|p| target.starts_with(p.as_path()));
    if covered && !target.is_dir() && !nix::unistd::geteuid().is_root() {
        return Err(setup(format!(
            "the policy binds the host's /opt and {WORKER_DIR} (the worker's mount point) is missing there; as root, run `mkdir {WORKER_DIR}` once (or `make install`)"
        )));
    }
    if covered && !target.is_dir() {
        fs::create_dir_all(target).map_err(|e| {
            setup(format!(
                "the policy binds the host's {} and {WORKER_DIR} (the worker's mount point) is missing there: {e}",
                target.parent().unwrap_or(target).display()
            ))
        })?;
    }
    Ok(())
}

/// The bundle's config.json: the template with the target filled in.
pub(super) fn bundle_spec(
    plan: &Plan,
    id: &str,
    ask_timeout: Option<&str>,
) -> Result<Spec, SandboxError> {
    let mut v: serde_json::Value = serde_json::from_str(plan.kind.template())
        .map_err(|e| setup(format!("bundle template: {e}")))?;
    v["process"]["args"] = serde_json::json!(plan.argv);
    v["process"]["cwd"] = serde_json::json!(plan.cwd);
    v["process"]["env"] = serde_json::json!([]);
    // Root inside, in a user namespace of its own: as an ordinary user the
    // caller's uid (rootless); as root an unprivileged uid of the run's own
    // (`sandbox_host_ids`), never the host's root.
    let (uid, gid) = sandbox_host_ids();
    v["process"]["user"] = if nix::unistd::geteuid().is_root() {
        // Without a list libcontainer keeps the caller's supplementary
        // groups (host gid 0 under sudo): the run's own gid only.
        serde_json::json!({ "uid": 0, "gid": 0, "additionalGids": [0] })
    } else {
        // Rootless: setgroups is denied in the user namespace; the
        // caller's groups are the caller's to have.
        serde_json::json!({ "uid": 0, "gid": 0 })
    };
    v["linux"]["namespaces"]
        .as_array_mut()
        .ok_or_else(|| setup("bundle template: no linux.namespaces"))?
        .push(serde_json::json!({ "type": "user" }));
    v["linux"]["uidMappings"] = serde_json::json!([{ "containerID": 0, "hostID": uid, "size": 1 }]);
    v["linux"]["gidMappings"] = serde_json::json!([{ "containerID": 0, "hostID": gid, "size": 1 }]);
    v["linux"]["cgroupsPath"] = serde_json::json!(cgroup_path(id));
    v["process"]["terminal"] = serde_json::json!(false);
    // The templates state the secure values themselves (a run policy
    // without `isolation` follows them); buntime's seccomp profile depends
    // on the network mode, so it is added here.
    v["linux"]["seccomp"] = serde_json::to_value(crate::spec::default_seccomp(
        plan.sandbox.policy.network.mode,
    ))
    .map_err(|e| setup(format!("seccomp profile: {e}")))?;
    if plan.sandbox.policy.network.mode == crate::policy::NetMode::Host {
        // sysfs can only be mounted by the owner of the network namespace;
        // in the host's, the host's /sys is bound read-only (as runc does
        // rootless).
        for m in v["mounts"].as_array_mut().into_iter().flatten() {
            if m["type"] == "sysfs" {
                *m = serde_json::json!({ "destination": "/sys", "type": "bind", "source": "/sys",
                    "options": ["rbind", "ro", "nosuid", "nodev", "noexec"] });
            }
        }
    }
    if let Some(t) = ask_timeout {
        v["annotations"] = serde_json::json!({ crate::supervisor::ANNOTATION_ASK_TIMEOUT: t });
    }
    serde_json::from_value(v).map_err(|e| setup(format!("bundle template: {e}")))
}
