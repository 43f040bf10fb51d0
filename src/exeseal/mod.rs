//! Sealing the running binary against CVE-2019-5736-style overwrites,
//! where the kernel's other layers do not already stop them.
//!
//! A process that enters a container (libcontainer's intermediate and
//! init, and `exec`'s process, are clones of `create`/`run`/`exec`) runs
//! the runtime's binary inside it until its final exec. A container that
//! gets hold of such a process's `/proc/PID/exe` (a program of its image
//! replaced by `#!/proc/self/exe` that `exec` then runs; a hook it
//! controls) can reopen the magic link for writing once the process is
//! gone: the host's runtime would run its code next time.
//!
//! Writing through `/proc/PID/exe` is checked by Landlock on the host path
//! of the binary: Landlock rules are attached to inodes, and the walk goes
//! from the binary up through the host's directories (hidden mount points
//! skipped). So a container whose Landlock domain is enforced can write
//! the binary only if one of its write rules (`filesystem.write`:
//! write-file and truncate among its rights; read and exec rules grant
//! neither) was opened on the binary or on one of those directories, which
//! takes a bind mount of the binary's directory (or an ancestor). The
//! runtime decides after the Landlock plan is known ([`decide`]) and,
//! only when that can happen or cannot be ruled out, re-executes the
//! whole command from a read-only copy: the binary through a detached
//! read-only overlay of its directory ([`copy::overlay_open`], as runc 1.2), or
//! where that cannot be mounted a sealed memfd copy
//! (`F_SEAL_SEAL|SHRINK|GROW|WRITE` and `F_SEAL_EXEC`, as runc did before
//! 1.2 and youki's CLI does). Under `buntime run`'s policies nothing is
//! re-executed; the engine default (`landlock: off`) always is: about 2 ms
//! through the overlay, 10 through the memfd.
//!
//! The command is redone from the start: the call that decided returns
//! [`crate::runtime::RuntimeError::Reseal`], everything it made is undone
//! on the way out, and `main` calls [`reexec`]. The sealed process finds
//! [`MARKER`] (the original path), removes it at once, checks
//! `/proc/self/exe` itself ([`init`]) and never asks again.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::landlock::LandlockPlan;

mod copy;
mod view;

use copy::{cstr, last_err, memfd_copy, overlay_open};
use view::Target;
pub use view::{open_path, BinaryInodes, ContainerView};

/// Set on the re-executed process to the original binary's path; removed
/// from the environment first thing, so children never see it.
pub const MARKER: &str = "_BUNTIME_SEALED_FROM";

/// The seals a memfd copy must carry.
const MEMFD_SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
/// `F_SEAL_EXEC` (Linux 6.3): the copy's mode bits cannot be changed.
const F_SEAL_EXEC: libc::c_int = 0x20;
/// `MFD_EXEC` (Linux 6.3): an executable memfd where `vm.memfd_noexec`
/// would otherwise make it non-executable.
const MFD_EXEC: libc::c_uint = 0x10;

/// Landlock handles truncation from ABI 3 on; before, `truncate(2)` of
/// `/proc/PID/exe` is not Landlock's to refuse.
const TRUNCATE_ABI: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealing the runtime binary: {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("sealing the runtime binary: re-executed from a sealed copy, but /proc/self/exe is still a writable file")]
    NotSealed,
    #[error("sealing the runtime binary: already re-executed once ({0}); not looping")]
    Loop(SealReason),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SealError {
    let what = what.into();
    move |source| SealError::Io { what, source }
}

/// How `/proc/self/exe` is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealed {
    /// A memfd carrying every write seal.
    Memfd,
    /// A file on a read-only mount (a binary installed on a read-only
    /// filesystem): the magic link reopens it through that mount.
    ReadOnlyMount,
}

/// Set by [`init`] in a re-executed process: how it is sealed and the
/// original binary's path.
static STATE: OnceLock<(Sealed, PathBuf)> = OnceLock::new();

/// Call first thing in `main`, before any thread is started. Without
/// [`MARKER`] in the environment it does nothing else. With it, it removes
/// it and checks that this process really runs from a sealed copy (fails
/// closed otherwise).
pub fn init() -> Result<(), SealError> {
    let Some(from) = std::env::var_os(MARKER) else {
        return Ok(());
    };
    // Single-threaded still (see above): no one reads the environment
    // concurrently.
    std::env::remove_var(MARKER);
    let kind = self_exe_sealed()?.ok_or(SealError::NotSealed)?;
    let _ = STATE.set((kind, PathBuf::from(from)));
    Ok(())
}

