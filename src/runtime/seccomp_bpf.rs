//! Seccomp profiles compiled once, loaded as BPF.
//!
//! libcontainer compiles a container's seccomp profile with libseccomp in
//! the container's init, at every start: about 3.5 ms of a 25 ms start here
//! for the default policy's 350 rules. `create` compiles it instead, once
//! per distinct profile (a cache keyed by the profile's SHA-256 and the
//! libseccomp version, under the runtime's root), stores the program in
//! the container's state directory, and our executor loads it with
//! seccomp(2) right before exec, for init and exec'd processes alike.
//!
//! The translation from the OCI profile to libseccomp follows
//! libcontainer's (`libcontainer::seccomp`), except for masked-equality
//! arguments, read as runc reads them (the profile is in the OCI order). Profiles with `SCMP_ACT_NOTIFY`
//! (whose listener fd libcontainer hands to the seccomp agent) are left to
//! libcontainer.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use sha2::{Digest, Sha256};

use super::error::{Result, RuntimeError};

/// The file's first bytes, and the format's version.
const MAGIC: &[u8; 8] = b"BTSCMP01";
/// The kernel's limit for one classic BPF program.
const MAX_INSNS: usize = 4096;
const INSN: usize = std::mem::size_of::<libc::sock_filter>();

// seccomp(2) filter flags (linux/seccomp.h).
const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;

/// A compiled filter: the seccomp(2) flags and the BPF instructions.
#[derive(Debug, Clone)]
pub struct Program {
    pub flags: u32,
    insns: Vec<libc::sock_filter>,
}

fn invalid(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid(msg.into())
}

/// Can this profile be compiled ahead (no notify action)?
pub fn precompilable(profile: &LinuxSeccomp) -> bool {
    profile.default_action() != LinuxSeccompAction::ScmpActNotify
        && !libcontainer::seccomp::is_notify(profile)
}

