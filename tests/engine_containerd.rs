//! containerd with buntime-runc through the runc v2 shim
//! (integration/containerd/): each test starts its own containerd (own
//! config, root, state and socket; the CRI plugin off), imports a busybox
//! image made offline (integration/containerd/make-oci-archive.py), drives it
//! with `ctr … --runc-binary <built buntime-runc> --runc-root <scratch>` in a
//! namespace of its own, and stops everything at the end. Needs root and
//! Debian's containerd (hack/install-deps.sh).

mod engines;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use engines::{Out, RUNC};

const LIMIT: Duration = Duration::from_secs(60);

struct Containerd {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    ns: String,
    image: String,
}

impl Containerd {
    fn start() -> Option<Self> {
        if !engines::available("containerd") || !engines::available("ctr") {
            return None;
        }
        let dir = engines::scratch();
        let d = dir.path();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.monitor.v1.cgroups"]
  no_prometheus = true
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("c.sock").display(),
        );
        fs::write(d.join("config.toml"), config).expect("write config.toml");
        let log = fs::File::create(d.join("containerd.log")).expect("log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Self {
            ns: engines::unique("buntime-test-ctd"),
            image: format!("localhost/{}:1", engines::unique("buntime-test-bb")),
            dir,
            daemon: Some(daemon),
        };
        let up = engines::wait_until(Duration::from_secs(20), || {
            c.dir.path().join("c.sock").exists() && c.ctr(&["version"]).ok()
        });
        assert!(up, "containerd did not start: {}", c.log());
        c.import_image();
        Some(c)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }

    /// ctr's IO fifos (default /run/containerd/fifo) in the scratch dir.
    fn fifo_dir(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    /// `ctr task exec --exec-id EXEC ID CMD…`.
    fn exec(&self, id: &str, exec_id: &str, cmd: &[&str]) -> Out {
        let fifo = self.fifo_dir();
        let mut args = vec![
            "task",
            "exec",
            "--fifo-dir",
            fifo.to_str().unwrap_or_default(),
            "--exec-id",
            exec_id,
            id,
        ];
        args.extend(cmd);
        self.ctr(&args)
    }

    fn ctr(&self, args: &[&str]) -> Out {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.dir.path().join("c.sock"))
            .arg("--namespace")
            .arg(&self.ns)
            .args(args);
        engines::run(&mut c, LIMIT)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.ok(),
            "ctr {args:?} failed ({}): {}\n{}",
            out.code(),
            out.stderr,
            out.stdout
        );
        out.stdout
    }

    fn import_image(&self) {
        let rootfs = engines::busybox_rootfs(&self.dir.path().join("bundle"));
        self.import(&rootfs, &self.image, &["echo", "image-cmd-ran"]);
    }

    /// Imports `rootfs` as `image` with command `cmd` (offline).
    fn import(&self, rootfs: &Path, image: &str, cmd: &[&str]) {
        let tar = self
            .dir
            .path()
            .join(format!("{}.tar", engines::unique("image")));
        let script =
            Path::new(engines::MANIFEST_DIR).join("integration/containerd/make-oci-archive.py");
        let out = engines::run(
            Command::new("python3")
                .arg(script)
                .arg(rootfs)
                .arg(image)
                .arg(&tar)
                .args(cmd),
            LIMIT,
        );
        assert!(out.ok(), "make-oci-archive: {}", out.stderr);
        self.ok(&[
            "image",
            "import",
            "--snapshotter",
            "native",
            tar.to_str().unwrap_or_default(),
        ]);
    }

    /// The python app image (`engines::python_app_rootfs`), its script as
    /// the command.
    fn import_app(&self) -> String {
        let rootfs = engines::python_app_rootfs(&self.dir.path().join("app"));
        let image = format!("localhost/{}:1", engines::unique("buntime-test-app"));
        self.import(&rootfs, &image, &[engines::APP_CMD]);
        image
    }

    /// `ctr run` with buntime-runc: `opts` before the image, `cmd` after the
    /// container id.
    fn run(&self, opts: &[&str], id: &str, cmd: &[&str]) -> Out {
        self.run_image(opts, &self.image, id, cmd)
    }

    /// [`Containerd::run`] of another image.
    fn run_image(&self, opts: &[&str], image: &str, id: &str, cmd: &[&str]) -> Out {
        // The runtime with a node configuration that lets annotations ask
        // for host networking (engines::open_node).
        let etc = self.dir.path().join("etc");
        engines::open_node(&etc);
        let runc = engines::runc_with_node(self.dir.path(), &etc);
        let runc = runc.to_str().unwrap_or_default();
        let mut args: Vec<&str> = vec!["run", "--snapshotter", "native", "--runc-binary", runc];
        let root = self.runc_root();
        let fifo = self.fifo_dir();
        args.extend(["--runc-root", root.to_str().unwrap_or_default()]);
        args.extend(["--fifo-dir", fifo.to_str().unwrap_or_default()]);
        args.extend(opts);
        args.push(image);
        args.push(id);
        args.extend(cmd);
        self.ctr(&args)
    }

    fn task_status(&self, id: &str) -> String {
        let out = self.ctr(&["task", "ls"]);
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("")
            .to_string()
    }

    fn wait_status(&self, id: &str, status: &str) {
        assert!(
            engines::wait_until(Duration::from_secs(10), || self.task_status(id) == status),
            "{id} never became {status}: {}",
            self.task_status(id)
        );
    }

    /// Stops and removes every container of the test's namespace.
    fn remove_all(&self) {
        let ids = self.ctr(&["container", "ls", "--quiet"]).stdout;
        for id in ids.lines().map(str::trim).filter(|s| !s.is_empty()) {
            let _ = self.ctr(&["task", "kill", "--all", "--signal", "SIGKILL", id]);
            let _ = self.ctr(&["task", "delete", "--force", id]);
            let _ = self.ctr(&["container", "delete", id]);
        }
    }

    fn daemon_pid(&self) -> i32 {
        self.daemon.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Asserts the test left no container, shim, mount, runtime state or
    /// container cgroup.
    fn assert_clean(&self) {
        let ids = self.ok(&["container", "ls", "--quiet"]);
        assert!(ids.trim().is_empty(), "containers left: {ids}");
        let scratch = self.dir.path().to_string_lossy().into_owned();
        let daemon = self.daemon_pid();
        let others = || -> Vec<i32> {
            engines::pids_mentioning(&scratch)
                .into_iter()
                .filter(|&p| p != daemon)
                .collect()
        };
        assert!(
            engines::wait_until(Duration::from_secs(10), || others().is_empty()),
            "processes left (shims?): {:?}",
            others()
        );
        let mounts = engines::mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        let state = self.runc_root().join(&self.ns);
        let left: Vec<_> = fs::read_dir(&state)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name())
                    .filter(|n| n != ".buntime")
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "runtime state left: {left:?}");
        for cg in engines::cgroups_left(&self.ns) {
            let children: Vec<_> = fs::read_dir(&cg)
                .map(|r| {
                    r.flatten()
                        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default();
            assert!(children.is_empty(), "cgroups left: {children:?}");
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_all();
        let _ = self.ctr(&["image", "rm", &self.image]);
        if let Some(mut d) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let gone = engines::wait_until(Duration::from_secs(10), || {
                matches!(d.try_wait(), Ok(Some(_)))
            });
            if !gone {
                let _ = d.kill();
            }
            let _ = d.wait();
        }
        let scratch = self.dir.path().to_string_lossy().into_owned();
        engines::kill_mentioning(&scratch);
        engines::wait_until(Duration::from_secs(5), || {
            engines::pids_mentioning(&scratch).is_empty()
        });
        engines::unmount_under(self.dir.path());
        engines::wait_until(Duration::from_secs(5), || {
            engines::remove_cgroup_tree(&self.ns);
            engines::cgroups_left(&self.ns).is_empty()
        });
    }
}