/// How this process is sealed, if it was re-executed from a sealed copy.
pub fn sealed() -> Option<Sealed> {
    STATE.get().map(|(k, _)| *k)
}

/// The path of the binary on disk: where the sealed copy came from, else
/// `current_exe` (whose answer for a sealed copy names no real file).
pub fn exe_path() -> std::io::Result<PathBuf> {
    match STATE.get() {
        Some((_, p)) => Ok(p.clone()),
        None => std::env::current_exe(),
    }
}

/// A command that starts another copy of ourselves (the supervisor): the
/// sealed file itself when this process is sealed (the child is sealed
/// too, at no cost, and knows the original path), else the binary's path.
pub fn self_command() -> std::io::Result<std::process::Command> {
    use std::os::unix::process::CommandExt;
    Ok(match STATE.get() {
        Some((_, path)) => {
            let mut cmd = std::process::Command::new("/proc/self/exe");
            cmd.arg0(path).env(MARKER, path);
            cmd
        }
        None => std::process::Command::new(std::env::current_exe()?),
    })
}

/// Is `/proc/self/exe` a sealed memfd or a file on a read-only mount?
pub fn self_exe_sealed() -> Result<Option<Sealed>, SealError> {
    let f = File::open("/proc/self/exe").map_err(io("open /proc/self/exe"))?;
    Ok(file_sealed(&f))
}

/// The same check for any open file.
pub fn file_sealed(f: &File) -> Option<Sealed> {
    // SAFETY: F_GET_SEALS on a descriptor we own; fails (EINVAL) on
    // anything but a memfd.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & MEMFD_SEALS == MEMFD_SEALS {
        return Some(Sealed::Memfd);
    }
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills `st` on success.
    let r = unsafe { libc::fstatvfs(f.as_raw_fd(), st.as_mut_ptr()) };
    if r == 0 {
        // SAFETY: initialised by the successful call.
        let st = unsafe { st.assume_init() };
        // The mount's flags: a container cannot remount a host mount.
        if st.f_flag & libc::ST_RDONLY != 0 {
            return Some(Sealed::ReadOnlyMount);
        }
    }
    None
}

// ---------------------------------------------------------------------
// The decision.

/// Why the binary must be sealed before a container is entered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealReason {
    /// No Landlock domain for the container (the kernel has none, or the
    /// container was made without one): only file modes stand in the way.
    NoLandlock,
    /// The kernel's Landlock cannot refuse truncation (ABI below 3).
    TruncateNotHandled { abi: u32 },
    /// The container shares a pid namespace (the host's, or another's):
    /// processes outside its Landlock domain can see the runtime's.
    SharedPidNamespace,
    /// This write rule is opened, in the container, on the binary or a
    /// directory above it on the host.
    WriteRuleCoversBinary { rule: PathBuf },
    /// Something could not be determined (fail closed).
    Undetermined { what: String },
}

impl std::fmt::Display for SealReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealReason::NoLandlock => write!(f, "no Landlock domain for the container"),
            SealReason::TruncateNotHandled { abi } => {
                write!(
                    f,
                    "the kernel's Landlock ABI {abi} cannot refuse truncation"
                )
            }
            SealReason::SharedPidNamespace => {
                write!(f, "the container has no pid namespace of its own")
            }
            SealReason::WriteRuleCoversBinary { rule } => write!(
                f,
                "filesystem.write rule {} covers the runtime binary",
                rule.display()
            ),
            SealReason::Undetermined { what } => write!(f, "cannot tell: {what}"),
        }
    }
}

/// Whether the command must re-execute from a sealed copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealDecision {
    NotNeeded,
    Needed(SealReason),
}

