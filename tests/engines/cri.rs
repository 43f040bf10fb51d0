//! A private containerd with its CRI plugin for a test, driven over gRPC
//! the way a kubelet drives it (the `k8s-cri` bindings): its own root,
//! state, socket and streaming server; the `buntime` runtime handler of
//! integration/containerd/config.toml pointing at the built buntime-runc
//! (through a node configuration of the test's own); a CNI bridge network of
//! its own (bridge + host-local + loopback from /usr/lib/cni, its own /24);
//! the pause and busybox images made offline and imported. Pods live under
//! a cgroup parent of the test's own, in the node's cgroup driver
//! ([`Driver`]): a path on a cgroupfs node, a systemd slice (each container
//! a scope) on a node with systemd and pure cgroup v2, the handler's
//! `SystemdCgroup` set to match. Everything is removed on drop.

use std::collections::HashMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::engines::{self as engines, Out};

/// Deadline of a command or a CRI call.
pub const LIMIT: Duration = Duration::from_secs(60);
/// The CRI plugin's namespace in containerd.
pub const NS: &str = "k8s.io";
/// The pod's infrastructure image (`sandbox_image`): busybox sleeping.
pub const PAUSE_IMAGE: &str = "localhost/buntime-test/pause:1";
/// The image the test containers run.
pub const BUSYBOX_IMAGE: &str = "localhost/buntime-test/busybox:1";
/// Where Debian's containernetworking-plugins installs the CNI plugins.
pub const CNI_BIN: &str = "/usr/lib/cni";

/// Pods created by a [`Cri`], for unique names and cgroups.
static POD: AtomicU32 = AtomicU32::new(0);
/// Networks made by this test binary (bridge names, subnets).
static NET: AtomicU32 = AtomicU32::new(0);

/// The node's cgroup driver, the one its kubelet (`cgroupDriver`) and the
/// `buntime` handler (`SystemdCgroup`) agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// Cgroup parents are paths (`/kubepods/besteffort/pod<uid>`); the
    /// runtime makes `<parent>/<container id>`.
    Cgroupfs,
    /// Cgroup parents are slices (`kubepods-besteffort-pod<uid>.slice`); the
    /// runtime asks systemd for a scope `cri-containerd-<id>.scope` in it.
    Systemd,
}

impl Driver {
    /// The driver a kubelet here would use: systemd on a host that runs
    /// systemd on pure cgroup v2 (kubeadm's default there), else cgroupfs.
    pub fn of_host() -> Self {
        if Path::new("/run/systemd/system").is_dir() && engines::pure_cgroup_v2() {
            Driver::Systemd
        } else {
            Driver::Cgroupfs
        }
    }
}

pub struct Cri {
    pub dir: tempfile::TempDir,
    daemon: Option<Child>,
    rt: tokio::runtime::Runtime,
    channel: Channel,
    pub driver: Driver,
    /// The test's cgroup of all its pods, from the hierarchy's root:
    /// `/buntime-test-cri-…` (cgroupfs) or the slice `/buntime_test_cri_….slice`
    /// (systemd; its pods' slices are `buntime_test_cri_…-pod<uid>.slice`).
    pub cgroup_root: String,
    /// The CNI bridge (made by the test, so the bridge plugin does not turn
    /// on the host's IP forwarding as a gateway would).
    pub bridge: String,
    /// The bridge's own address: the host as the pods see it.
    pub host_addr: Ipv4Addr,
}

/// A pod made by [`Cri::run_pod`].
pub struct Pod {
    pub id: String,
    pub config: cri::PodSandboxConfig,
}

