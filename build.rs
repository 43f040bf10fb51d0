//! Link options for one binary only (cargo has no per-binary profile).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = "buntime-supervisor";

fn main() {
    // buntime-supervisor, one per sandbox for the sandbox's life: packed
    // relative relocations (DT_RELR, glibc 2.36, binutils 2.38). Its PIE
    // image (kept: it parses what the sandbox sends, and ASLR stays) has
    // ~14 000 relative relocations, 317 KiB of `.rela.dyn` that ld.so reads
    // at every start and that stays mapped; packed they take a few KiB.
    println!("cargo:rustc-link-arg-bin={BIN}=-Wl,-z,pack-relative-relocs");
    static_pie();
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BUNTIME_SUPERVISOR_DYNAMIC");
}

/// The static libraries the supervisor's link names (`-lc`, libseccomp's
/// `-lseccomp`, std's `-lgcc_s` and the rest), found where the C compiler
/// finds them.
const ARCHIVES: &[&str] = &["c", "seccomp", "util", "rt", "pthread", "m", "dl"];

/// Links buntime-supervisor static-pie: no ld.so and no shared libc mapped
/// in each of the hundreds of supervisors, only the part of libc it calls
/// (docs/performance.md, "The supervisor's own binary"); still a PIE, so
/// ASLR stays. `-C target-feature=+crt-static` would do it, but rustflags
/// apply to every binary, and the runtimes stay dynamic. So: `-static-pie`
/// for this binary, and a directory searched first (`-L` applies to every
/// `-l`) in which each library rustc names is its static archive, and
/// `gcc_s` (std's unwinder) is libgcc_eh + libgcc, as crt-static links.
/// The supervisor resolves host names (getaddrinfo): glibc ≥ 2.34 has its
/// `files` and `dns` NSS modules built in, static too; any other module in
/// nsswitch.conf is loaded from the host's glibc, the same one (the binary
/// is built where it runs, as the runtime is).
///
/// Without an archive (or with BUNTIME_SUPERVISOR_DYNAMIC set) the binary
/// stays dynamic, with a warning.
fn static_pie() {
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    // The archives are found with the host's compiler: not for another target.
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    if !linux_gnu || !native || std::env::var_os("BUNTIME_SUPERVISOR_DYNAMIC").is_some() {
        return;
    }
    println!("cargo:rerun-if-env-changed=CC");
    // Before 2.34 even glibc's `files` and `dns` lookups are modules loaded
    // at run time, which a static binary may only load from the very glibc
    // it was linked with.
    if let Err(e) = glibc_has_builtin_nss() {
        println!("cargo:warning={BIN} stays dynamic: {e}");
        return;
    }
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    match archive_dir(&out.join("static-libs")) {
        Ok(dir) => {
            println!("cargo:rustc-link-arg-bin={BIN}=-static-pie");
            println!("cargo:rustc-link-arg-bin={BIN}=-L{}", dir.display());
        }
        Err(e) => println!("cargo:warning={BIN} stays dynamic: {e}"),
    }
}

/// Makes `dir` with `libX.a` for each of ARCHIVES (symlinks) and a
/// `libgcc_s.a` linker script naming libgcc_eh and libgcc.
fn archive_dir(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for name in ARCHIVES.iter().chain(&["gcc_eh", "gcc"]) {
        let file = format!("lib{name}.a");
        let found = find_archive(&file)?;
        println!("cargo:rerun-if-changed={}", found.display());
        let link = dir.join(&file);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&found, &link)
            .map_err(|e| format!("{}: {e}", link.display()))?;
    }
    let script = dir.join("libgcc_s.a");
    std::fs::write(&script, "INPUT(libgcc_eh.a libgcc.a)\n")
        .map_err(|e| format!("{}: {e}", script.display()))?;
    Ok(dir.to_path_buf())
}

/// Where the C compiler (rustc's linker driver) finds `file`.
fn find_archive(file: &str) -> Result<PathBuf, String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg(format!("-print-file-name={file}"))
        .output()
        .map_err(|e| format!("{cc}: {e}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // Not found: cc prints the bare name back.
    if path.is_absolute() && path.is_file() {
        Ok(path)
    } else {
        Err(format!("no {file} (libc6-dev, libseccomp-dev)"))
    }
}

/// glibc ≥ 2.34 (`getconf GNU_LIBC_VERSION`), whose static libc has its
/// `files` and `dns` NSS modules built in.
fn glibc_has_builtin_nss() -> Result<(), String> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .map_err(|e| format!("getconf GNU_LIBC_VERSION: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().strip_prefix("glibc ").unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (2, 34) {
        Ok(())
    } else {
        Err(format!("glibc {version:?} is older than 2.34"))
    }
}
