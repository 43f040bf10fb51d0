//! A private podman for a test: its own storage, run root, containers.conf
//! naming buntime-runc (through a node configuration of the test's own),
//! cgroup parent and busybox rootfs; everything removed on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::Out;

pub const LIMIT: Duration = Duration::from_secs(90);

/// Rlimits within this host's hard limits (podman asks for more otherwise).
pub const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
];

pub struct Podman {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub cgroup_parent: String,
    pub rootfs: PathBuf,
}

impl Podman {
    /// None when podman is missing. `node` writes the node configuration
    /// (`BUNTIME_ETC`) the runtime gets, e.g. [`super::open_node`].
    pub fn new(node: impl FnOnce(&Path)) -> Option<Self> {
        if !super::available("podman") {
            return None;
        }
        let dir = super::scratch();
        let snippet = fs::read_to_string(
            Path::new(super::MANIFEST_DIR).join("integration/podman/containers.conf"),
        )
        .expect("integration/podman/containers.conf");
        assert!(snippet.contains("\"/usr/local/bin/buntime-runc\""));
        let etc = dir.path().join("etc");
        fs::create_dir_all(&etc).expect("etc");
        node(&etc);
        let runc = super::runc_with_node(dir.path(), &etc);
        let conf = dir.path().join("containers.conf");
        fs::write(
            &conf,
            snippet.replace("/usr/local/bin/buntime-runc", &runc.to_string_lossy()),
        )
        .expect("write containers.conf");
        // The test's own storage.conf: the host's is not read.
        fs::write(
            dir.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                dir.path().join("storage").display(),
                dir.path().join("run").display()
            ),
        )
        .expect("write storage.conf");
        let rootfs = super::busybox_rootfs(&dir.path().join("bundle"));
        let cgroup_parent = format!("/{}", super::unique("buntime-test-podman"));
        Some(Self {
            dir,
            conf,
            cgroup_parent,
            rootfs,
        })
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .arg("--root")
            .arg(self.path("storage"))
            .arg("--runroot")
            .arg(self.path("run"))
            .arg("--tmpdir")
            .arg(self.path("libpod-tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--runtime",
                "buntime",
            ]);
        c
    }

    pub fn podman(&self, args: &[&str]) -> Out {
        super::run(self.cmd().args(args), LIMIT)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.ok(),
            "podman {args:?} failed ({}): {}\n{}",
            out.code(),
            out.stderr,
            out.stdout
        );
        out.stdout
    }

    /// `podman run` (with the test's cgroup parent and rlimits) + `args`.
    pub fn run(&self, args: &[&str]) -> Out {
        let mut c = self.cmd();
        c.arg("run")
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(ULIMITS)
            .args(args);
        super::run(&mut c, LIMIT)
    }

    pub fn rootfs(&self) -> &str {
        self.rootfs.to_str().expect("utf-8 path")
    }

    /// Imports the busybox rootfs as `localhost/NAME:1` (offline: a tarball).
    pub fn import_image(&self, name: &str) -> String {
        self.import_rootfs(&self.rootfs, name, &["CMD [\"sh\"]"])
    }

    /// Imports `rootfs` as `localhost/NAME:1` with Dockerfile `changes`
    /// (`CMD [...]`, `WORKDIR /app`, ...).
    pub fn import_rootfs(&self, rootfs: &Path, name: &str, changes: &[&str]) -> String {
        let tar = self.path(&format!("{name}.tar"));
        super::tar_rootfs(rootfs, &tar);
        let image = format!("localhost/{name}:1");
        let mut args = vec!["import"];
        for c in changes {
            args.extend(["--change", c]);
        }
        args.extend([tar.to_str().unwrap_or_default(), &image]);
        self.ok(&args);
        image
    }

    /// The python app image (`engines::python_app_rootfs`), its script as
    /// the command.
    pub fn import_app(&self) -> String {
        let rootfs = super::python_app_rootfs(&self.path("app"));
        let cmd = format!("CMD [\"{}\"]", super::APP_CMD);
        self.import_rootfs(&rootfs, &super::unique("buntime-test-app"), &[&cmd])
    }

    /// `podman inspect --format FORMAT NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name])
            .trim()
            .to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = super::run(
            self.cmd().args(["rm", "--all", "--force", "--time", "0"]),
            LIMIT,
        );
        let _ = super::run(self.cmd().args(["rmi", "--all", "--force"]), LIMIT);
        let scratch = self.dir.path().to_string_lossy().into_owned();
        super::kill_mentioning(&scratch);
        // conmon may still be exiting: its cgroup is busy until it is gone.
        super::wait_until(Duration::from_secs(5), || {
            super::pids_mentioning(&scratch).is_empty()
        });
        super::unmount_under(self.dir.path());
        super::wait_until(Duration::from_secs(5), || {
            super::remove_cgroup_tree(&self.cgroup_parent);
            super::cgroups_left(&self.cgroup_parent).is_empty()
        });
    }
}
