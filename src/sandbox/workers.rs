//! Finding the worker files that `buntime run` mounts at `/opt/buntime`:
//! `python/`, `bun/`, `lib/libbuntime_ipc.so`, `bin/bun`.
//!
//! Installed (`make install`): `<prefix>/lib/buntime`, next to
//! `<prefix>/bin/buntime`. In the source tree (`target/<profile>/buntime`):
//! staged once into `target/<profile>/buntime-home` from `workers/`, the
//! built library and the project's Bun (`.build/bun`), by hard links or
//! copies, each file replaced atomically so concurrent runs do not see a
//! half-written one. `BUNTIME_HOME` overrides both.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::SandboxError;

/// The directory mounted at `/opt/buntime`.
pub fn home() -> Result<PathBuf, SandboxError> {
    if let Some(h) = std::env::var_os("BUNTIME_HOME") {
        let h = PathBuf::from(h);
        return if h.join("python").is_dir() {
            Ok(h)
        } else {
            Err(SandboxError::Setup(format!(
                "BUNTIME_HOME={}: no python/ worker there",
                h.display()
            )))
        };
    }
    let exe = crate::exeseal::exe_path()
        .and_then(fs::canonicalize)
        .map_err(|e| SandboxError::Setup(format!("find own executable: {e}")))?;
    let exe_dir = exe.parent().unwrap_or(Path::new("/"));
    let installed = exe_dir.join("../lib/buntime");
    if installed.join("python").is_dir() {
        return Ok(installed);
    }
    // target/<profile>/buntime → the repository two levels up.
    if let Some(repo) = exe_dir.parent().and_then(Path::parent) {
        if repo.join("workers/python/buntime_worker").is_dir() {
            let home = exe_dir.join("buntime-home");
            if let Err(e) = stage(repo, exe_dir, &home) {
                // Another user's build tree: use what is staged, if any.
                if !home.join("python").is_dir() {
                    return Err(e);
                }
                tracing::warn!(target: "cli", "worker files in {} not refreshed: {e}", home.display());
            }
            return Ok(home);
        }
    }
    Err(SandboxError::Setup(format!(
        "cannot find buntime's worker files (looked in {} and the source tree); run `make install` or set BUNTIME_HOME",
        installed.display()
    )))
}

fn stage(repo: &Path, exe_dir: &Path, home: &Path) -> Result<(), SandboxError> {
    let python = home.join("python");
    // A hard-linked source edited in place is not "newer" than its staged
    // self (the same file): its bytecode, whose hash is not checked at
    // import, is then compared with it here.
    if sync_tree(&repo.join("workers/python"), &python)? || stale_bytecode(&python) {
        precompile(&python);
    }
    sync_tree(&repo.join("workers/bun"), &home.join("bun"))?;
    let lib = exe_dir.join("libbuntime_ipc.so");
    if lib.is_file() {
        sync_file(&lib, &home.join("lib/libbuntime_ipc.so"))?;
    }
    // The npm package's binary (the .build/bun/bun link points into it).
    if let Ok(bun) = fs::canonicalize(repo.join(".build/bun/bun")) {
        sync_file(&bun, &home.join("bin/bun"))?;
    }
    Ok(())
}

fn io(what: &str, p: &Path, e: std::io::Error) -> SandboxError {
    SandboxError::Setup(format!("{what} {}: {e}", p.display()))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Copies `src` to `dst` unless `dst` is as new; through a temporary name
/// and a rename, so a reader sees the old file or the new one.
fn sync_file(src: &Path, dst: &Path) -> Result<bool, SandboxError> {
    if let (Some(s), Some(d)) = (mtime(src), mtime(dst)) {
        if d >= s {
            return Ok(false);
        }
    }
    let dir = dst.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let tmp = dir.join(format!(
        ".{}.{}",
        dst.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(src, &tmp).is_err() {
        fs::copy(src, &tmp).map_err(|e| io("copy", src, e))?;
    }
    fs::rename(&tmp, dst).map_err(|e| io("rename", dst, e))?;
    Ok(true)
}

/// Bytecode next to the sources: the mount is read-only in the sandbox,
/// where Python would otherwise compile the worker at every start
/// (milliseconds). Best effort.
fn precompile(dir: &Path) {
    let ok = std::process::Command::new(super::kind::DEFAULT_PYTHON)
        .args([
            "-m",
            "compileall",
            "-q",
            "-f",
            "--invalidation-mode",
            "unchecked-hash",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        tracing::debug!(target: "cli", "could not precompile {}", dir.display());
    }
}

/// Whether a `.py` under `dir` is newer than its bytecode, or has none.
fn stale_bytecode(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let cache = dir.join("__pycache__");
    entries.flatten().any(|entry| {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            return name != "__pycache__" && stale_bytecode(&path);
        }
        let Some(stem) = name.strip_suffix(".py") else {
            return false;
        };
        let prefix = format!("{stem}.");
        let newest = fs::read_dir(&cache).ok().and_then(|c| {
            c.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .filter_map(|e| mtime(&e.path()))
                .max()
        });
        match (mtime(&path), newest) {
            (Some(src), Some(pyc)) => src > pyc,
            _ => true,
        }
    })
}

/// Returns whether anything was copied.
fn sync_tree(src: &Path, dst: &Path) -> Result<bool, SandboxError> {
    let mut changed = false;
    let entries = fs::read_dir(src).map_err(|e| io("read", src, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name_s = name.to_string_lossy();
        if name_s.starts_with('.') || name_s == "__pycache__" || name_s == "tests" {
            continue;
        }
        let path = entry.path();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            changed |= sync_tree(&path, &dst.join(&name))?;
        } else if ft.is_file() {
            changed |= sync_file(&path, &dst.join(&name))?;
        }
    }
    Ok(changed)
}
