//! `exec`: another process in a running container, with the same
//! namespaces, cgroup and seccomp profile as init.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::ContainerStatus;
use libcontainer::syscall::syscall::SyscallType;
use nix::unistd::Pid;

use super::bundle::parse_spec;
use super::error::{Result, RuntimeError};
use super::executor::BuntimeExecutor;
use super::foreground;
use super::state::{status_word, Root};

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

fn parse_env(items: &[String]) -> Result<HashMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    RuntimeError::Invalid(format!("invalid --env {kv:?}: expected KEY=VALUE"))
                })
        })
        .collect()
}

/// Runs the process; returns its exit code (0 when detached).
pub fn exec(root: &Root, opts: &ExecOptions) -> Result<i32> {
    // The process joins the container's cgroups: see cgroup_warmup.
    let warmup = super::cgroup_warmup::Warmup::start();
    let container = root.load(&opts.id)?;
    let status = container.status();
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
    let spec_file = root.extra_dir(&opts.id).join("config.json");
    let text = fs::read(&spec_file)
        .map_err(|e| RuntimeError::io(format!("read {}", spec_file.display()), e))?;
    let spec = parse_spec(&spec_file, &text)?;
    // Fail closed: a container whose plan is unreadable gets no exec.
    let meta = root.read_meta(&opts.id);
    let landlock = super::create::load_landlock(root, &opts.id, &meta)?;
    let seccomp = super::create::load_seccomp_programs(root, &opts.id, &meta)?;
    // The exec'd process is a clone of this one: sealed copy or not,
    // decided on the container as it is now (its init's root).
    let init_root = container.pid().map(|pid| format!("/proc/{pid}/root"));
    match init_root
        .as_deref()
        .map(|p| crate::exeseal::open_path(Path::new(p)))
    {
        Some(Ok(r)) => crate::exeseal::check(
            landlock.as_ref(),
            crate::landlock::kernel_abi(),
            &spec,
            &crate::exeseal::ContainerView::Running { root: &r },
        ),
        // No view of the container: seal (libcontainer reports the rest).
        other => crate::exeseal::require(crate::exeseal::SealReason::Undetermined {
            what: format!("the container's root ({init_root:?}): {other:?}"),
        }),
    }
    .map_err(RuntimeError::Reseal)?;
    let (uid, gid) = match &opts.user {
        Some(u) => {
            let (uid, gid) = parse_user(u)?;
            (Some(uid), gid)
        }
        None => (None, None),
    };
    let env = parse_env(&opts.env)?;
    let absolute = |p: &PathBuf| super::create::absolute(p);
    let process = opts.process.as_ref().map(absolute).transpose()?;
    let pid_file = opts.pid_file.as_ref().map(absolute).transpose()?;
    let console = opts.console_socket.as_ref().map(absolute).transpose()?;

    if !opts.detach {
        foreground::become_subreaper()?;
    }
    let pid = ContainerBuilder::new(opts.id.clone(), SyscallType::default())
        .with_root_path(root.path())
        .map_err(|e| RuntimeError::backend("--root", &e))?
        .with_pid_file(pid_file)
        .map_err(|e| RuntimeError::backend("--pid-file", &e))?
        .with_console_socket(console)
        .with_preserved_fds(opts.preserve_fds)
        .with_executor(BuntimeExecutor::for_exec(&spec, landlock, seccomp))
        .as_tenant()
        .with_detach(opts.detach)
        .with_cwd(opts.cwd.clone())
        .with_env(env)
        .with_process(process)
        .with_no_new_privs(opts.no_new_privs)
        .with_container_args(opts.args.clone())
        .with_capabilities(opts.caps.clone())
        .with_user(uid)
        .with_group(gid)
        .with_additional_gids(opts.additional_gids.clone())
        .with_ignore_paused(opts.ignore_paused)
        .build()
        .map_err(|e| RuntimeError::backend(format!("exec in container {:?}", opts.id), &e))?;
    // Reaped now, before the wait below reaps every child.
    drop(warmup);
    if opts.detach {
        return Ok(0);
    }
    let set = foreground::block_signals()?;
    foreground::wait_forward(Pid::from_raw(pid.as_raw()), &set)
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
        let env = parse_env(&["A=1".into(), "B=x=y".into()]).expect("env");
        assert_eq!(env.get("B").map(String::as_str), Some("x=y"));
        assert!(parse_env(&["NOEQ".into()]).is_err());
    }
}