impl Cri {
    /// None when the engine tests are skipped (engines::available). `node`
    /// writes the node configuration (`BUNTIME_ETC`) buntime-runc gets.
    pub fn start(node: impl FnOnce(&Path)) -> Option<Self> {
        if !engines::available("containerd")
            || !engines::available("ctr")
            || !engines::available("ip")
        {
            return None;
        }
        for plugin in ["bridge", "host-local", "loopback"] {
            assert!(
                Path::new(CNI_BIN).join(plugin).is_file(),
                "{CNI_BIN}/{plugin} missing: run hack/install-deps.sh \
                 (containernetworking-plugins) or set BUNTIME_SKIP_ENGINE_TESTS=1"
            );
        }
        let dir = engines::scratch();
        let d = dir.path().to_path_buf();
        let etc = d.join("etc");
        fs::create_dir_all(&etc).expect("etc");
        node(&etc);
        let runc = engines::runc_with_node(&d, &etc);

        let (bridge, subnet) = make_bridge();
        let host_addr = Ipv4Addr::new(10, 213, subnet, 1);
        write_cni_config(&d, &bridge, subnet);
        let driver = Driver::of_host();
        // The node guest (`make test-node`) is there to test the systemd driver.
        assert!(
            driver == Driver::Systemd || std::env::var_os("BUNTIME_NODE_TEST").is_none(),
            "the node guest must have systemd and pure cgroup v2"
        );
        fs::write(d.join("config.toml"), containerd_config(&d, &runc, driver))
            .expect("config.toml");

        let log = fs::File::create(d.join("containerd.log")).expect("log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sock = d.join("c.sock");
        // The socket's file exists from its bind, before its listen: a
        // connect in between is refused, so connecting is what is retried.
        let mut channel = None;
        engines::wait_until(LIMIT, || {
            channel = sock
                .exists()
                .then(|| rt.block_on(connect(sock.clone())).ok())
                .flatten();
            channel.is_some()
        });
        let Some(channel) = channel else {
            // Drop what was made so far before failing.
            let mut daemon = daemon;
            let _ = daemon.kill();
            let _ = daemon.wait();
            delete_bridge(&bridge);
            panic!(
                "containerd did not start: {}",
                fs::read_to_string(d.join("containerd.log")).unwrap_or_default()
            );
        };
        let c = Self {
            dir,
            daemon: Some(daemon),
            rt,
            channel,
            driver,
            cgroup_root: match driver {
                Driver::Cgroupfs => format!("/{}", engines::unique("buntime-test-cri")),
                // A slice at the top: a `-` in its name would nest it.
                Driver::Systemd => format!(
                    "/{}.slice",
                    engines::unique("buntime_test_cri").replace('-', "_")
                ),
            },
            bridge,
            host_addr,
        };
        c.wait_ready();
        c.import_images();
        Some(c)
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.path("containerd.log")).unwrap_or_default()
    }

    /// buntime-runc's state directory for the CRI namespace (the shim's
    /// `Root` option plus the namespace).
    pub fn runc_root(&self) -> PathBuf {
        self.path("runc").join(NS)
    }

    /// `buntime-runc state ID` under the handler's root.
    pub fn runc_state(&self, id: &str) -> serde_json::Value {
        let out = engines::run(
            Command::new(engines::RUNC)
                .arg("--root")
                .arg(self.runc_root())
                .args(["state", id]),
            LIMIT,
        );
        assert!(out.ok(), "buntime-runc state {id}: {out:?}");
        serde_json::from_str(&out.stdout).expect("state JSON")
    }

    /// The ids buntime-runc's state directory lists.
    pub fn runc_ids(&self) -> Vec<String> {
        fs::read_dir(self.runc_root())
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs a CRI call with a deadline.
    fn call<T>(
        &self,
        f: impl FnOnce(
            RuntimeServiceClient<Channel>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>>,
        >,
    ) -> Result<T, tonic::Status> {
        let fut = f(RuntimeServiceClient::new(self.channel.clone()));
        self.rt.block_on(async {
            match tokio::time::timeout(LIMIT, fut).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(tonic::Status::deadline_exceeded("CRI call timed out")),
            }
        })
    }

    fn ctr(&self, args: &[&str]) -> Out {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.path("c.sock"))
            .arg("--namespace")
            .arg(NS)
            .args(args);
        engines::run(&mut c, LIMIT)
    }

