//! The kernel's floor for one container: the kernel work a container under
//! buntime-runc's engine default costs, done by a minimal program with no
//! runtime around it, so the churn bench can say how much of a
//! container's CPU is the kernel's and how much the runtime's.
//!
//! Read from the effective spec buntime-runc wrote for the same bundle
//! (and its compiled seccomp program), one container is three processes,
//! as under libcontainer (runtime, intermediate, init), all children of
//! the bench so `RUSAGE_CHILDREN` counts them:
//!
//! * P0 (stands for the CLI): `mkdir` of the container's cgroup in every
//!   v1 hierarchy libcontainer uses (cpu, cpuacct, cpuset, memory, devices,
//!   freezer, blkio, pids, under `buntime/`), `fork`; after P1 is gone,
//!   `rmdir` of them all (also when a step failed);
//! * P1 (the intermediate): `cpuset.cpus`/`cpuset.mems` copied from the
//!   parent, the devices rules (`a` denied, the default devices allowed),
//!   joins each cgroup by writing `0` to `tasks` (as patched libcontainer
//!   does: no RCU wait), one `unshare` of the spec's namespaces (pid, net,
//!   ipc, uts, mount), `fork`, waits for init;
//! * P2 (init, pid 1): `/` made rslave, the rootfs bound onto itself, the
//!   spec's mounts beneath it (proc, /dev tmpfs, devpts, shm, sysfs, /tmp,
//!   the `/run/buntime` bind and its read-only remount; a bind whose state
//!   directory is gone comes from an empty directory), the default device
//!   nodes (`mknod` null, zero, full, tty, random, urandom) and /dev
//!   symlinks, `pivot_root` and the old root detached, the readonly paths
//!   (bind + read-only remount) and masked paths (`/dev/null` over files,
//!   a read-only tmpfs over directories; absent ones skipped), the
//!   read-only remount of `/`, `sethostname`, `lo` up, the rlimits, the
//!   bounding set dropped to the spec's and `capset`, `no_new_privs`, the
//!   same seccomp program (`seccomp(2)` with its flags), `execve`.
//!
//! Left out: every runtime cost (the CLI's exec and start, the
//! re-execution through the read-only overlay, parsing and policy, state
//! files, the supervisor and its handover, the sync between processes,
//! the seccomp compile: buntime caches it too), and a cgroup-namespace or
//! mqueue mount (the effective spec has neither). The namespaces' teardown
//! after exit runs in kernel threads, as for the other sides.
//!
//! Everything P0–P2 do after `fork` is system calls on memory prepared
//! before it (the bench is multi-threaded: no allocation there).

// Each bench uses the part it needs.
#![allow(dead_code)]

use std::ffi::{c_int, CString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

#[path = "floor_steps.rs"]
mod steps;
use steps::{Caps, MountOp};

/// libcontainer's v1 hierarchies (third_party/libcgroups).
const HIERARCHIES: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
];
/// Where the floor's cgroups go: beside buntime-runc's, under `buntime/`.
const CG_PARENT: &str = "buntime";
/// libcgroups' default allowed devices, as `devices.allow` lines.
const DEVICE_RULES: [&str; 9] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:8 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:5 rwm",
    "c 1:9 rwm",
    "c 136:* rwm",
];

/// Paths and values prepared for one kind of container (the spec's).
#[derive(Clone)]
pub struct Plan {
    rootfs: CString,
    ns_flags: c_int,
    pre_pivot: Vec<MountOp>,
    devices: Vec<(CString, u32, u64)>,
    symlinks: Vec<(CString, CString)>,
    post_pivot: Vec<MountOp>,
    hostname: Option<CString>,
    rlimits: Vec<(u32, u64, u64)>,
    caps: Caps,
    no_new_privs: bool,
    seccomp: Option<(u32, Vec<libc::sock_filter>)>,
    cwd: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cpuset: (CString, CString),
    tag: String,
}

/// One container's cgroup files, made before `fork`.
struct Cgroup {
    dirs: Vec<CString>,
    tasks: Vec<CString>,
    cpuset: (CString, CString),
    deny: CString,
    allow: CString,
}

fn cstr(s: impl AsRef<[u8]>) -> CString {
    CString::new(s.as_ref().to_vec()).unwrap_or_default()
}

