//! `exec`: another process in a running container, with the same
//! namespaces, cgroup, seccomp profile and Landlock rules as init, and the
//! same credentials and limits: [`exec_process`] builds the process from
//! init's (the effective spec's) and the container's policy, for the argv
//! form and for `--process` (what podman's and containerd's exec and
//! healthchecks send) alike. libcontainer always gets that process as a
//! process file, so none of its own defaults (its `--cap` union, uid 0, the
//! caller's rlimits) apply.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::ContainerStatus;
use libcontainer::oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, Process, User};
use libcontainer::syscall::syscall::SyscallType;
use nix::unistd::Pid;

use super::bundle::parse_spec;
use super::error::{ExecRule, Result, RuntimeError};
use super::executor::BuntimeExecutor;
use super::foreground;
use super::state::{status_word, Root};
use crate::policy::Policy;

/// The options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub id: String,
    pub process: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
    pub detach: bool,
    pub ignore_paused: bool,
}

/// Parses `UID[:GID]`.
fn parse_user(text: &str) -> Result<(u32, Option<u32>)> {
    let bad = || RuntimeError::Invalid(format!("invalid --user {text:?}: expected UID[:GID]"));
    let (u, g) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    let uid = u.parse::<u32>().map_err(|_| bad())?;
    let gid = g.map(|g| g.parse::<u32>().map_err(|_| bad())).transpose()?;
    Ok((uid, gid))
}

/// Parses `--env KEY=VALUE` items, in order; a repeated key keeps its last
/// value.
fn parse_env(items: &[String]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for kv in items {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                RuntimeError::Invalid(format!("invalid --env {kv:?}: expected KEY=VALUE"))
            })?;
        out.retain(|(o, _)| o != k);
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// The container as init got it: the effective spec's process and the
/// applied policy, with the name errors give it.
pub struct InitView<'a> {
    pub process: &'a Process,
    pub policy: &'a Policy,
    /// Where the policy came from (`buntime.dev/policy-origin`).
    pub policy_name: &'a str,
    /// The proxy's port, for the proxy variables in proxy mode.
    pub proxy_port: Option<u16>,
}

/// The capability sets of `c`, by their OCI names.
type CapGetter = fn(&LinuxCapabilities) -> &Option<Capabilities>;
const CAP_SETS: [(&str, CapGetter); 5] = [
    ("bounding", LinuxCapabilities::bounding),
    ("effective", LinuxCapabilities::effective),
    ("permitted", LinuxCapabilities::permitted),
    ("inheritable", LinuxCapabilities::inheritable),
    ("ambient", LinuxCapabilities::ambient),
];

fn cap_name(c: &Capability) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{c:?}"))
}

fn set_of(c: Option<&LinuxCapabilities>, get: CapGetter) -> Capabilities {
    c.and_then(|c| get(c).clone()).unwrap_or_default()
}

/// The exec'd process's capabilities: each set of the request (none: init's)
/// intersected with init's same set; a set init lacks is empty. Effective
/// and ambient are kept within permitted (and inheritable) so the kernel
/// accepts them. Returns the sets and what was asked beyond init's.
///
/// An init without `capabilities` (neither the bundle nor the policy set
/// any) keeps whatever the runtime holds, so the exec'd process gets the
/// request as it is, or likewise none.
fn exec_capabilities(
    init: Option<&LinuxCapabilities>,
    requested: Option<&LinuxCapabilities>,
) -> (Option<LinuxCapabilities>, Vec<String>) {
    let Some(init) = init else {
        return (requested.cloned(), Vec::new());
    };
    let init = Some(init);
    let mut beyond: Vec<String> = Vec::new();
    let [bounding, effective, permitted, inheritable, ambient] = CAP_SETS.map(|(name, get)| {
        let granted = set_of(init, get);
        let Some(r) = requested else { return granted };
        let asked = set_of(Some(r), get);
        let mut extra: Vec<String> = asked.difference(&granted).map(cap_name).collect();
        extra.sort();
        if !extra.is_empty() {
            beyond.push(format!("{name} {}", extra.join(",")));
        }
        asked
            .intersection(&granted)
            .copied()
            .collect::<Capabilities>()
    });
    let effective: Capabilities = effective.intersection(&permitted).copied().collect();
    let ambient: Capabilities = ambient
        .into_iter()
        .filter(|c| permitted.contains(c) && inheritable.contains(c))
        .collect();
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(bounding));
    c.set_effective(Some(effective));
    c.set_permitted(Some(permitted));
    c.set_inheritable(Some(inheritable));
    c.set_ambient(Some(ambient));
    (Some(c), beyond)
}