    /// The CRI plugin reports the runtime and the network (CNI) ready.
    fn wait_ready(&self) {
        let ready = engines::wait_until(LIMIT, || {
            let Ok(s) = self.call(|mut c| {
                Box::pin(async move { c.status(cri::StatusRequest { verbose: false }).await })
            }) else {
                return false;
            };
            let conds = s.status.map(|s| s.conditions).unwrap_or_default();
            ["RuntimeReady", "NetworkReady"]
                .iter()
                .all(|t| conds.iter().any(|c| c.r#type == *t && c.status))
        });
        assert!(ready, "CRI plugin not ready: {}", self.log());
    }

    /// The busybox image (for containers) and the same tagged as the pause
    /// image, made offline and imported for the CRI plugin's snapshotter.
    fn import_images(&self) {
        let rootfs = engines::busybox_rootfs(&self.path("image"));
        let tar = self.path("image.tar");
        let script =
            Path::new(engines::MANIFEST_DIR).join("integration/containerd/make-oci-archive.py");
        let out = engines::run(
            Command::new("python3")
                .arg(script)
                .arg(&rootfs)
                .arg(PAUSE_IMAGE)
                .arg(&tar)
                .args(["sleep", "inf"]),
            LIMIT,
        );
        assert!(out.ok(), "make-oci-archive: {}", out.stderr);
        let tar = tar.to_string_lossy().into_owned();
        for args in [
            &["images", "import", "--snapshotter", "native", &tar][..],
            &["images", "tag", PAUSE_IMAGE, BUSYBOX_IMAGE],
        ] {
            let out = self.ctr(args);
            assert!(out.ok(), "ctr {args:?}: {out:?}");
        }
        // The CRI plugin learns of imported images from containerd's events.
        let seen = engines::wait_until(LIMIT, || {
            [PAUSE_IMAGE, BUSYBOX_IMAGE]
                .iter()
                .all(|i| self.rt.block_on(image_known(self.channel.clone(), i)))
        });
        assert!(seen, "CRI does not see the imported images: {}", self.log());
    }

    /// The pod's cgroup parent as the kubelet names it in the node's
    /// driver: `<root>/pod<uid>`, or the slice `<root>-pod<uid>.slice`
    /// (the uid's dashes made underscores, as the kubelet's systemd driver
    /// does, since a dash nests slices).
    fn pod_parent(&self, uid: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("{}/pod{uid}", self.cgroup_root),
            Driver::Systemd => format!(
                "{}-pod{}.slice",
                self.root_slice_name(),
                uid.replace('-', "_")
            ),
        }
    }

    /// The root slice's name without `.slice` (systemd driver).
    fn root_slice_name(&self) -> &str {
        self.cgroup_root
            .trim_start_matches('/')
            .trim_end_matches(".slice")
    }

    /// The pod's cgroup from the hierarchy's root.
    pub fn pod_cgroup(&self, pod: &Pod) -> String {
        let parent = pod
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        match self.driver {
            Driver::Cgroupfs => parent,
            Driver::Systemd => format!("{}/{parent}", self.cgroup_root),
        }
    }

    /// The cgroup containerd asks the runtime for, for container (or
    /// pause container) `id` of `pod`: `<parent>/<id>` (cgroupfs), or the
    /// scope `cri-containerd-<id>.scope` in the pod's slice (containerd's
    /// `slice:cri-containerd:id` cgroupsPath).
    pub fn container_cgroup(&self, pod: &Pod, id: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("{}/{id}", self.pod_cgroup(pod)),
            Driver::Systemd => format!("{}/{}", self.pod_cgroup(pod), scope_unit(id)),
        }
    }