impl Program {
    /// Compiles `profile` with libseccomp, as libcontainer would.
    pub fn compile(profile: &LinuxSeccomp) -> Result<Program> {
        let err = |what: &str, e: libseccomp::error::SeccompError| {
            invalid(format!("linux.seccomp: {what}: {e}"))
        };
        let default = action(profile.default_action(), profile.default_errno_ret())?;
        let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("defaultAction", e))?;
        let mut flags = 0;
        for f in profile.flags().iter().flatten() {
            flags |= match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
                // Only meaningful (and only accepted by the kernel) with a
                // notify listener, which a precompiled profile never has;
                // libseccomp drops it likewise.
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
            };
        }
        for &a in profile.architectures().iter().flatten() {
            ctx.add_arch(arch(a))
                .map_err(|e| err(&format!("architecture {a:?}"), e))?;
        }
        for entry in profile.syscalls().iter().flatten() {
            let act = action(entry.action(), entry.errno_ret())?;
            if act == default {
                // Redundant, and libseccomp refuses it.
                continue;
            }
            for name in entry.names() {
                // A name this libseccomp does not know is a syscall the
                // kernel cannot have either (libcontainer skips it too).
                let Ok(sc) = ScmpSyscall::from_name(name) else {
                    continue;
                };
                let Some(args) = entry.args() else {
                    ctx.add_rule(act, sc)
                        .map_err(|e| err(&format!("syscall {name}"), e))?;
                    continue;
                };
                let cmps: Vec<ScmpArgCompare> = args
                    .iter()
                    .map(|a| {
                        let (op, datum) = op(a.op(), a.value(), a.value_two());
                        ScmpArgCompare::new(a.index() as u32, op, datum)
                    })
                    .collect();
                let mut seen = HashSet::new();
                if args.iter().all(|a| seen.insert(a.index())) {
                    ctx.add_rule_conditional(act, sc, &cmps)
                        .map_err(|e| err(&format!("syscall {name}"), e))?;
                } else {
                    // One argument compared twice: a rule per comparison
                    // (libseccomp takes one per argument), as runc does.
                    for c in &cmps {
                        ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                            .map_err(|e| err(&format!("syscall {name}"), e))?;
                    }
                }
            }
        }
        let mut out = memfd()?;
        ctx.export_bpf(&out).map_err(|e| err("export", e))?;
        let mut bytes = Vec::new();
        out.rewind()
            .and_then(|()| out.read_to_end(&mut bytes))
            .map_err(|e| RuntimeError::io("read compiled seccomp filter", e))?;
        Program::from_insn_bytes(flags, &bytes)
    }

    fn from_insn_bytes(flags: u32, bytes: &[u8]) -> Result<Program> {
        if bytes.is_empty() || bytes.len() % INSN != 0 || bytes.len() / INSN > MAX_INSNS {
            return Err(invalid(format!(
                "seccomp program of {} bytes is not 1 to {MAX_INSNS} instructions",
                bytes.len()
            )));
        }
        let insns = bytes
            .chunks_exact(INSN)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Ok(Program { flags, insns })
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + self.insns.len() * INSN);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.flags.to_ne_bytes());
        b.extend_from_slice(&(self.insns.len() as u32).to_ne_bytes());
        for i in &self.insns {
            b.extend_from_slice(&i.code.to_ne_bytes());
            b.push(i.jt);
            b.push(i.jf);
            b.extend_from_slice(&i.k.to_ne_bytes());
        }
        b
    }

    fn from_bytes(b: &[u8]) -> Result<Program> {
        let bad = || invalid("seccomp program file is corrupt");
        let rest = b.strip_prefix(MAGIC.as_slice()).ok_or_else(bad)?;
        let (flags, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let (n, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        if u32::from_ne_bytes(*n) as usize * INSN != rest.len() {
            return Err(bad());
        }
        Program::from_insn_bytes(u32::from_ne_bytes(*flags), rest)
    }

    /// Writes the program to `path` (whole, or not at all).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&self.to_bytes()))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(RuntimeError::io(format!("write {}", path.display()), e));
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Program> {
        let b =
            fs::read(path).map_err(|e| RuntimeError::io(format!("read {}", path.display()), e))?;
        Program::from_bytes(&b)
    }

    /// The program for `profile`: from the cache in `cache_dir`, or
    /// compiled and put there (a cache that cannot be written only costs
    /// the compile). It is stored at `dest` as well: as a hard link to the
    /// cache entry where possible (entries are replaced by rename, never
    /// rewritten, so the link keeps its program; and a link costs no new
    /// inode, which on ext4 is a tenth of a millisecond of every create),
    /// else as a copy.
    pub fn cached_at(cache_dir: &Path, profile: &LinuxSeccomp, dest: &Path) -> Result<Program> {
        let key = cache_key(profile)?;
        let entry = cache_dir.join(format!("{key}.bpf"));
        let (p, entry_holds_it) = Self::cached_as(&entry, cache_dir, profile)?;
        // Only an entry known to hold this program is linked (one that
        // failed to load and could not be replaced is not).
        if !entry_holds_it || fs::hard_link(&entry, dest).is_err() {
            p.save(dest)?;
        }
        Ok(p)
    }

    /// The program, and whether the file at `path` now holds it.
    fn cached_as(path: &Path, cache_dir: &Path, profile: &LinuxSeccomp) -> Result<(Program, bool)> {
        if let Ok(p) = Program::load(path) {
            return Ok((p, true));
        }
        let p = Program::compile(profile)?;
        let made = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cache_dir);
        let mut saved = false;
        if made.is_ok() {
            prune(cache_dir);
            match p.save(path) {
                Ok(()) => saved = true,
                Err(e) => tracing::debug!(target: "cli", "seccomp cache: {e}"),
            }
        }
        Ok((p, saved))
    }

    /// Installs the filter on the calling thread (and, with TSYNC, its
    /// process). Needs no_new_privs or CAP_SYS_ADMIN: the caller's job.
    pub fn install(&self) -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.insns.len() as u16,
            filter: self.insns.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at our instructions for the duration of the
        // call; the kernel copies them.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if r > 0 {
            // With TSYNC: the id of a thread that could not be synchronized.
            return Err(std::io::Error::other(format!(
                "thread {r} could not take the seccomp filter"
            )));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }
}

/// The cache directory under a runtime root's state directory.
pub fn cache_dir(extra_root: &Path) -> PathBuf {
    extra_root.join(".seccomp-cache")
}

/// How many programs the cache keeps: a host runs a handful of distinct
/// profiles (one per network mode, an engine's default); bundles with
/// profiles of their own must not grow it without bound.
const CACHE_MAX: usize = 64;

/// Makes room for one more entry: the oldest go first.
fn prune(cache_dir: &Path) {
    let Ok(rd) = fs::read_dir(cache_dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if entries.len() < CACHE_MAX {
        return;
    }
    entries.sort();
    for (_, p) in entries.iter().take(entries.len() + 1 - CACHE_MAX) {
        let _ = fs::remove_file(p);
    }
}

/// Changes whenever the translation below changes meaning, so that a new
/// buntime never takes an older one's programs.
const TRANSLATION: &str = "oci-runc-order-1";

fn cache_key(profile: &LinuxSeccomp) -> Result<String> {
    let json =
        serde_json::to_vec(profile).map_err(|e| invalid(format!("encode seccomp profile: {e}")))?;
    let v = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(MAGIC);
    h.update(TRANSLATION.as_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(std::env::consts::ARCH.as_bytes());
    h.update(v.as_bytes());
    h.update([0]);
    h.update(&json);
    Ok(h.finalize()
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn memfd() -> Result<File> {
    // SAFETY: memfd_create with a static name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"buntime-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(RuntimeError::io(
            "memfd for seccomp export",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno)
                .map_err(|_| invalid(format!("linux.seccomp: trace value {errno}")))?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(invalid(
                "linux.seccomp: SCMP_ACT_NOTIFY cannot be precompiled",
            ))
        }
    })
}