/// Refuses a `--cap` that init does not hold in its bounding, effective and
/// permitted sets: an explicit request for more than the policy grants is an
/// error, not a silent no-op.
fn check_added_caps(init: &InitView<'_>, caps: &[String]) -> Result<()> {
    let Some(held) = init.process.capabilities().as_ref() else {
        // Init holds whatever the runtime does: nothing beyond it to ask.
        return Ok(());
    };
    let held = Some(held);
    for name in caps {
        let cap: Capability = serde_json::from_value(serde_json::Value::String(name.clone()))
            .map_err(|_| {
                RuntimeError::Invalid(format!("invalid --cap {name:?}: unknown capability"))
            })?;
        let needed: [CapGetter; 3] = [
            LinuxCapabilities::bounding,
            LinuxCapabilities::effective,
            LinuxCapabilities::permitted,
        ];
        let granted = needed.iter().all(|get| set_of(held, *get).contains(&cap));
        if !granted {
            let grants_none = set_of(held, LinuxCapabilities::permitted).is_empty();
            return Err(RuntimeError::ExecRefused {
                policy: init.policy_name.to_string(),
                field: ExecRule::Capabilities,
                detail: format!(
                    "--cap {}: not held by the container's init ({}); an exec'd process gets \
                     init's capabilities and never more",
                    cap_name(&cap),
                    if grants_none {
                        "the policy grants no capabilities"
                    } else {
                        "not in the effective spec's process.capabilities"
                    }
                ),
            });
        }
    }
    Ok(())
}

/// runc's `--user UID[:GID]`: the spec's gid unless one is given.
fn exec_user(init: &Process, opts: &ExecOptions) -> Result<User> {
    let mut user = init.user().clone();
    if let Some(text) = &opts.user {
        let (uid, gid) = parse_user(text)?;
        user.set_uid(uid);
        if let Some(gid) = gid {
            user.set_gid(gid);
        }
    }
    if !opts.additional_gids.is_empty() {
        let mut gids = user.additional_gids().clone().unwrap_or_default();
        for g in &opts.additional_gids {
            if !gids.contains(g) {
                gids.push(*g);
            }
        }
        user.set_additional_gids(Some(gids));
    }
    Ok(user)
}

/// Why the policy's env rules do not let a caller's variable through as
/// given: the field that decides and the reason.
fn env_refusal(policy: &Policy, name: &str) -> (ExecRule, &'static str) {
    if policy.env.set.keys().any(|n| n.as_str() == name) {
        (ExecRule::EnvSet, "the policy fixes this variable")
    } else if policy.env.pass.iter().any(|p| p.matches(name)) {
        (ExecRule::ProxyEnv, "the proxy sets this variable")
    } else {
        (ExecRule::EnvPass, "the policy does not pass this variable")
    }
}

/// An exec'd process's environment: init's (the policy's env rules already
/// applied, plus what the runtime added: the supervisor's socket paths),
/// with the caller's variables on top where the rules let them through
/// unchanged. Returns the environment and the caller's variables that did
/// not get through.
fn exec_env(
    init: &InitView<'_>,
    vars: &[(String, String)],
) -> (Vec<String>, Vec<(String, String)>) {
    let allowed = crate::spec::process_env(init.policy, vars, init.proxy_port);
    let (passed, refused): (Vec<_>, Vec<_>) = vars
        .iter()
        .cloned()
        .partition(|(k, v)| allowed.iter().any(|e| *e == format!("{k}={v}")));
    let mut env: Vec<String> = init
        .process
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            let name = e.split('=').next().unwrap_or_default();
            !passed.iter().any(|(k, _)| k == name)
        })
        .collect();
    env.extend(passed.iter().map(|(k, v)| format!("{k}={v}")));
    (env, refused)
}

