//! The floor's steps (benches/shared/floor.rs): what is read from the spec
//! before `fork`, and the system calls init makes after it.

use std::ffi::{c_int, c_ulong, c_void, CString};
use std::path::Path;

use serde_json::Value;

use super::{cpath, cstr, strs, Plan};

/// One mount(2) call, prepared. `optional`: ENOENT is not a failure (a
/// masked or readonly path this kernel does not have).
#[derive(Clone)]
pub struct MountOp {
    source: Option<CString>,
    target: CString,
    fstype: Option<CString>,
    flags: c_ulong,
    data: Option<CString>,
    optional: bool,
    /// Make the mount point first (one beneath a tmpfs mounted before,
    /// as /dev/pts, does not exist yet; libcontainer makes them too).
    mkdir: bool,
}

impl MountOp {
    /// Whether this call adds a mount (not a remount or a propagation
    /// change).
    pub fn adds(&self) -> bool {
        self.flags & (libc::MS_REMOUNT | libc::MS_SLAVE) == 0
    }

    pub fn remount_ro(target: &str) -> MountOp {
        MountOp {
            source: None,
            target: cstr(target),
            fstype: None,
            flags: libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            data: None,
            optional: false,
            mkdir: false,
        }
    }

    fn bind(source: CString, target: CString, rec: bool, optional: bool) -> MountOp {
        let rec = if rec { libc::MS_REC } else { 0 };
        MountOp {
            source: Some(source),
            target,
            fstype: None,
            flags: libc::MS_BIND | rec,
            data: None,
            optional,
            mkdir: false,
        }
    }

    /// SAFETY of the call: every pointer is a live NUL-terminated string
    /// or null.
    fn run(&self) -> bool {
        let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        if self.mkdir {
            // SAFETY: a NUL-terminated path; EEXIST is the usual answer.
            unsafe { libc::mkdir(self.target.as_ptr(), 0o755) };
        }
        // SAFETY: see above.
        let r = unsafe {
            libc::mount(
                p(&self.source),
                self.target.as_ptr(),
                p(&self.fstype),
                self.flags,
                p(&self.data).cast::<c_void>(),
            )
        };
        // SAFETY: reads this thread's errno.
        r == 0 || (self.optional && unsafe { *libc::__errno_location() } == libc::ENOENT)
    }
}

/// Mount flags for the options libcontainer turns into flags; the rest
/// is the file system's data.
fn options(opts: &[String]) -> (c_ulong, Vec<String>, bool) {
    let (mut flags, mut data, mut bind) = (0, Vec::new(), false);
    for o in opts {
        match o.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                flags |= libc::MS_REC
            }
            "rw" | "private" | "rprivate" | "slave" | "rslave" => {}
            _ => data.push(o.clone()),
        }
    }
    (flags, data, bind)
}

/// The spec's mounts beneath `rootfs` (after the rootfs bind), and
/// whether /dev is a tmpfs to fill with device nodes.
pub fn spec_mounts(
    spec: &Value,
    rootfs: &Path,
    scratch: &Path,
) -> Result<(Vec<MountOp>, bool), String> {
    let slave = MountOp {
        source: None,
        target: cstr("/"),
        fstype: None,
        flags: libc::MS_SLAVE | libc::MS_REC,
        data: None,
        optional: false,
        mkdir: false,
    };
    let root = cpath(rootfs);
    let mut ops = vec![slave, MountOp::bind(root.clone(), root, true, false)];
    let mut has_dev = false;
    for m in spec["mounts"].as_array().into_iter().flatten() {
        let dest = m["destination"]
            .as_str()
            .ok_or("mount without destination")?;
        let kind = m["type"].as_str().unwrap_or("");
        let source = m["source"].as_str().unwrap_or("");
        let (flags, data, bind) = options(&strs(&m["options"]));
        let target = rootfs.join(dest.trim_start_matches('/'));
        // Mount points are made once here, as libcontainer's first run
        // made them in the bundle: in steady state it only finds them.
        let _ = std::fs::create_dir_all(&target);
        if bind || kind == "bind" {
            let src = if Path::new(source).exists() {
                Path::new(source)
            } else {
                scratch
            };
            let _ = std::fs::create_dir_all(scratch);
            let mut b = MountOp::bind(cpath(src), cpath(&target), flags & libc::MS_REC != 0, false);
            b.mkdir = true;
            ops.push(b);
            let mut ro = MountOp::remount_ro("/");
            ro.target = cpath(&target);
            ro.flags = libc::MS_REMOUNT | libc::MS_BIND | (flags & !libc::MS_REC);
            ops.push(ro);
            continue;
        }
        has_dev |= dest == "/dev" && kind == "tmpfs";
        ops.push(MountOp {
            source: Some(cstr(source)),
            target: cpath(&target),
            fstype: Some(cstr(kind)),
            flags,
            data: (!data.is_empty()).then(|| cstr(data.join(","))),
            optional: false,
            mkdir: true,
        });
    }
    Ok((ops, has_dev))
}