    /// The pod configuration a kubelet would send: metadata, a log
    /// directory, the pod's cgroup parent in the node's driver, the pod's
    /// network and IPC, a PID namespace per container.
    pub fn pod_config(&self, name: &str, annotations: &[(&str, &str)]) -> cri::PodSandboxConfig {
        let n = POD.fetch_add(1, Ordering::Relaxed);
        let uid = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n);
        let logs = self.path("logs").join(format!("default_{name}_{uid}"));
        fs::create_dir_all(&logs).expect("pod log directory");
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.to_string(),
                uid: uid.clone(),
                namespace: "default".to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: logs.to_string_lossy().into_owned(),
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.pod_parent(&uid),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `RunPodSandbox` with runtime handler `buntime`.
    pub fn run_pod(&self, name: &str, annotations: &[(&str, &str)]) -> Pod {
        let config = self.pod_config(name, annotations);
        let id = self
            .try_run_pod(&config)
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", self.log()));
        Pod { id, config }
    }

    /// `RunPodSandbox` of `config` ([`Cri::pod_config`]): the pod's id.
    pub fn try_run_pod(&self, config: &cri::PodSandboxConfig) -> Result<String, tonic::Status> {
        let req = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "buntime".to_string(),
        };
        self.call(|mut c| Box::pin(async move { c.run_pod_sandbox(req).await }))
            .map(|r| r.pod_sandbox_id)
    }

    pub fn pod_status(&self, pod: &Pod) -> cri::PodSandboxStatus {
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: false,
        };
        self.call(|mut c| Box::pin(async move { c.pod_sandbox_status(req).await }))
            .expect("PodSandboxStatus")
            .status
            .expect("pod status")
    }

    /// `CreateContainer` of busybox running `cmd` in `pod`; its log goes to
    /// `<pod log directory>/<name>.log`.
    pub fn create(
        &self,
        pod: &Pod,
        name: &str,
        cmd: &[&str],
        annotations: &[(&str, &str)],
    ) -> Result<String, tonic::Status> {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: BUSYBOX_IMAGE.to_string(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        self.call(|mut c| Box::pin(async move { c.create_container(req).await }))
            .map(|r| r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        let req = cri::StartContainerRequest {
            container_id: id.to_string(),
        };
        self.call(|mut c| Box::pin(async move { c.start_container(req).await }))
            .map(|_| ())
    }

    /// `CreateContainer` + `StartContainer`, both expected to succeed.
    pub fn run_container(&self, pod: &Pod, name: &str, cmd: &[&str]) -> String {
        let id = self
            .create(pod, name, cmd, &[])
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", self.log()));
        self.start_container(&id)
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", self.log()));
        id
    }

    pub fn container_status(&self, id: &str) -> cri::ContainerStatus {
        let req = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.call(|mut c| Box::pin(async move { c.container_status(req).await }))
            .expect("ContainerStatus")
            .status
            .expect("container status")
    }

    /// Waits for the container to exit; its exit code.
    pub fn wait_exited(&self, id: &str) -> i32 {
        let exited = engines::wait_until(LIMIT, || {
            self.container_status(id).state == cri::ContainerState::ContainerExited as i32
        });
        let status = self.container_status(id);
        assert!(exited, "{id} did not exit: {status:?}");
        status.exit_code
    }

    /// The CRI log file of a container, as the kubelet reads it.
    pub fn log_of(&self, id: &str) -> String {
        let path = self.container_status(id).log_path;
        fs::read_to_string(&path).unwrap_or_default()
    }

    /// Waits until the container's log has a line containing `want`.
    pub fn wait_log(&self, id: &str, want: &str) -> String {
        engines::wait_until(LIMIT, || self.log_of(id).contains(want));
        self.log_of(id)
    }

    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> cri::ExecSyncResponse {
        let req = cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        self.call(|mut c| Box::pin(async move { c.exec_sync(req).await }))
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}\n{}", self.log()))
    }

    /// `Exec`: the URL of the streaming server that runs `cmd`.
    pub fn exec_url(&self, id: &str, cmd: &[&str], stdin: bool) -> String {
        let req = cri::ExecRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: false,
            stdin,
            stdout: true,
            stderr: true,
        };
        self.call(|mut c| Box::pin(async move { c.exec(req).await }))
            .unwrap_or_else(|e| panic!("Exec {cmd:?}: {e}"))
            .url
    }

    pub fn stats(&self, id: &str) -> cri::ContainerStats {
        let req = cri::ContainerStatsRequest {
            container_id: id.to_string(),
        };
        self.call(|mut c| Box::pin(async move { c.container_stats(req).await }))
            .unwrap_or_else(|e| panic!("ContainerStats: {e}\n{}", self.log()))
            .stats
            .expect("stats")
    }

    pub fn stop_container(&self, id: &str, timeout: i64) {
        let req = cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout,
        };
        self.call(|mut c| Box::pin(async move { c.stop_container(req).await }))
            .unwrap_or_else(|e| panic!("StopContainer: {e}\n{}", self.log()));
    }

    pub fn remove_container(&self, id: &str) {
        let req = cri::RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.call(|mut c| Box::pin(async move { c.remove_container(req).await }))
            .unwrap_or_else(|e| panic!("RemoveContainer: {e}\n{}", self.log()));
    }

    /// `StopPodSandbox` + `RemovePodSandbox`, then what the kubelet does
    /// itself: remove the pod's cgroup (cgroupfs: rmdir, which fails if
    /// the runtime left a container's cgroup below it), or stop the pod's
    /// slice (systemd: the slice's cgroup must go, so no scope is left
    /// running in it).
    pub fn remove_pod(&self, pod: &Pod) -> Result<(), tonic::Status> {
        self.remove_pod_id(&pod.id)?;
        self.remove_pod_cgroup(pod)
    }

    /// The kubelet's part of [`Cri::remove_pod`]: the pod's cgroup.
    pub fn remove_pod_cgroup(&self, pod: &Pod) -> Result<(), tonic::Status> {
        let cgroup = self.pod_cgroup(pod);
        match self.driver {
            Driver::Cgroupfs => {
                for dir in engines::cgroups_left(&cgroup) {
                    fs::remove_dir(&dir).map_err(|e| {
                        tonic::Status::internal(format!(
                            "the pod's cgroup {}: {e}: {:?}",
                            dir.display(),
                            subdirs(&dir)
                        ))
                    })?;
                }
            }
            Driver::Systemd => {
                let left =
                    subdirs(&Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/')));
                if !left.is_empty() {
                    return Err(tonic::Status::internal(format!(
                        "the pod's slice {cgroup} still has {left:?}"
                    )));
                }
                let unit = cgroup.rsplit('/').next().unwrap_or_default();
                stop_unit(unit);
                if !engines::wait_until(LIMIT, || engines::cgroups_left(&cgroup).is_empty()) {
                    return Err(tonic::Status::internal(format!(
                        "the pod's slice {cgroup} is still there after systemctl stop"
                    )));
                }
            }
        }
        Ok(())
    }

    fn remove_pod_id(&self, id: &str) -> Result<(), tonic::Status> {
        let stop = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(|mut c| Box::pin(async move { c.stop_pod_sandbox(stop).await }))?;
        let rm = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(|mut c| Box::pin(async move { c.remove_pod_sandbox(rm).await }))
            .map(|_| ())
    }

    pub fn pod_ids(&self) -> Vec<String> {
        self.call(|mut c| {
            Box::pin(async move {
                c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
                    .await
            })
        })
        .map(|r| r.items.into_iter().map(|p| p.id).collect())
        .unwrap_or_default()
    }

    pub fn container_ids(&self) -> Vec<String> {
        self.call(|mut c| {
            Box::pin(async move {
                c.list_containers(cri::ListContainersRequest { filter: None })
                    .await
            })
        })
        .map(|r| r.containers.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
    }

    fn daemon_pid(&self) -> i32 {
        self.daemon.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// The network namespaces the CRI plugin keeps (under its state
    /// directory: `netns_mounts_under_state_dir`).
    pub fn netns_files(&self) -> Vec<PathBuf> {
        let dir = self.path("state/io.containerd.grpc.v1.cri/netns");
        fs::read_dir(dir)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Asserts nothing of the test's pods is left: no pod or container in
    /// CRI, no buntime-runc state, no shim or container process, no mount,
    /// no network namespace, no interface on the bridge, no cgroup.
    pub fn assert_clean(&self) {
        assert!(self.pod_ids().is_empty(), "pods left: {:?}", self.pod_ids());
        let ids = self.container_ids();
        assert!(ids.is_empty(), "containers left: {ids:?}");
        assert!(
            self.runc_ids().is_empty(),
            "buntime-runc state left: {:?}",
            self.runc_ids()
        );
        let scratch = self.dir.path().to_string_lossy().into_owned();
        let daemon = self.daemon_pid();
        let others = || -> Vec<i32> {
            engines::pids_mentioning(&scratch)
                .into_iter()
                .filter(|&p| p != daemon)
                .collect()
        };
        assert!(
            engines::wait_until(Duration::from_secs(30), || others().is_empty()),
            "processes left (shims?): {:?}",
            others()
        );
        let procs = pids_in_cgroups(&self.cgroup_root);
        assert!(procs.is_empty(), "container processes left: {procs:?}");
        let mounts = engines::mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        let netns = self.netns_files();
        assert!(netns.is_empty(), "network namespaces left: {netns:?}");
        let ports: Vec<_> = fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge))
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(ports.is_empty(), "veths left on the bridge: {ports:?}");
        let prefix = format!("{}-", net_name(&self.bridge));
        let results: Vec<_> = fs::read_dir("/var/lib/cni/results")
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default();
        assert!(results.is_empty(), "CNI results left: {results:?}");
        let cgroups: Vec<PathBuf> = engines::cgroups_left(&self.cgroup_root)
            .iter()
            .flat_map(|cg| subdirs(cg))
            .collect();
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        for id in self.pod_ids() {
            let _ = self.remove_pod_id(&id);
        }
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
        // What a failed test may leave: shims (their command lines name the
        // scratch directory), container processes (in the test's cgroups).
        let scratch = self.dir.path().to_string_lossy().into_owned();
        engines::kill_mentioning(&scratch);
        for pid in pids_in_cgroups(&self.cgroup_root) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        engines::wait_until(Duration::from_secs(5), || {
            engines::pids_mentioning(&scratch).is_empty()
                && pids_in_cgroups(&self.cgroup_root).is_empty()
        });
        engines::unmount_under(self.dir.path());
        if self.driver == Driver::Systemd {
            // systemd's cgroups are systemd's to remove: stopping the root
            // slice stops every pod slice and scope in it.
            stop_unit(self.cgroup_root.trim_start_matches('/'));
        }
        engines::wait_until(Duration::from_secs(5), || {
            engines::remove_cgroup_tree(&self.cgroup_root);
            engines::cgroups_left(&self.cgroup_root).is_empty()
        });
        delete_bridge(&self.bridge);
    }
}

/// Pod network and IPC, a PID namespace per container: the kubelet's
/// defaults.
fn namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

async fn connect(sock: PathBuf) -> Result<Channel, tonic::transport::Error> {
    // The URI is not used: every connection is to the socket.
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(sock).await?))
            }
        }))
        .await
}