/// The environment of the argv form: init's with `--env` on top (as runc);
/// a `--env` the policy's env rules would drop or change is refused,
/// naming the rule.
fn argv_env(init: &InitView<'_>, extra: &[String]) -> Result<Vec<String>> {
    let asked = parse_env(extra)?;
    let (env, refused) = exec_env(init, &asked);
    if let Some((k, _)) = refused.first() {
        let (field, why) = env_refusal(init.policy, k);
        return Err(RuntimeError::ExecRefused {
            policy: init.policy_name.to_string(),
            field,
            detail: format!("--env {k}: {why}"),
        });
    }
    Ok(env)
}

/// The one place an exec'd process is made: credentials and limits from
/// init and the policy, never from the caller.
///
/// - capabilities: init's sets; a `--process` object's sets are intersected
///   with init's (engines always send their default set, `--privileged` all
///   of them); `--cap` beyond init's is refused;
/// - user: argv form: the spec's uid, gid and additionalGids, `--user
///   UID[:GID]` replacing the uid (and the gid when given), `-g` adding
///   groups; `--process`: the object's user, as runc;
/// - rlimits: init's (the policy's `open_files`, `RLIMIT_CORE` 0/0, the
///   bundle's, clamped), whatever the caller or the object asks;
/// - env: init's, with the caller's variables on top where the policy's env
///   rules let them through unchanged; a `--env` they would drop or change
///   is refused, a `--process` object's such variables are dropped;
/// - noNewPrivileges, scheduler, I/O priority, OOM score, AppArmor and
///   SELinux labels: init's.
///
/// Seccomp, Landlock, cgroup and namespaces are applied by libcontainer and
/// [`BuntimeExecutor::for_exec`] from the container's state.
pub fn exec_process(
    init: &InitView<'_>,
    opts: &ExecOptions,
    requested: Option<Process>,
) -> Result<Process> {
    check_added_caps(init, &opts.caps)?;
    let ip = init.process;
    let (mut p, caps_asked) = match requested {
        Some(mut p) => {
            let caps = p.capabilities().clone();
            let vars = crate::spec::split_env(p.env().as_deref().unwrap_or_default());
            let (env, dropped) = exec_env(init, &vars);
            if !dropped.is_empty() {
                let names: Vec<&str> = dropped.iter().map(|(k, _)| k.as_str()).collect();
                tracing::debug!(
                    target: "cli",
                    "exec --process: the env rules drop {}",
                    names.join(",")
                );
            }
            p.set_env(Some(env));
            (p, caps)
        }
        None => {
            if opts.args.is_empty() {
                return Err(RuntimeError::Invalid(
                    "exec needs a command (ARGS...) or --process FILE".into(),
                ));
            }
            let mut p = Process::default();
            p.set_args(Some(opts.args.clone()));
            p.set_env(Some(argv_env(init, &opts.env)?));
            let cwd = match &opts.cwd {
                Some(c) if c.is_relative() => {
                    return Err(RuntimeError::Invalid(format!(
                        "invalid --cwd {c:?}: must be an absolute path"
                    )))
                }
                Some(c) => c.clone(),
                None => ip.cwd().clone(),
            };
            p.set_cwd(cwd);
            // libcontainer 0.7 makes the pty only through a console socket.
            p.set_terminal(Some(opts.tty && opts.console_socket.is_some()));
            p.set_console_size(None);
            p.set_user(exec_user(ip, opts)?);
            p.set_exec_cpu_affinity(ip.exec_cpu_affinity().clone());
            (p, None)
        }
    };
    let (caps, beyond) = exec_capabilities(ip.capabilities().as_ref(), caps_asked.as_ref());
    if !beyond.is_empty() {
        // Engines ask for their default set on every exec; not an error.
        tracing::info!(
            target: "cli",
            "exec --process: capabilities beyond init's dropped ({}): {}",
            init.policy_name,
            beyond.join("; ")
        );
    }
    p.set_capabilities(caps);
    p.set_rlimits(Some(ip.rlimits().clone().unwrap_or_default()));
    let nnp = ip.no_new_privileges().unwrap_or(false) || p.no_new_privileges().unwrap_or(false);
    // Absent rather than `false`: see bundle::unset_false_no_new_privileges.
    p.set_no_new_privileges(nnp.then_some(true));
    p.set_scheduler(ip.scheduler().clone());
    p.set_io_priority(*ip.io_priority());
    p.set_oom_score_adj(ip.oom_score_adj());
    p.set_apparmor_profile(ip.apparmor_profile().clone());
    p.set_selinux_label(ip.selinux_label().clone());
    Ok(p)
}