/// The readonly paths (bind onto themselves, remount read-only) and the
/// masked paths (`/dev/null` over a file, read-only tmpfs over a
/// directory), as libcontainer applies them after `pivot_root`.
pub fn path_mounts(linux: &Value) -> Vec<MountOp> {
    let mut ops = Vec::new();
    for p in strs(&linux["readonlyPaths"]) {
        if std::fs::symlink_metadata(&p).is_err() {
            continue;
        }
        ops.push(MountOp::bind(cstr(&p), cstr(&p), true, true));
        let mut ro = MountOp::remount_ro(&p);
        ro.flags |= libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        ro.optional = true;
        ops.push(ro);
    }
    for p in strs(&linux["maskedPaths"]) {
        // The container's /proc and /sys show what the host's do.
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => ops.push(MountOp {
                source: Some(cstr("tmpfs")),
                target: cstr(&p),
                fstype: Some(cstr("tmpfs")),
                flags: libc::MS_RDONLY,
                data: None,
                optional: true,
                mkdir: false,
            }),
            Ok(_) => ops.push(MountOp::bind(cstr("/dev/null"), cstr(&p), false, true)),
            Err(_) => {}
        }
    }
    ops
}

/// libcontainer's default devices (mknod under a tmpfs /dev) and /dev's
/// symlinks, beneath `rootfs`.
#[allow(clippy::type_complexity)]
pub fn dev_nodes(rootfs: &Path) -> (Vec<(CString, u32, u64)>, Vec<(CString, CString)>) {
    let dev = rootfs.join("dev");
    let nodes = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("tty", 5, 0),
        ("random", 1, 8),
        ("urandom", 1, 9),
    ]
    .iter()
    .map(|&(n, ma, mi)| {
        (
            cpath(&dev.join(n)),
            libc::S_IFCHR | 0o666,
            libc::makedev(ma, mi),
        )
    })
    .collect();
    let links = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ]
    .iter()
    .map(|&(t, l)| (cstr(t), cpath(&dev.join(l))))
    .collect();
    (nodes, links)
}

pub fn ns_flags(linux: &Value) -> c_int {
    let mut f = 0;
    for ns in linux["namespaces"].as_array().into_iter().flatten() {
        f |= match ns["type"].as_str().unwrap_or("") {
            "pid" => libc::CLONE_NEWPID,
            "network" => libc::CLONE_NEWNET,
            "ipc" => libc::CLONE_NEWIPC,
            "uts" => libc::CLONE_NEWUTS,
            "mount" => libc::CLONE_NEWNS,
            "cgroup" => libc::CLONE_NEWCGROUP,
            "user" => libc::CLONE_NEWUSER,
            _ => 0,
        };
    }
    f
}

pub fn rlimits(process: &Value) -> Vec<(u32, u64, u64)> {
    let mut v = Vec::new();
    for r in process["rlimits"].as_array().into_iter().flatten() {
        let res = match r["type"].as_str().unwrap_or("") {
            "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
            "RLIMIT_CORE" => libc::RLIMIT_CORE,
            "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
            "RLIMIT_AS" => libc::RLIMIT_AS,
            _ => continue,
        };
        v.push((
            res,
            r["soft"].as_u64().unwrap_or(0),
            r["hard"].as_u64().unwrap_or(0),
        ));
    }
    v
}

/// Capability names in kernel order (linux/capability.h).
const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The process's capability sets, as bit masks.
#[derive(Clone)]
pub struct Caps {
    pub bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
    last: u32,
}

impl Caps {
    pub fn from_spec(process: &Value) -> Result<Caps, String> {
        let mask = |set: &str| -> Result<u64, String> {
            let mut m = 0;
            for name in strs(&process["capabilities"][set]) {
                let short = name.trim_start_matches("CAP_");
                let bit = CAP_NAMES
                    .iter()
                    .position(|c| *c == short)
                    .ok_or(format!("capability {name}"))?;
                m |= 1 << bit;
            }
            Ok(m)
        };
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        Ok(Caps {
            bounding: mask("bounding")?,
            effective: mask("effective")?,
            permitted: mask("permitted")?,
            inheritable: mask("inheritable")?,
            last,
        })
    }

    /// Drops the bounding set to the spec's, then sets the other sets.
    fn apply(&self) -> bool {
        for c in 0..=self.last {
            // SAFETY: prctl with integer arguments.
            if self.bounding & (1 << c) == 0
                && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as c_ulong, 0, 0, 0) } != 0
            {
                return false;
            }
        }
        #[repr(C)]
        struct Header {
            version: u32,
            pid: c_int,
        }
        #[repr(C)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let half = |m: u64, i: u32| (m >> (32 * i)) as u32;
        let data = [0, 1].map(|i| Data {
            effective: half(self.effective, i),
            permitted: half(self.permitted, i),
            inheritable: half(self.inheritable, i),
        });
        // SAFETY: capset(2) with a v3 header and two data structs.
        unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) == 0 }
    }
}