/// The comparison and its datum. `SCMP_CMP_MASKED_EQ` as runc reads it
/// (and Docker's profiles and ours write it): `value` is the mask,
/// `valueTwo` the datum (libcontainer 0.7 reads them the other way round;
/// see `bundle::to_libcontainer_seccomp_order`).
fn op(o: LinuxSeccompOperator, value: u64, two: Option<u64>) -> (ScmpCompareOp, u64) {
    let op = match o {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return (ScmpCompareOp::MaskedEqual(value), two.unwrap_or(0))
        }
    };
    (op, value)
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NetMode;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_default_profile_compiles_saves_and_loads() {
        let profile = crate::spec::default_seccomp(NetMode::None);
        assert!(precompilable(&profile));
        let p = Program::compile(&profile).unwrap();
        assert!(p.len() > 100 && p.len() <= MAX_INSNS, "{} insns", p.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bpf");
        p.save(&path).unwrap();
        let back = Program::load(&path).unwrap();
        assert_eq!(back.to_bytes(), p.to_bytes());
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn corrupt_program_files_are_refused() {
        let p = Program::compile(&crate::spec::default_seccomp(NetMode::None)).unwrap();
        let good = p.to_bytes();
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            good[..good.len() - 3].to_vec(),
            [b"XXXXXXXX".as_slice(), &good[8..]].concat(),
            {
                let mut b = good.clone();
                b[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
                b
            },
            // A header that promises no instructions at all.
            [&good[..12], &0u32.to_ne_bytes()[..]].concat(),
        ];
        for (i, c) in cases.iter().enumerate() {
            assert!(Program::from_bytes(c).is_err(), "case {i} accepted");
        }
    }

    #[test]
    fn a_container_keeps_its_program_when_the_cache_entry_goes() {
        use std::os::unix::fs::MetadataExt;
        let cache = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let none = crate::spec::default_seccomp(NetMode::None);
        let dest = state.path().join("seccomp.bpf");
        let p = Program::cached_at(cache.path(), &none, &dest).unwrap();
        let entry = std::fs::read_dir(cache.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        // Linked, not copied: one inode, two names.
        assert_eq!(
            std::fs::metadata(&entry).unwrap().ino(),
            std::fs::metadata(&dest).unwrap().ino()
        );
        std::fs::remove_file(&entry).unwrap();
        assert_eq!(Program::load(&dest).unwrap().to_bytes(), p.to_bytes());
        // A destination that cannot be linked (it exists) is written over.
        std::fs::write(&dest, b"old").unwrap();
        let again = Program::cached_at(cache.path(), &none, &dest).unwrap();
        assert_eq!(Program::load(&dest).unwrap().to_bytes(), again.to_bytes());
    }

    /// `cached_at` with a throw-away destination.
    fn cached(cache_dir: &Path, profile: &LinuxSeccomp) -> Result<Program> {
        let dest = tempfile::tempdir().unwrap();
        Program::cached_at(cache_dir, profile, &dest.path().join("p.bpf"))
    }

    #[test]
    fn the_cache_keys_on_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let none = crate::spec::default_seccomp(NetMode::None);
        let proxy = crate::spec::default_seccomp(NetMode::Proxy);
        let a = cached(dir.path(), &none).unwrap();
        let b = cached(dir.path(), &proxy).unwrap();
        assert_ne!(a.to_bytes(), b.to_bytes());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // A hit gives the same program.
        let again = cached(dir.path(), &none).unwrap();
        assert_eq!(again.to_bytes(), a.to_bytes());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // A damaged entry is compiled again and replaced.
        let entry = dir
            .path()
            .join(format!("{}.bpf", cache_key(&none).unwrap()));
        std::fs::write(&entry, b"junk").unwrap();
        let fixed = cached(dir.path(), &none).unwrap();
        assert_eq!(fixed.to_bytes(), a.to_bytes());
        assert_eq!(Program::load(&entry).unwrap().to_bytes(), a.to_bytes());
    }

    #[test]
    fn the_cache_keeps_a_bounded_number_of_programs() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..CACHE_MAX + 5 {
            std::fs::write(dir.path().join(format!("{i}.bpf")), b"x").unwrap();
        }
        prune(dir.path());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            CACHE_MAX - 1
        );
    }

    #[test]
    fn notify_profiles_are_left_to_libcontainer() {
        let mut profile = crate::spec::default_seccomp(NetMode::None);
        let mut calls = profile.syscalls().clone().unwrap();
        calls[0].set_action(LinuxSeccompAction::ScmpActNotify);
        profile.set_syscalls(Some(calls));
        assert!(!precompilable(&profile));
        assert!(Program::compile(&profile).is_err());
    }
}