/// Reads a `--process` file (an OCI process object).
fn read_process(path: &Path) -> Result<Process> {
    let text =
        fs::read(path).map_err(|e| RuntimeError::io(format!("read {}", path.display()), e))?;
    let de = &mut serde_json::Deserializer::from_slice(&text);
    serde_path_to_error::deserialize::<_, Process>(de).map_err(|err| RuntimeError::Config {
        file: path.to_path_buf(),
        pointer: super::bundle::json_pointer(err.path()),
        message: err.into_inner().to_string(),
    })
}

/// The process file handed to libcontainer, removed when dropped.
struct ProcessFile(PathBuf);

impl ProcessFile {
    fn write(dir: &Path, process: &Process) -> Result<Self> {
        let text = serde_json::to_vec(process)
            .map_err(|e| RuntimeError::Invalid(format!("encode exec process: {e}")))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = dir.join(format!("exec-{}-{nanos:x}.json", std::process::id()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| RuntimeError::io(format!("create {}", path.display()), e))?;
        let file = ProcessFile(path);
        f.write_all(&text)
            .map_err(|e| RuntimeError::io(format!("write {}", file.0.display()), e))?;
        Ok(file)
    }
}

impl Drop for ProcessFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Runs the process; returns its exit code (0 when detached).
pub fn exec(root: &Root, opts: &ExecOptions) -> Result<i32> {
    // The process joins the container's cgroups: see cgroup_warmup.
    let warmup = super::cgroup_warmup::Warmup::start();
    let container = root.load(&opts.id)?;
    check_request(container.status(), opts)?;
    let extra = root.extra_dir(&opts.id);
    let spec_file = root.state_dir(&opts.id).spec();
    let text = fs::read(&spec_file)
        .map_err(|e| RuntimeError::io(format!("read {}", spec_file.display()), e))?;
    let spec = parse_spec(&spec_file, &text)?;
    // Fail closed: a container whose plan is unreadable gets no exec.
    let meta = root.read_meta(&opts.id);
    let landlock = super::create::load_landlock(root, &opts.id, &meta)?;
    let seccomp = super::create::load_seccomp_programs(root, &opts.id, &meta)?;
    let paused = container.status() == ContainerStatus::Paused;
    let init = container.pid().map(|p| p.as_raw());
    let learn = super::exec_learn::Handoff::prepare(root, &opts.id, &meta, paused, init)?;
    check_seal(container.pid(), landlock.as_ref(), &spec)?;
    let (policy, policy_name) = read_policy(&root.state_dir(&opts.id), &meta)?;
    let init_process = spec
        .process()
        .as_ref()
        .ok_or_else(|| RuntimeError::Invalid(format!("{}: no process", spec_file.display())))?;
    let init = InitView {
        process: init_process,
        policy: &policy,
        policy_name: &policy_name,
        proxy_port: Some(proxy_port(&meta)),
    };
    let requested = opts.process.as_deref().map(read_process).transpose()?;
    let process = exec_process(&init, opts, requested)?;
    let process_file = ProcessFile::write(&extra, &process)?;
    let absolute = |p: &PathBuf| super::create::absolute(p);
    let pid_file = opts.pid_file.as_ref().map(absolute).transpose()?;
    let console = opts.console_socket.as_ref().map(absolute).transpose()?;

    if !opts.detach {
        foreground::become_subreaper()?;
    }
    let mut executor = BuntimeExecutor::for_exec(
        &spec,
        landlock,
        seccomp,
        super::refusal::PolicyRef::new(meta.policy_name.clone().unwrap_or(policy_name), &policy),
    );
    executor.learn_channel = learn.as_ref().and_then(|h| h.child_fd());
    let learn = learn.map(super::exec_learn::Handoff::start).transpose()?;
    let built = ContainerBuilder::new(opts.id.clone(), SyscallType::default())
        .with_root_path(root.path())
        .map_err(|e| RuntimeError::backend("--root", &e))?
        .with_pid_file(pid_file)
        .map_err(|e| RuntimeError::backend("--pid-file", &e))?
        .with_console_socket(console)
        .with_preserved_fds(opts.preserve_fds)
        .with_executor(executor)
        .as_tenant()
        .with_detach(opts.detach)
        // Everything about the process is in the file (see exec_process).
        .with_process(Some(process_file.0.clone()))
        .with_ignore_paused(opts.ignore_paused)
        .build();
    drop(process_file);
    let learn = learn.map(|(theirs, thread)| {
        drop(theirs);
        thread
    });
    let pid =
        built.map_err(|e| RuntimeError::backend(format!("exec in container {:?}", opts.id), &e))?;
    // Reaped now, before the wait below reaps every child.
    drop(warmup);
    super::exec_learn::finish(learn, pid.as_raw())?;
    if opts.detach {
        return Ok(0);
    }
    let set = foreground::block_signals()?;
    foreground::wait_forward(Pid::from_raw(pid.as_raw()), &set)
}

/// Whether an exec may go ahead: the container runs (or was created, or
/// is paused and `--ignore-paused`), and the request names a process.
fn check_request(status: ContainerStatus, opts: &ExecOptions) -> Result<()> {
    let runnable = status == ContainerStatus::Running
        || (status == ContainerStatus::Paused && opts.ignore_paused)
        || status == ContainerStatus::Created;
    if !runnable {
        return Err(RuntimeError::Status {
            id: opts.id.clone(),
            status: status_word(status).to_string(),
            action: "exec (container not running)",
        });
    }
    if opts.process.is_none() && opts.args.is_empty() {
        return Err(RuntimeError::Invalid(
            "exec needs a command (ARGS...) or --process FILE".into(),
        ));
    }
    if opts.tty && opts.detach && opts.console_socket.is_none() {
        return Err(RuntimeError::Invalid(
            "--tty with --detach needs --console-socket".into(),
        ));
    }
    Ok(())
}

/// The exec'd process is a clone of this one: sealed copy or not,
/// decided on the container as it is now (its init's root, `init` its pid).
fn check_seal(
    init: Option<Pid>,
    landlock: Option<&crate::landlock::LandlockPlan>,
    spec: &libcontainer::oci_spec::runtime::Spec,
) -> Result<()> {
    let init_root = init.map(|pid| format!("/proc/{pid}/root"));
    match init_root
        .as_deref()
        .map(|p| crate::exeseal::open_path(Path::new(p)))
    {
        Some(Ok(r)) => crate::exeseal::check(
            landlock,
            crate::landlock::kernel_abi(),
            spec,
            &crate::exeseal::ContainerView::Running { root: &r },
        ),
        // No view of the container: seal (libcontainer reports the rest).
        other => crate::exeseal::require(crate::exeseal::SealReason::Undetermined {
            what: format!("the container's root ({init_root:?}): {other:?}"),
        }),
    }
    .map_err(RuntimeError::Reseal)
}

/// The container's policy (as create wrote it) and the name it goes by.
fn read_policy(
    dir: &crate::statedir::StateDir,
    meta: &super::state::Meta,
) -> Result<(Policy, String)> {
    let policy_text = dir.read_policy_text()?;
    let policy = crate::policy::parse_policy(&policy_text, "policy.json")
        .map_err(|e| RuntimeError::Policy(e.to_string()))?;
    let policy_name = meta
        .annotations
        .get("buntime.dev/policy-origin")
        .cloned()
        .unwrap_or_else(|| "of this container".into());
    Ok((policy, policy_name))
}

/// Where create bound this container's proxy (its own port in `pod`
/// mode); containers made before the annotation: the fixed one.
fn proxy_port(meta: &super::state::Meta) -> u16 {
    meta.annotations
        .get(super::create::ANNOTATION_PROXY)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(crate::proxy::PROXY_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_env_parse() {
        assert_eq!(parse_user("1000").ok(), Some((1000, None)));
        assert_eq!(parse_user("1000:100").ok(), Some((1000, Some(100))));
        assert!(parse_user("root")
            .expect_err("names")
            .to_string()
            .contains("--user"));
        let env = parse_env(&["A=1".into(), "B=x=y".into(), "A=2".into()]).expect("env");
        assert_eq!(env, [("B".into(), "x=y".into()), ("A".into(), "2".into())]);
        assert!(parse_env(&["NOEQ".into()]).is_err());
    }
    fn init_process() -> Process {
        serde_json::from_value(serde_json::json!({
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
            "args": ["sh"],
            "env": ["PATH=/bin", "TMPDIR=/tmp", "BUNTIME_CONTROL=/run/buntime/control.sock"],
            "cwd": "/work",
            "capabilities": {"bounding": [], "effective": [], "permitted": [],
                             "inheritable": [], "ambient": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 333, "soft": 333},
                        {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}],
            "noNewPrivileges": true
        }))
        .expect("init process")
    }

    fn with_init<T>(f: impl FnOnce(&InitView<'_>) -> T) -> T {
        let process = init_process();
        let policy = crate::policy::builtin_run_default();
        f(&InitView {
            process: &process,
            policy: &policy,
            policy_name: "built-in default",
            proxy_port: None,
        })
    }

    fn argv(args: &[&str]) -> ExecOptions {
        ExecOptions {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..ExecOptions::default()
        }
    }

    fn all_caps(c: &LinuxCapabilities) -> Vec<Capabilities> {
        CAP_SETS
            .iter()
            .map(|(_, get)| set_of(Some(c), *get))
            .collect()
    }

    #[test]
    fn added_caps_are_refused_naming_the_policy() {
        let mut opts = argv(&["id"]);
        opts.caps = vec!["CAP_SYS_ADMIN".into()];
        let err = with_init(|i| exec_process(i, &opts, None)).expect_err("refused");
        let msg = err.to_string();
        assert!(matches!(
            err,
            RuntimeError::ExecRefused {
                field: ExecRule::Capabilities,
                ..
            }
        ));
        assert!(
            msg.contains("built-in default") && msg.contains("CAP_SYS_ADMIN"),
            "{msg}"
        );
        opts.caps = vec!["NO_SUCH_CAP".into()];
        assert!(with_init(|i| exec_process(i, &opts, None)).is_err());
    }

    #[test]
    fn process_object_caps_are_cut_to_inits() {
        let asked: Process = serde_json::from_value(serde_json::json!({
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_SYS_ADMIN", "CAP_MKNOD"],
                "effective": ["CAP_SYS_ADMIN"], "permitted": ["CAP_SYS_ADMIN"],
                "inheritable": ["CAP_SYS_ADMIN"], "ambient": ["CAP_SYS_ADMIN"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 99999, "soft": 99999}],
            "env": ["PATH=/bin", "LD_PRELOAD=/x.so", "TERM=xterm"],
            "noNewPrivileges": false,
            "oomScoreAdj": -1000
        }))
        .expect("process");
        let p = with_init(|i| exec_process(i, &argv(&[]), Some(asked))).expect("process");
        let caps = p.capabilities().clone().expect("caps");
        assert!(all_caps(&caps).iter().all(|s| s.is_empty()), "{caps:?}");
        assert_eq!(p.rlimits(), init_process().rlimits());
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.oom_score_adj(), None);
        let env = p.env().clone().unwrap_or_default();
        assert!(!env.iter().any(|e| e.starts_with("LD_PRELOAD")), "{env:?}");
        assert!(env.contains(&"TERM=xterm".to_string()), "{env:?}");
        assert!(env.contains(&"TMPDIR=/tmp".to_string()), "{env:?}");
        // What the runtime added to init's env stays.
        assert!(
            env.iter().any(|e| e.starts_with("BUNTIME_CONTROL=")),
            "{env:?}"
        );
    }