/// Whether the CRI image service lists `image`.
async fn image_known(channel: Channel, image: &str) -> bool {
    use k8s_cri::v1::image_service_client::ImageServiceClient;
    let req = cri::ImageStatusRequest {
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        verbose: false,
    };
    matches!(
        ImageServiceClient::new(channel).image_status(req).await,
        Ok(r) if r.get_ref().image.is_some()
    )
}

/// Makes the test's bridge with its own /24 (10.213.N.0/24, N not routed
/// here yet) and the address .1 on it; its name and N.
fn make_bridge() -> (String, u8) {
    let routes = engines::run(Command::new("ip").args(["-4", "route"]), LIMIT).stdout;
    let n = NET.fetch_add(1, Ordering::Relaxed);
    let start = (std::process::id() % 200 + n * 13) % 200;
    let subnet = (0..200)
        .map(|i| ((start + i) % 200 + 20) as u8)
        .find(|s| !routes.contains(&format!("10.213.{s}.")))
        .expect("a free 10.213.N.0/24");
    let bridge = format!("bt{}-{n}", std::process::id());
    for args in [
        vec!["link", "add", &bridge, "type", "bridge"],
        vec![
            "addr",
            "add",
            &format!("10.213.{subnet}.1/24"),
            "dev",
            &bridge,
        ],
        vec!["link", "set", &bridge, "up"],
    ] {
        let out = engines::run(Command::new("ip").args(&args), LIMIT);
        if !out.ok() {
            delete_bridge(&bridge);
            panic!("ip {args:?}: {out:?}");
        }
    }
    (bridge, subnet)
}