#[test]
fn containerd_run_image_output_exit_code_engine_default() {
    let Some(c) = Containerd::start() else { return };
    let out = c.run(
        &["--rm"],
        "run1",
        &[
            "sh",
            "-c",
            "echo hello-from-buntime; touch /newfile 2>&1 && echo root-writable; \
             cat /proc/net/dev; exit 3",
        ],
    );
    assert_eq!(out.code(), 3, "exit code passes through: {out:?}");
    assert!(out.stdout.contains("hello-from-buntime"), "{out:?}");
    // The engine default: the root is as containerd made it (writable).
    assert!(out.stdout.contains("root-writable"), "{out:?}");
    assert_eq!(engines::interfaces(&out.stdout), ["lo"], "{out:?}");
    // The image's CMD runs.
    let out = c.run(&["--rm"], "run2", &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("image-cmd-ran"), "{out:?}");
    c.assert_clean();
}

#[test]
fn containerd_kubernetes_length_container_id() {
    // CRI (Kubernetes) and podman name containers with 64 hex digits, and
    // the runtime root is deeper than with ctr's defaults: the runtime's
    // own paths (state, sockets) must still fit.
    let Some(c) = Containerd::start() else { return };
    let id = "0123456789abcdef".repeat(4);
    let out = c.run(&["--rm"], &id, &["echo", "long-id-ok"]);
    assert!(
        out.ok() && out.stdout.contains("long-id-ok"),
        "a 64-character id: {out:?}"
    );
    c.assert_clean();
}