    #[test]
    fn caps_intersect_set_by_set() {
        let set = |v: &[Capability]| -> Option<Capabilities> { Some(v.iter().copied().collect()) };
        let mut init = LinuxCapabilities::default();
        init.set_bounding(set(&[Capability::Kill, Capability::Chown]));
        init.set_permitted(set(&[Capability::Kill]));
        init.set_effective(set(&[Capability::Kill]));
        init.set_inheritable(set(&[]));
        init.set_ambient(set(&[]));
        let (same, beyond) = exec_capabilities(Some(&init), None);
        let same = same.expect("init's sets");
        assert!(beyond.is_empty());
        assert_eq!(same.permitted(), init.permitted());
        let mut asked = LinuxCapabilities::default();
        asked.set_bounding(set(&[Capability::Chown, Capability::SysAdmin]));
        asked.set_permitted(set(&[Capability::Kill, Capability::SysAdmin]));
        asked.set_effective(set(&[Capability::Kill]));
        asked.set_inheritable(set(&[Capability::Kill]));
        asked.set_ambient(set(&[Capability::Kill]));
        let (got, beyond) = exec_capabilities(Some(&init), Some(&asked));
        let got = got.expect("sets");
        assert_eq!(got.bounding(), &set(&[Capability::Chown]));
        assert_eq!(got.permitted(), &set(&[Capability::Kill]));
        assert_eq!(got.ambient(), &set(&[]));
        assert!(
            beyond.iter().any(|b| b.contains("CAP_SYS_ADMIN")),
            "{beyond:?}"
        );
        // No capabilities in init's spec at all (neither the bundle nor the
        // policy named any): init keeps the runtime's, and so does exec.
        let (asked_back, beyond) = exec_capabilities(None, Some(&asked));
        assert_eq!(asked_back.as_ref(), Some(&asked));
        assert!(beyond.is_empty());
        assert_eq!(exec_capabilities(None, None).0, None);
    }