/// A buntime seccomp program file (src/runtime/seccomp_bpf.rs: magic,
/// flags, count, instructions).
pub fn load_bpf(path: &Path) -> Result<(u32, Vec<libc::sock_filter>), String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = || format!("{}: not a buntime seccomp program", path.display());
    let rest = b.strip_prefix(b"BTSCMP01".as_slice()).ok_or_else(bad)?;
    let word = |i: usize| {
        rest.get(i..i + 4)
            .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
    };
    let (flags, n) = (word(0).ok_or_else(bad)?, word(4).ok_or_else(bad)? as usize);
    let insns = rest.get(8..).filter(|r| r.len() == n * 8).ok_or_else(bad)?;
    Ok((
        flags,
        insns
            .chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    ))
}

/// A NULL-terminated pointer array into strings the plan owns.
pub struct Ptrs(Vec<*const libc::c_char>);

// SAFETY: the pointers point into the plan's CStrings, which live (in an
// Arc) as long as the command holding these; they are only read.
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

impl Ptrs {
    pub fn new(v: &[CString]) -> Ptrs {
        Ptrs(
            v.iter()
                .map(|c| c.as_ptr())
                .chain([std::ptr::null()])
                .collect(),
        )
    }
}

pub fn mkdir(path: &CString) -> bool {
    // SAFETY: a NUL-terminated path.
    unsafe { libc::mkdir(path.as_ptr(), 0o755) == 0 }
}

/// Writes `data` to the file at `path` in one write(2).
pub fn write(path: &CString, data: &[u8]) -> bool {
    // SAFETY: a NUL-terminated path; `data` is live for the call.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        n == data.len() as isize
    }
}

/// Waits for `pid`; its exit code (or 96 if it was killed).
pub fn wait(pid: libc::pid_t) -> c_int {
    let mut status = 0;
    // SAFETY: waits for our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        // SAFETY: reads this thread's errno.
        if unsafe { *libc::__errno_location() } != libc::EINTR {
            return 97;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        96
    }
}

/// P2, pid 1 of the new namespaces: the root file system, then the
/// process's attributes, then exec. Returns a code only on failure.
pub fn init(plan: &Plan, argv: &Ptrs, envp: &Ptrs) -> c_int {
    for (k, op) in plan.pre_pivot.iter().enumerate() {
        if !op.run() {
            return 100 + k.min(50) as c_int;
        }
    }
    // SAFETY: system calls on prepared NUL-terminated strings.
    unsafe {
        for (path, mode, dev) in &plan.devices {
            if libc::mknod(path.as_ptr(), *mode, *dev) != 0 {
                return 151;
            }
        }
        for (target, link) in &plan.symlinks {
            if libc::symlink(target.as_ptr(), link.as_ptr()) != 0 {
                return 152;
            }
        }
        let dot = c".".as_ptr();
        if libc::chdir(plan.rootfs.as_ptr()) != 0
            || libc::syscall(libc::SYS_pivot_root, dot, dot) != 0
            || libc::mount(
                std::ptr::null(),
                dot,
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            || libc::umount2(dot, libc::MNT_DETACH) != 0
            || libc::chdir(c"/".as_ptr()) != 0
        {
            return 153;
        }
    }
    for op in &plan.post_pivot {
        if !op.run() {
            return 154;
        }
    }
    attributes(plan, argv, envp).unwrap_or_else(|code| code)
}

/// Hostname, `lo`, rlimits, capabilities, no_new_privs, seccomp, exec.
fn attributes(plan: &Plan, argv: &Ptrs, envp: &Ptrs) -> Result<c_int, c_int> {
    // SAFETY: system calls on prepared memory; execve only returns on
    // failure.
    unsafe {
        if let Some(h) = &plan.hostname {
            if libc::sethostname(h.as_ptr(), h.as_bytes().len()) != 0 {
                return Err(155);
            }
        }
        lo_up().then_some(()).ok_or(156)?;
        for &(res, soft, hard) in &plan.rlimits {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(res, &lim) != 0 {
                return Err(157);
            }
        }
        plan.caps.apply().then_some(()).ok_or(158)?;
        if plan.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(159);
        }
        if let Some((flags, insns)) = &plan.seccomp {
            let prog = libc::sock_fprog {
                len: insns.len() as u16,
                filter: insns.as_ptr().cast_mut(),
            };
            if libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                *flags,
                &prog,
            ) != 0
            {
                return Err(160);
            }
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            return Err(161);
        }
        libc::execve(argv.0[0], argv.0.as_ptr(), envp.0.as_ptr());
    }
    Err(162)
}

/// `lo` up in the new network namespace (SIOCSIFFLAGS).
fn lo_up() -> bool {
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: i16,
        pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: libc::IFF_UP as i16,
        pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: a socket and an ioctl on a live ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return false;
        }
        let ok = libc::ioctl(s, libc::SIOCSIFFLAGS, &mut req) == 0;
        libc::close(s);
        ok
    }
}