fn cpath(p: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    cstr(p.as_os_str().as_bytes())
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Plan {
    /// The plan for containers like the one `spec` (an effective spec)
    /// describes, loading `bpf` (a buntime seccomp program file) if given;
    /// `scratch` holds stand-ins for bind sources that are gone.
    pub fn load(
        spec: &Path,
        bpf: Option<&Path>,
        scratch: &Path,
        tag: &str,
    ) -> Result<Plan, String> {
        let text = std::fs::read_to_string(spec).map_err(|e| format!("{}: {e}", spec.display()))?;
        let spec: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let rootfs = PathBuf::from(spec["root"]["path"].as_str().ok_or("no root.path")?);
        let linux = &spec["linux"];
        let process = &spec["process"];
        let (pre_pivot, has_dev) = steps::spec_mounts(&spec, &rootfs, scratch)?;
        let mut post_pivot = steps::path_mounts(linux);
        if spec["root"]["readonly"].as_bool() == Some(true) {
            post_pivot.push(MountOp::remount_ro("/"));
        }
        let (devices, symlinks) = if has_dev {
            steps::dev_nodes(&rootfs)
        } else {
            (Vec::new(), Vec::new())
        };
        let parent = Path::new("/sys/fs/cgroup/cpuset").join(CG_PARENT);
        let read = |f: &str| std::fs::read_to_string(parent.join(f)).unwrap_or_default();
        Ok(Plan {
            rootfs: cpath(&rootfs),
            ns_flags: steps::ns_flags(linux),
            pre_pivot,
            devices,
            symlinks,
            post_pivot,
            hostname: spec["hostname"].as_str().map(cstr),
            rlimits: steps::rlimits(process),
            caps: Caps::from_spec(process)?,
            no_new_privs: process["noNewPrivileges"].as_bool() == Some(true),
            seccomp: bpf.map(steps::load_bpf).transpose()?,
            cwd: cstr(process["cwd"].as_str().unwrap_or("/")),
            argv: strs(&process["args"]).iter().map(cstr).collect(),
            envp: strs(&process["env"]).iter().map(cstr).collect(),
            cpuset: (
                cstr(read("cpuset.cpus").trim()),
                cstr(read("cpuset.mems").trim()),
            ),
            tag: tag.to_string(),
        })
    }

    fn cgroup(&self, i: usize) -> Cgroup {
        let name = format!("floor-{}-{i}", self.tag);
        let dir = |h: &str| {
            Path::new("/sys/fs/cgroup")
                .join(h)
                .join(CG_PARENT)
                .join(&name)
        };
        Cgroup {
            dirs: HIERARCHIES.iter().map(|h| cpath(&dir(h))).collect(),
            tasks: HIERARCHIES
                .iter()
                .map(|h| cpath(&dir(h).join("tasks")))
                .collect(),
            cpuset: (
                cpath(&dir("cpuset").join("cpuset.cpus")),
                cpath(&dir("cpuset").join("cpuset.mems")),
            ),
            deny: cpath(&dir("devices").join("devices.deny")),
            allow: cpath(&dir("devices").join("devices.allow")),
        }
    }

    /// The `i`-th container: a command whose child (P0) runs the whole
    /// container and exits with init's status (0 when `/bin/true` ran).
    pub fn command(self: &Arc<Self>, i: usize) -> Command {
        let plan = Arc::clone(self);
        let cg = Arc::new(self.cgroup(i));
        let argv = steps::Ptrs::new(&plan.argv);
        let envp = steps::Ptrs::new(&plan.envp);
        let mut c = Command::new("/bin/true");
        // SAFETY: the closure runs in the forked child and only makes
        // system calls on memory prepared above; it never returns (P0
        // exits with the container's status, so no exec follows).
        unsafe {
            c.pre_exec(move || {
                let code = p0(&plan, &cg, &argv, &envp);
                libc::_exit(code)
            });
        }
        c
    }

    /// What a container of this plan must show from inside (busybox
    /// `sh` tests), so the floor is known to do what it claims: the names
    /// of the checks that failed. Each runs in a container of its own.
    pub fn probe(&self, run: &dyn Fn(&mut Command) -> bool) -> Vec<&'static str> {
        let mounts = self.pre_pivot.iter().chain(&self.post_pivot);
        // The rootfs bind is in the list; the old root is detached.
        let mounts = mounts.filter(|m| m.adds()).count();
        let checks = [
            ("pid 1", "[ $$ = 1 ]".to_string()),
            (
                "mounts",
                format!("[ $(wc -l < /proc/self/mountinfo) = {mounts} ]"),
            ),
            (
                "8 cgroups",
                format!(
                    "[ $(grep -c buntime/floor-{} /proc/self/cgroup) = 8 ]",
                    self.tag
                ),
            ),
            ("seccomp", "grep -q '^Seccomp:.2' /proc/self/status".into()),
            (
                "no_new_privs",
                "grep -q '^NoNewPrivs:.1' /proc/self/status".into(),
            ),
            (
                "bounding set",
                format!(
                    "grep -q '^CapBnd:.{:016x}' /proc/self/status",
                    self.caps.bounding
                ),
            ),
            (
                "hostname",
                format!(
                    "[ $(hostname) = {} ]",
                    self.hostname
                        .as_ref()
                        .map_or("", |h| h.to_str().unwrap_or(""))
                ),
            ),
            ("lo up", "[ $(cat /sys/class/net/lo/flags) = 0x9 ]".into()),
            ("root read-only", "! touch /floor-probe 2>/dev/null".into()),
            ("rlimit", "[ $(ulimit -n) = 1024 ]".into()),
            ("/dev/null", "[ -c /dev/null ] && echo x > /dev/null".into()),
        ];
        let mut failed = Vec::new();
        for (k, (name, test)) in checks.into_iter().enumerate() {
            let mut plan = self.clone();
            plan.argv = ["/bin/sh", "-c", &test].iter().map(cstr).collect();
            if !run(&mut Arc::new(plan).command(usize::MAX - 1 - k)) {
                failed.push(name);
            }
        }
        failed
    }

    /// Cgroup directories of this plan's containers still present (after
    /// a phase: none, or P0 failed to clean up); removes them.
    pub fn leftovers(&self) -> usize {
        leftovers(&self.tag)
    }
}