    #[test]
    fn user_from_the_spec_and_runc_style_override() {
        let p = with_init(|i| exec_process(i, &argv(&["id"]), None)).expect("process");
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(p.user().additional_gids(), &Some(vec![5]));
        assert_eq!(p.cwd(), Path::new("/work"));
        let mut opts = argv(&["id"]);
        opts.user = Some("1001".into());
        opts.additional_gids = vec![7];
        let p = with_init(|i| exec_process(i, &opts, None)).expect("process");
        assert_eq!((p.user().uid(), p.user().gid()), (1001, 1000));
        assert_eq!(p.user().additional_gids(), &Some(vec![5, 7]));
        opts.user = Some("0:0".into());
        let p = with_init(|i| exec_process(i, &opts, None)).expect("process");
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        assert_eq!(p.rlimits(), init_process().rlimits());
    }

    #[test]
    fn env_flags_go_through_the_env_rules() {
        let mut opts = argv(&["env"]);
        opts.env = vec!["LD_PRELOAD=/tmp/x.so".into()];
        let err = with_init(|i| exec_process(i, &opts, None)).expect_err("refused");
        assert!(
            matches!(
                err,
                RuntimeError::ExecRefused {
                    field: ExecRule::EnvPass,
                    ..
                }
            ),
            "{err}"
        );
        opts.env = vec!["TMPDIR=/var".into()];
        let err = with_init(|i| exec_process(i, &opts, None)).expect_err("refused");
        assert!(
            matches!(
                err,
                RuntimeError::ExecRefused {
                    field: ExecRule::EnvSet,
                    ..
                }
            ),
            "{err}"
        );
        opts.env = vec!["LANG=C.UTF-8".into()];
        let p = with_init(|i| exec_process(i, &opts, None)).expect("passed");
        let env = p.env().clone().unwrap_or_default();
        assert!(env.contains(&"LANG=C.UTF-8".to_string()), "{env:?}");
        assert!(env.contains(&"PATH=/bin".to_string()), "{env:?}");
        assert!(
            env.iter().any(|e| e.starts_with("BUNTIME_CONTROL=")),
            "{env:?}"
        );
    }
}
