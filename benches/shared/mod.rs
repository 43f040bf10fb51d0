//! Pieces several benches use (each bench is its own crate).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A busybox bundle in `dir/bundle` whose process is `/bin/true`
/// (hack/make-bundle.sh).
pub fn make_bundle(dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/make-bundle.sh");
    let ok = Command::new("bash")
        .arg(script)
        .arg(&bundle)
        .arg("/bin/true")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "make-bundle.sh failed");
    bundle
}