#[test]
fn containerd_exec_ps_pause_resume_kill_delete() {
    let Some(c) = Containerd::start() else { return };
    let id = "life";
    let out = c.run(
        &["--detach"],
        id,
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; sleep 1000 & while :; do sleep 0.1; done",
        ],
    );
    assert!(out.ok(), "{out:?}");
    c.wait_status(id, "RUNNING");

    // exec: output and exit code.
    let out = c.exec(id, "e1", &["sh", "-c", "echo in-exec; exit 4"]);
    assert_eq!(out.code(), 4, "{out:?}");
    assert!(out.stdout.contains("in-exec"), "{out:?}");

    // ps: init and its children.
    let ps = c.ok(&["task", "ps", id]);
    let pids = ps.lines().skip(1).filter(|l| !l.trim().is_empty()).count();
    assert!(pids >= 2, "task ps lists the container's processes: {ps}");

    // pause / resume (freezer cgroup).
    c.ok(&["task", "pause", id]);
    c.wait_status(id, "PAUSED");
    c.ok(&["task", "resume", id]);
    c.wait_status(id, "RUNNING");

    // kill: SIGTERM to init, whose trap exits 7.
    c.ok(&["task", "kill", id]);
    c.wait_status(id, "STOPPED");
    let out = c.ctr(&["task", "delete", id]);
    assert!(
        out.stderr.contains("exit code 7") || out.stdout.contains("7"),
        "exit status 7 reported: {out:?}"
    );
    c.ok(&["container", "delete", id]);

    // kill --all: every process of the container, init ignoring SIGTERM.
    let id = "killall";
    let out = c.run(
        &["--detach"],
        id,
        &["sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000 & wait"],
    );
    assert!(out.ok(), "{out:?}");
    c.wait_status(id, "RUNNING");
    c.ok(&["task", "kill", "--all", "--signal", "SIGKILL", id]);
    c.wait_status(id, "STOPPED");
    c.ok(&["task", "delete", id]);
    c.ok(&["container", "delete", id]);
    c.assert_clean();
}

#[test]
fn containerd_failed_create_shows_buntime_error() {
    let Some(c) = Containerd::start() else { return };
    // The runtime's error travels through the shim's log.json into ctr.
    let out = c.run(&["--rm"], "bad1", &["/no/such/program"]);
    assert!(!out.ok(), "{out:?}");
    assert!(
        out.stderr.contains("/no/such/program") && out.stderr.contains("not found"),
        "{}",
        out.stderr
    );
    let out = c.run(
        &[
            "--rm",
            "--annotation",
            "buntime.dev/policy-name=no-such-policy",
        ],
        "bad2",
        &["true"],
    );
    assert!(!out.ok(), "{out:?}");
    assert!(
        out.stderr
            .contains("buntime.dev/policy-name=\"no-such-policy\": no such policy"),
        "buntime's policy error reaches ctr: {}",
        out.stderr
    );
    c.remove_all();
    c.assert_clean();
}