fn delete_bridge(bridge: &str) {
    let _ = engines::run(Command::new("ip").args(["link", "del", bridge]), LIMIT);
}

/// The CNI network: the bridge plugin on the test's bridge (not a
/// gateway: no default route, no masquerading, no forwarding), host-local
/// addresses in the test's /24 with its data in the scratch directory. The
/// CRI plugin adds the loopback plugin itself.
fn write_cni_config(dir: &Path, bridge: &str, subnet: u8) {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": net_name(bridge),
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": false,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "dataDir": dir.join("cni-ipam"),
                "ranges": [[{
                    "subnet": format!("10.213.{subnet}.0/24"),
                    "rangeStart": format!("10.213.{subnet}.10"),
                    "rangeEnd": format!("10.213.{subnet}.250"),
                }]],
            },
        }],
    });
    fs::create_dir_all(dir.join("cni")).expect("cni dir");
    fs::write(
        dir.join("cni/10-buntime-test.conflist"),
        serde_json::to_string_pretty(&conf).expect("json"),
    )
    .expect("write CNI config");
}

/// The CNI network's name (libcni keeps each attachment's result in
/// /var/lib/cni/results/NAME-ID-IFACE until the pod's network is removed).
fn net_name(bridge: &str) -> String {
    format!("buntime-test-{bridge}")
}