/// Must processes that enter this container run from a sealed copy?
/// `plan` is the Landlock plan they will apply (`None`: none), `abi` the
/// kernel's Landlock ABI, `spec` the effective spec (namespaces), `view`
/// how the plan's paths resolve in the container. Anything that cannot be
/// determined means sealing.
pub fn decide(
    plan: Option<&LandlockPlan>,
    abi: Option<u32>,
    spec: &Spec,
    binary: &BinaryInodes,
    view: &ContainerView<'_>,
) -> SealDecision {
    let Some(plan) = plan else {
        return SealDecision::Needed(SealReason::NoLandlock);
    };
    let Some(abi) = abi else {
        return SealDecision::Needed(SealReason::NoLandlock);
    };
    if abi < TRUNCATE_ABI {
        return SealDecision::Needed(SealReason::TruncateNotHandled { abi });
    }
    if !crate::spec::has_new_ns(spec, LinuxNamespaceType::Pid) {
        return SealDecision::Needed(SealReason::SharedPidNamespace);
    }
    // Only `write` rules carry write-file and truncate (landlock.rs).
    let resolver = view.resolver();
    for rule in &plan.write {
        match resolver.target(rule) {
            Target::Inode(dev, ino) if binary.contains((dev, ino)) => {
                return SealDecision::Needed(SealReason::WriteRuleCoversBinary {
                    rule: rule.clone(),
                })
            }
            Target::Inode(..) | Target::Absent | Target::Fresh => {}
            Target::Unknown(what) => {
                return SealDecision::Needed(SealReason::Undetermined {
                    what: format!("filesystem.write rule {}: {what}", rule.display()),
                })
            }
        }
    }
    SealDecision::NotNeeded
}

/// A new pid namespace (no path to join): the container's processes see
/// no process outside it.
/// The decision for this process: `Ok` to go on (not needed, or already
/// sealed, or the binary is on a read-only mount), `Err(reason)` when the
/// command must be redone from a sealed copy.
pub fn check(
    plan: Option<&LandlockPlan>,
    abi: Option<u32>,
    spec: &Spec,
    view: &ContainerView<'_>,
) -> Result<(), SealReason> {
    if sealed().is_some() {
        return Ok(());
    }
    let decision = match BinaryInodes::current() {
        Ok(binary) => decide(plan, abi, spec, &binary, view),
        Err(e) => SealDecision::Needed(SealReason::Undetermined {
            what: e.to_string(),
        }),
    };
    match decision {
        SealDecision::NotNeeded => Ok(()),
        SealDecision::Needed(reason) => require(reason),
    }
}

/// Sealing is needed for `reason`: `Ok` if this process already runs from
/// a copy that cannot be written, else `Err(reason)`.
pub fn require(reason: SealReason) -> Result<(), SealReason> {
    if sealed().is_some() {
        return Ok(());
    }
    if matches!(self_exe_sealed(), Ok(Some(Sealed::ReadOnlyMount))) {
        tracing::debug!(target: "cli", "exeseal: {reason}; the binary is on a read-only mount");
        return Ok(());
    }
    tracing::debug!(target: "cli", "exeseal: {reason}; re-executing from a sealed copy");
    Err(reason)
}