#[test]
fn containerd_policy_annotation_is_honoured() {
    let Some(c) = Containerd::start() else { return };
    // Control: host network and a policy that keeps it.
    let host_policy = format!("buntime.dev/policy={}", engines::HOST_NET_POLICY);
    let out = c.run(
        &["--rm", "--net-host", "--annotation", &host_policy],
        "hostnet",
        &["cat", "/proc/net/dev"],
    );
    assert!(out.ok(), "{out:?}");
    let ifaces = engines::interfaces(&out.stdout);
    assert!(ifaces.iter().any(|i| i != "lo"), "{ifaces:?}");

    // no-network: only lo, no connection, and the state records the policy.
    let id = "nonet";
    let out = c.run(
        &[
            "--detach",
            "--net-host",
            "--annotation",
            "buntime.dev/policy-name=no-network",
        ],
        id,
        &["sleep", "1000"],
    );
    assert!(out.ok(), "{out:?}");
    c.wait_status(id, "RUNNING");
    let out = c.exec(
        id,
        "net",
        &[
            "sh",
            "-c",
            "cat /proc/net/dev; nc -w 2 1.1.1.1 53 </dev/null && echo CONNECTED || echo no-connect",
        ],
    );
    assert!(out.ok(), "{out:?}");
    assert_eq!(engines::interfaces(&out.stdout), ["lo"], "{out:?}");
    assert!(out.stdout.contains("no-connect"), "{out:?}");
    let state = engines::run(
        Command::new(RUNC)
            .arg("--root")
            .arg(c.runc_root().join(&c.ns))
            .args(["state", id]),
        LIMIT,
    );
    assert!(state.ok(), "{state:?}");
    let state: serde_json::Value = serde_json::from_str(&state.stdout).expect("state JSON");
    let ann = &state["annotations"];
    assert_eq!(ann["buntime.dev/policy-name"], "no-network", "{state}");
    assert!(
        ann["buntime.dev/policy-origin"]
            .as_str()
            .unwrap_or_default()
            .contains("no-network"),
        "{state}"
    );
    c.ok(&["task", "kill", "--signal", "SIGKILL", id]);
    c.wait_status(id, "STOPPED");
    c.ok(&["task", "delete", id]);
    c.ok(&["container", "delete", id]);
    c.assert_clean();
}

#[test]
fn containerd_config_snippet_declares_the_runtime() {
    if !engines::available("containerd") {
        return;
    }
    let dir = engines::scratch();
    let snippet = fs::read_to_string(
        Path::new(engines::MANIFEST_DIR).join("integration/containerd/config.toml"),
    )
    .expect("integration/containerd/config.toml");
    let config = format!(
        "root = \"{}\"\nstate = \"{}\"\n{snippet}",
        dir.path().join("root").display(),
        dir.path().join("state").display()
    );
    let path = dir.path().join("config.toml");
    fs::write(&path, config).expect("write");
    let out = engines::run(
        Command::new("containerd")
            .arg("--config")
            .arg(&path)
            .args(["config", "dump"]),
        LIMIT,
    );
    assert!(out.ok(), "containerd rejects the snippet: {out:?}");
    let dump = out.stdout;
    for want in [
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.buntime]",
        "runtime_type = \"io.containerd.runc.v2\"",
        "BinaryName = \"/usr/local/bin/buntime-runc\"",
        "Root = \"/run/buntime-runc/containerd\"",
        "\"buntime.dev/*\"",
    ] {
        assert!(dump.contains(want), "config dump lacks {want}:\n{dump}");
    }
}

// Real images under the engine default (no annotation, no node default
// file: the built-in policies/engine.json).