/// The scope containerd's runtime asks systemd for, for container `id`.
pub fn scope_unit(id: &str) -> String {
    format!("cri-containerd-{id}.scope")
}

/// `systemctl show -P ActiveState UNIT`.
pub fn unit_state(unit: &str) -> String {
    let out = engines::run(
        Command::new("systemctl").args(["show", "-P", "ActiveState", unit]),
        LIMIT,
    );
    out.stdout.trim().to_string()
}

/// `systemctl stop UNIT` (best effort: a unit already gone is fine; the
/// callers check its cgroup).
fn stop_unit(unit: &str) {
    let _ = engines::run(Command::new("systemctl").args(["stop", unit]), LIMIT);
}

/// containerd's configuration: the test's paths, then the shipped snippet
/// (integration/containerd/config.toml: the `buntime` handler) with the
/// built runtime, a scratch state root and the node's cgroup driver, then
/// the CRI plugin's settings.
fn containerd_config(d: &Path, runc: &Path, driver: Driver) -> String {
    let snippet = fs::read_to_string(
        Path::new(engines::MANIFEST_DIR).join("integration/containerd/config.toml"),
    )
    .expect("integration/containerd/config.toml");
    for shipped in [
        "\"/usr/local/bin/buntime-runc\"",
        "\"/run/buntime-runc/containerd\"",
        "SystemdCgroup = false",
    ] {
        assert!(snippet.contains(shipped), "the snippet names {shipped}");
    }
    let snippet = snippet
        .replace(
            "\"/usr/local/bin/buntime-runc\"",
            &format!("{:?}", runc.display().to_string()),
        )
        .replace(
            "\"/run/buntime-runc/containerd\"",
            &format!("{:?}", d.join("runc").display().to_string()),
        )
        .replace(
            "SystemdCgroup = false",
            &format!("SystemdCgroup = {}", driver == Driver::Systemd),
        );
    format!(
        r#"root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
]
{snippet}
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
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = {restrict_oom}
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "native"
  # No runc handler here: pods name `buntime` anyway.
  default_runtime_name = "buntime"
"#,
        root = d.join("root").display(),
        state = d.join("state").display(),
        sock = d.join("c.sock").display(),
        pause = PAUSE_IMAGE,
        cni_bin = CNI_BIN,
        cni_conf = d.join("cni").display(),
        restrict_oom = !has_sys_resource(),
    )
}