/// Redoes the command (same argv, environment and descriptors) from a
/// sealed memfd copy of the binary, with [`MARKER`] set to the original
/// path. Returns only on failure; refuses in a process that is already a
/// sealed copy (no loop).
pub fn reexec(reason: SealReason) -> SealError {
    if sealed().is_some() {
        return SealError::Loop(reason);
    }
    match reexec_inner() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn reexec_inner() -> Result<std::convert::Infallible, SealError> {
    let original = std::fs::read_link("/proc/self/exe").map_err(io("readlink /proc/self/exe"))?;
    let fd = match overlay_open(&original) {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            tracing::debug!(target: "cli", "exeseal: no read-only overlay ({e}); a memfd copy");
            memfd_copy()?
        }
    };
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| cstr(a.as_bytes(), "argument"))
        .collect::<Result<_, _>>()?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != MARKER)
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstr(kv.as_bytes(), "environment")
        })
        .collect::<Result<_, _>>()?;
    let mut marker = OsString::from(MARKER);
    marker.push("=");
    marker.push(original.as_os_str());
    envp.push(cstr(marker.as_bytes(), "binary path")?);
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let empty = cstr(b"", "path")?;
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the
    // call; on success the call does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            empty.as_ptr(),
            argv_p.as_ptr(),
            envp_p.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(last_err("re-execute from the sealed copy"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landlock::NetPlan;
    use libcontainer::oci_spec::runtime::{
        LinuxBuilder, LinuxNamespaceBuilder, Mount, MountBuilder,
    };
    use std::path::Path;

    #[test]
    fn overlay_copy_is_read_only() {
        if !nix::unistd::geteuid().is_root() {
            return; // mounting needs root
        }
        let original = std::fs::read_link("/proc/self/exe").expect("readlink");
        let f = overlay_open(&original).expect("overlay");
        assert_eq!(file_sealed(&f), Some(Sealed::ReadOnlyMount));
        // Through the magic link, as an attacker would: neither a write
        // nor a truncation opens.
        let path = format!("/proc/self/fd/{}", f.as_raw_fd());
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect_err("must not open for writing");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        let err = nix::unistd::truncate(path.as_str(), 0).expect_err("nor truncate");
        assert_eq!(err, nix::errno::Errno::EROFS);
    }

    #[test]
    fn memfd_copy_is_sealed_against_writes() {
        let fd = memfd_copy().expect("memfd copy");
        let f = File::from(fd);
        assert_eq!(file_sealed(&f), Some(Sealed::Memfd));
        // Through the magic link, as an attacker would: the open works, no
        // write does (F_SEAL_WRITE, F_SEAL_GROW).
        let path = format!("/proc/self/fd/{}", f.as_raw_fd());
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open for writing");
        use std::os::unix::fs::FileExt;
        let err = w
            .write_at(b"\x7f", 0)
            .expect_err("a sealed memfd must not be written");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        let err = w.set_len(1).expect_err("nor truncated");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    }

    fn plan(write: &[&str]) -> LandlockPlan {
        LandlockPlan {
            read: vec![PathBuf::from("/")],
            write: write.iter().map(PathBuf::from).collect(),
            exec: vec![PathBuf::from("/")],
            exec_names: vec![],
            path_var: String::new(),
            net: NetPlan::Unrestricted,
            filesystem: true,
            required: false,
        }
    }

    fn spec(pid_ns_path: Option<&str>) -> Spec {
        let mut ns = LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Pid)
            .build()
            .expect("namespace");
        ns.set_path(pid_ns_path.map(PathBuf::from));
        let mut s = Spec::default();
        s.set_linux(Some(
            LinuxBuilder::default()
                .namespaces(vec![ns])
                .build()
                .expect("linux"),
        ));
        s
    }

    fn bind(src: &Path, dst: &str) -> Mount {
        MountBuilder::default()
            .destination(dst)
            .typ("bind")
            .source(src)
            .options(vec!["rbind".to_string(), "ro".to_string()])
            .build()
            .expect("mount")
    }

    fn tmpfs(dst: &str) -> Mount {
        MountBuilder::default()
            .destination(dst)
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .expect("mount")
    }

    /// A host directory with the "binary" in `rt/bin/`, and a rootfs.
    struct Fixture {
        _dir: tempfile::TempDir,
        rootfs: PathBuf,
        rt: PathBuf,
        data: PathBuf,
        binary: BinaryInodes,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        let rt = dir.path().join("rt");
        let data = dir.path().join("data");
        for d in [
            rootfs.join("opt/rt"),
            rootfs.join("tmp"),
            rootfs.join("data"),
            rt.join("bin"),
            data.clone(),
        ] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(rt.join("bin/buntime-runc"), b"\x7fELF").expect("binary");
        std::os::unix::fs::symlink("opt", rootfs.join("link")).expect("symlink");
        let binary = BinaryInodes::at(&rt.join("bin/buntime-runc")).expect("inodes");
        Fixture {
            _dir: dir,
            rootfs,
            rt,
            data,
            binary,
        }
    }

    fn decide_planned(
        f: &Fixture,
        p: Option<&LandlockPlan>,
        abi: u32,
        m: &[Mount],
    ) -> SealDecision {
        let view = ContainerView::Planned {
            rootfs: &f.rootfs,
            mounts: m,
        };
        decide(p, Some(abi), &spec(None), &f.binary, &view)
    }

    #[test]
    fn no_landlock_means_sealing() {
        let f = fixture();
        let view = ContainerView::Planned {
            rootfs: &f.rootfs,
            mounts: &[],
        };
        let p = plan(&["/tmp"]);
        assert_eq!(
            decide(None, Some(6), &spec(None), &f.binary, &view),
            SealDecision::Needed(SealReason::NoLandlock)
        );
        assert_eq!(
            decide(Some(&p), None, &spec(None), &f.binary, &view),
            SealDecision::Needed(SealReason::NoLandlock)
        );
        assert_eq!(
            decide(Some(&p), Some(2), &spec(None), &f.binary, &view),
            SealDecision::Needed(SealReason::TruncateNotHandled { abi: 2 })
        );
    }

    #[test]
    fn a_write_rule_over_the_binarys_directory_means_sealing() {
        let f = fixture();
        let mounts = [bind(&f.rt, "/opt/rt"), tmpfs("/tmp")];
        for rule in ["/opt/rt", "/opt/rt/bin", "/opt/rt/bin/buntime-runc"] {
            assert_eq!(
                decide_planned(&f, Some(&plan(&["/tmp", rule])), 6, &mounts),
                SealDecision::Needed(SealReason::WriteRuleCoversBinary { rule: rule.into() }),
                "{rule}"
            );
        }
        // Through a symlink in the destination, as libcontainer mounts it.
        let mounts = [bind(&f.rt, "/link/rt")];
        assert_eq!(
            decide_planned(&f, Some(&plan(&["/opt/rt/bin"])), 6, &mounts),
            SealDecision::Needed(SealReason::WriteRuleCoversBinary {
                rule: "/opt/rt/bin".into()
            })
        );
        // A rootfs that is the binary's directory's parent.
        let view = ContainerView::Planned {
            rootfs: f.rt.parent().expect("parent"),
            mounts: &[],
        };
        assert!(matches!(
            decide(
                Some(&plan(&["/rt"])),
                Some(6),
                &spec(None),
                &f.binary,
                &view
            ),
            SealDecision::Needed(SealReason::WriteRuleCoversBinary { .. })
        ));
    }

    #[test]
    fn write_rules_elsewhere_need_no_sealing() {
        let f = fixture();
        // Grant-everything except writing where the binary is: read and
        // exec of its directory are no write access.
        let mounts = [
            bind(&f.rt, "/opt/rt"),
            bind(&f.data, "/data"),
            tmpfs("/tmp"),
        ];
        let p = plan(&["/", "/tmp", "/data", "/opt", "/missing"]);
        assert_eq!(
            decide_planned(&f, Some(&p), 6, &mounts),
            SealDecision::NotNeeded
        );
        // A later tmpfs hides the bind beneath it.
        let mounts = [bind(&f.rt, "/opt/rt"), tmpfs("/opt")];
        assert_eq!(
            decide_planned(&f, Some(&plan(&["/opt/rt"])), 6, &mounts),
            SealDecision::NotNeeded
        );
        // A symlink on the rule's way: Landlock skips the rule.
        let mounts = [bind(&f.rt, "/opt/rt")];
        assert_eq!(
            decide_planned(&f, Some(&plan(&["/link/rt"])), 6, &mounts),
            SealDecision::NotNeeded
        );
    }

    #[test]
    fn doubt_means_sealing() {
        let f = fixture();
        let disk = MountBuilder::default()
            .destination("/mnt")
            .typ("ext4")
            .source("/dev/vda")
            .build()
            .expect("mount");
        assert!(matches!(
            decide_planned(&f, Some(&plan(&["/mnt/x"])), 6, &[disk]),
            SealDecision::Needed(SealReason::Undetermined { .. })
        ));
        let view = ContainerView::Planned {
            rootfs: &f.rootfs,
            mounts: &[],
        };
        assert_eq!(
            decide(
                Some(&plan(&["/tmp"])),
                Some(6),
                &spec(Some("/proc/1/ns/pid")),
                &f.binary,
                &view
            ),
            SealDecision::Needed(SealReason::SharedPidNamespace)
        );
    }

    #[test]
    fn running_view_crosses_the_containers_mounts() {
        // A "container" whose root is the rootfs, looked up as `exec` does.
        let f = fixture();
        let root = File::open(&f.rootfs).expect("root");
        let view = ContainerView::Running { root: &root };
        assert_eq!(
            decide(
                Some(&plan(&["/", "/tmp"])),
                Some(6),
                &spec(None),
                &f.binary,
                &view
            ),
            SealDecision::NotNeeded
        );
        let host_root = File::open("/").expect("/");
        let view = ContainerView::Running { root: &host_root };
        let rt = f.rt.to_string_lossy().into_owned();
        assert!(matches!(
            decide(Some(&plan(&[&rt])), Some(6), &spec(None), &f.binary, &view),
            SealDecision::Needed(SealReason::WriteRuleCoversBinary { .. })
        ));
    }
}