/// Cgroup directories of floor plans tagged `tag` (or `tag-...`) still
/// present; removes them.
pub fn leftovers(tag: &str) -> usize {
    let prefix = format!("floor-{tag}-");
    let mut n = 0;
    for h in HIERARCHIES {
        let parent = Path::new("/sys/fs/cgroup").join(h).join(CG_PARENT);
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                n += 1;
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    n
}

/// P0: the cgroups around P1's life. Returns the exit code.
fn p0(plan: &Plan, cg: &Cgroup, argv: &steps::Ptrs, envp: &steps::Ptrs) -> c_int {
    let mut code = 90;
    let made = cg.dirs.iter().take_while(|d| steps::mkdir(d)).count();
    if made == cg.dirs.len() {
        // SAFETY: fork in a single-threaded process (P0).
        match unsafe { libc::fork() } {
            0 => unsafe { libc::_exit(p1(plan, cg, argv, envp)) },
            pid if pid > 0 => code = steps::wait(pid),
            _ => code = 91,
        }
    }
    for d in cg.dirs[..made].iter().rev() {
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::rmdir(d.as_ptr()) } != 0 && code == 0 {
            code = 92;
        }
    }
    code
}

/// P1: resources, joins the cgroups, the namespaces, init.
fn p1(plan: &Plan, cg: &Cgroup, argv: &steps::Ptrs, envp: &steps::Ptrs) -> c_int {
    let mut ok = steps::write(&cg.cpuset.0, plan.cpuset.0.as_bytes())
        && steps::write(&cg.cpuset.1, plan.cpuset.1.as_bytes())
        && steps::write(&cg.deny, b"a");
    for rule in DEVICE_RULES {
        ok = ok && steps::write(&cg.allow, rule.as_bytes());
    }
    for t in &cg.tasks {
        ok = ok && steps::write(t, b"0");
    }
    if !ok {
        return 93;
    }
    // SAFETY: plain system calls; the child is single-threaded.
    unsafe {
        if libc::unshare(plan.ns_flags) != 0 {
            return 94;
        }
        match libc::fork() {
            0 => libc::_exit(steps::init(plan, argv, envp)),
            pid if pid > 0 => steps::wait(pid),
            _ => 95,
        }
    }
}

/// The plan for `bundle` under `runtime`'s engine default: creates one
/// container (`run` starts and waits for each command), keeps its
/// effective spec and seccomp program in `work`, deletes it.
pub fn from_runtime(
    runtime: &Path,
    run: &dyn Fn(&mut Command) -> bool,
    bundle: &Path,
    work: &Path,
    tag: &str,
) -> Result<Arc<Plan>, String> {
    let root = work.join("root");
    let id = format!("floor-spec-{tag}");
    let rt = |args: &[&str]| {
        let mut c = Command::new(runtime);
        c.arg("--root").arg(&root).args(args);
        c
    };
    let mut create = rt(&["create", "--bundle"]);
    create.arg(bundle).arg(&id);
    if !run(&mut create) {
        return Err(format!("{} create failed", runtime.display()));
    }
    let state = root.join(".buntime").join(&id);
    let spec = work.join("effective-spec.json");
    let bpf = work.join("seccomp.bpf");
    let copied = std::fs::copy(state.join("effective-spec.json"), &spec).map_err(|e| e.to_string());
    let has_bpf = std::fs::copy(state.join("seccomp.bpf"), &bpf).is_ok();
    if !run(&mut rt(&["delete", "--force", &id])) {
        eprintln!("floor: delete of {id} failed");
    }
    copied?;
    let plan = Plan::load(
        &spec,
        has_bpf.then_some(bpf.as_path()),
        &work.join("bind"),
        tag,
    )?;
    Ok(Arc::new(plan))
}