/// Whether this process may lower an OOM score (the pause container asks
/// for -998): where it may not (a host without CAP_SYS_RESOURCE, like a
/// container), the CRI plugin is told to keep scores at or above its own.
fn has_sys_resource() -> bool {
    caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false)
}

/// Pids in any cgroup under `rel` (pids controller).
fn pids_in_cgroups(rel: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for top in engines::cgroups_left(rel) {
        collect_procs(&top, &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn collect_procs(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for sub in subdirs(dir) {
        collect_procs(&sub, pids);
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The cgroup of process `pid`: its path in the v1 CPU accounting
/// hierarchy (`cpuacct`), or in the v2 one (`0::`), and whether it is v1.
pub fn cgroup_of(pid: i32) -> Option<(String, bool)> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v1 = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctls, path) = (f.next()?, f.next()?, f.next()?);
        ctls.split(',')
            .any(|c| c == "cpuacct")
            .then(|| path.to_string())
    });
    if let Some(path) = v1 {
        return Some((path, true));
    }
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some((path.to_string(), false))
}

/// The cgroup of process `pid` ([`cgroup_of`]) and the CPU time it has
/// used, in ns: `cpuacct.usage` on cgroup v1, `cpu.stat`'s `usage_usec` on
/// v2.
pub fn cpu_usage(pid: i32) -> Option<(String, u64)> {
    let (path, v1) = cgroup_of(pid)?;
    if v1 {
        let usage = fs::read_to_string(format!("/sys/fs/cgroup/cpuacct{path}/cpuacct.usage"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        return Some((path, usage));
    }
    let stat = fs::read_to_string(format!("/sys/fs/cgroup{path}/cpu.stat")).ok()?;
    let usec: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()?;
    Some((path, usec * 1000))
}

/// What a streaming exec gave: stdout, stderr, and the v4 protocol's
/// status (`Success`, or the exit code of a `NonZeroExitCode` failure).
#[derive(Debug, Default)]
pub struct Streamed {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub status: String,
}

/// Drives an exec URL like `kubectl exec` through the kubelet: a WebSocket
/// with the `v4.channel.k8s.io` protocol (one byte of channel before each
/// frame: 0 stdin, 1 stdout, 2 stderr, 3 status), sending `stdin` and
/// reading until the server closes.
pub fn stream_exec(url: &str, stdin: &[u8]) -> Streamed {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.as_str().into_client_request().expect("exec URL");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().expect("header"),
    );
    let (mut ws, resp) = tungstenite::connect(req).unwrap_or_else(|e| panic!("{ws_url}: {e}"));
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("v4.channel.k8s.io"),
        "{resp:?}"
    );
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(LIMIT)).expect("read timeout");
    }
    if !stdin.is_empty() {
        let mut frame = vec![0u8];
        frame.extend_from_slice(stdin);
        ws.send(Message::binary(frame)).expect("send stdin");
    }
    let mut out = Streamed::default();
    loop {
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => break,
            Err(tungstenite::Error::Protocol(_)) => break,
            Err(e) => panic!("exec stream: {e} (so far {out:?})"),
        };
        let data = match msg {
            Message::Binary(b) => b.to_vec(),
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&chan, body)) = data.split_first() else {
            continue;
        };
        let body = String::from_utf8_lossy(body);
        match chan {
            1 => out.stdout.push_str(&body),
            2 => out.stderr.push_str(&body),
            3 if !body.is_empty() => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                out.status = v["status"].as_str().unwrap_or_default().to_string();
                out.exit_code = if out.status == "Success" {
                    Some(0)
                } else {
                    v["details"]["causes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|c| c["reason"] == "ExitCode")
                        .and_then(|c| c["message"].as_str())
                        .and_then(|m| m.parse().ok())
                };
            }
            _ => {}
        }
    }
    out
}