#[test]
fn containerd_engine_default_runs_a_python_app_a_setuid_server_a_chown_and_secrets() {
    let Some(c) = Containerd::start() else { return };
    let image = c.import_app();

    // (a) The app in /app, started by its script, reads its data.
    let out = c.run_image(&["--rm"], &image, "app", &[]);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout.contains("python-app-ok hello-from-app /app 3"),
        "{out:?}"
    );

    // Secrets an engine mounts read-only stay readable by the app.
    let token = c.dir.path().join("token");
    fs::write(&token, "s3cret-token\n").expect("token");
    let token_mount = format!(
        "type=bind,src={},dst=/var/run/secrets/kubernetes.io/serviceaccount/token,options=rbind:ro",
        token.display()
    );
    let out = c.run_image(
        &["--rm", "--mount", &token_mount],
        &image,
        "secret",
        &[
            "sh",
            "-c",
            "cat /var/run/secrets/kubernetes.io/serviceaccount/token; \
             echo x >> /var/run/secrets/kubernetes.io/serviceaccount/token || echo not-writable",
        ],
    );
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("s3cret-token"), "{out:?}");
    assert!(out.stdout.contains("not-writable"), "{out:?}");

    // (c) The entrypoint chowns its volume; the host sees the new owner.
    let vol = c.dir.path().join("vol");
    fs::create_dir_all(vol.join("sub")).expect("vol");
    fs::write(vol.join("sub/f"), "x").expect("vol file");
    let vol_mount = format!("type=bind,src={},dst=/data,options=rbind:rw", vol.display());
    let out = c.run_image(
        &["--rm", "--mount", &vol_mount],
        &image,
        "chown",
        &["sh", "-c", "chown -R 1234:2345 /data && echo chowned"],
    );
    assert!(out.ok() && out.stdout.contains("chowned"), "{out:?}");
    assert_eq!(engines::owner(&vol), (1234, 2345));
    assert_eq!(engines::owner(&vol.join("sub/f")), (1234, 2345));

    // (b) A server binds port 80 as root, then drops to uid/gid 1000
    // (setgid/setuid); reached from an exec inside.
    let id = "httpd";
    let out = c.run_image(
        &["--detach"],
        &image,
        id,
        &["httpd", "-f", "-p", "80", "-u", "1000:1000", "-h", "/www"],
    );
    assert!(out.ok(), "{out:?}");
    c.wait_status(id, "RUNNING");
    let mut n = 0;
    let mut last = String::new();
    let served = engines::wait_until(Duration::from_secs(20), || {
        n += 1;
        let out = c.exec(
            id,
            &format!("get{n}"),
            &["wget", "-q", "-O", "-", "http://127.0.0.1:80/index.html"],
        );
        last = format!("{out:?}");
        out.ok() && out.stdout.contains("served-by-httpd")
    });
    assert!(served, "{last}");
    let out = c.exec(
        id,
        "ids",
        &[
            "sh",
            "-c",
            "grep -E '^(Uid|Gid):' /proc/$(pidof httpd)/status",
        ],
    );
    assert!(out.ok(), "{out:?}");
    for line in out.stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert_eq!(fields, ["1000"; 4], "httpd runs as 1000: {out:?}");
    }
    c.ok(&["task", "kill", "--signal", "SIGKILL", id]);
    c.wait_status(id, "STOPPED");
    c.ok(&["task", "delete", id]);
    c.ok(&["container", "delete", id]);
    c.assert_clean();
}

#[test]
fn containerd_long_running_service_outlives_a_timeout_only_when_the_policy_has_one() {
    let Some(c) = Containerd::start() else { return };
    let service = ["sh", "-c", "echo up; while :; do sleep 1; done"];
    let annotation = format!("buntime.dev/policy={}", engines::timeout_policy("3s"));
    let out = c.run(
        &["--detach", "--annotation", &annotation],
        "limited",
        &service,
    );
    assert!(out.ok(), "{out:?}");
    let out = c.run(&["--detach"], "free", &service);
    assert!(out.ok(), "{out:?}");
    assert!(
        engines::wait_until(Duration::from_secs(30), || c.task_status("limited")
            == "STOPPED"),
        "the 3s policy never killed it: {}",
        c.task_status("limited")
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(c.task_status("free"), "RUNNING");
    // The policy it runs under is the built-in engine default, which has
    // no wall-clock limit at all (not merely a long one).
    let state = engines::run(
        Command::new(RUNC)
            .arg("--root")
            .arg(c.runc_root().join(&c.ns))
            .args(["state", "free"]),
        LIMIT,
    );
    let state: serde_json::Value = serde_json::from_str(&state.stdout).expect("state JSON");
    assert_eq!(
        state["annotations"]["buntime.dev/policy-origin"], "built-in default",
        "{state}"
    );
    let applied = fs::read_to_string(c.runc_root().join(&c.ns).join(".buntime/free/policy.json"))
        .expect("policy.json");
    let applied: serde_json::Value = serde_json::from_str(&applied).expect("policy JSON");
    assert!(applied["resources"].get("timeout").is_none(), "{applied}");
    assert_eq!(applied["network"]["mode"], "pod", "{applied}");
    for id in ["limited", "free"] {
        let _ = c.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
        c.wait_status(id, "STOPPED");
        c.ok(&["task", "delete", id]);
        c.ok(&["container", "delete", id]);
    }
    c.assert_clean();
}
