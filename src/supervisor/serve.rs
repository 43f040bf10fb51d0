//! One worker connection: handshake, then requests until the worker stops,
//! breaks the protocol, or the supervisor exits. Every decision is audited.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::approver::Answer;
use super::fsops;
use super::{record, Ctx, S2W_CAPACITY, W2S_CAPACITY};
use crate::ipc::{
    ControlEvent, ControlSocket, Message, PeerCred, PeerPolicy, Request, Segment,
    SupervisorChannel, SupervisorConfig,
};
use crate::policy::paths::covers;
use crate::policy::{
    normalize_path, BrokerRule, FsAccess, FsDecision, NetDecision, NetDenyReason, NetMode, NetRule,
    Network,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest inline LISTDIR answer (fits the supervisor-to-worker ring).
const LIST_LIMIT: usize = 200 << 10;

/// The result of one request.
pub(super) enum Outcome {
    Allow {
        data: Vec<u8>,
        fd: Option<OwnedFd>,
        rule: String,
        bytes: u64,
    },
    Deny {
        rule: String,
        reason: String,
    },
}

/// A network destination refused: the decision, and the resolved address
/// it was about, once there is one (for the audit).
pub(super) struct NetRefusal {
    pub outcome: Outcome,
    pub addr: Option<SocketAddr>,
}

impl From<Outcome> for NetRefusal {
    fn from(outcome: Outcome) -> NetRefusal {
        NetRefusal {
            outcome,
            addr: None,
        }
    }
}

fn deny(rule: impl Into<String>, reason: impl Into<String>) -> Outcome {
    Outcome::Deny {
        rule: rule.into(),
        reason: reason.into(),
    }
}

/// Refuses a connection with REJECT and audits it.
/// `linger`: how long to read what the client still sends, so that the
/// REJECT is not lost to a reset. Zero on the accept loop, which a
/// sandbox must not be able to hold up with connections it keeps open.
pub(super) fn reject(ctx: &Ctx, sock: &ControlSocket, why: &str, linger: Duration) {
    let pid = sock.peer_cred().map(|c| c.pid).unwrap_or(0);
    sock.reject(why, linger);
    let mut r = record(ctx, pid, "connect", "control socket".into());
    r.decision = "deny".into();
    r.reason = why.into();
    ctx.audit.record(&r);
}

fn same_container(ctx: &Ctx, peer: &PeerCred) -> bool {
    let Some(ours) = ctx.mnt_ns.get().copied().or_else(|| {
        super::mnt_ns(ctx.init_pid)
            .ok()
            .map(|ns| *ctx.mnt_ns.get_or_init(|| ns))
    }) else {
        return false;
    };
    super::mnt_ns(peer.pid).is_ok_and(|ns| ns == ours)
}

/// The segment a connection hands its worker; made before the connection
/// comes (see `Spare`), so a worker's handshake does not wait for it.
pub(super) fn new_segment() -> crate::ipc::error::Result<Segment> {
    Segment::create_anonymous(S2W_CAPACITY, W2S_CAPACITY)
}

/// Serves one worker's connection until it stops or breaks.
pub(super) fn connection(
    ctx: &Ctx,
    sock: ControlSocket,
    segment: crate::ipc::error::Result<Segment>,
) {
    let peer = match sock.peer_cred() {
        Ok(p) => p,
        Err(_) => return,
    };
    // SO_PEERCRED is the connecting process as the kernel saw it; only
    // processes in the container's mount namespace are its workers.
    if !same_container(ctx, &peer) {
        reject(
            ctx,
            &sock,
            "not a process of this container",
            crate::ipc::control::LINGER,
        );
        return;
    }
    // Requests are carried out with this worker's rights (see `creds`).
    match super::creds::SandboxCreds::of_peer(sock.as_fd(), peer.uid, peer.gid) {
        Ok(c) => super::creds::serve_as(c),
        Err(e) => {
            reject(
                ctx,
                &sock,
                &format!("peer credentials: {e}"),
                crate::ipc::control::LINGER,
            );
            return;
        }
    }
    // Made ahead of time; a failure then may have passed: try once more.
    let segment = match segment.or_else(|_| new_segment()) {
        Ok(s) => s,
        Err(e) => {
            reject(
                ctx,
                &sock,
                &format!("no segment: {e}"),
                crate::ipc::control::LINGER,
            );
            return;
        }
    };
    let cfg = SupervisorConfig {
        peer: PeerPolicy::default(),
        ..Default::default()
    };
    let mut chan = match SupervisorChannel::handshake(sock, segment, cfg) {
        Ok(c) => c,
        Err(e) => {
            let mut r = record(ctx, peer.pid, "connect", "handshake".into());
            r.decision = "close".into();
            r.reason = e.to_string();
            ctx.audit.record(&r);
            return;
        }
    };
    // A worker that cannot wake a futex (the pure-Python start of the
    // Python worker) rings the control socket instead: wait on that.
    let doorbell = chan.peer_wants_doorbell();
    let mut tally = Tally::new();
    serve_channel(ctx, &mut chan, &peer, doorbell, &mut tally);
    tally.flush(ctx, &peer);
}

/// The request loop of one connection (`connection` tallies its output).
fn serve_channel(
    ctx: &Ctx,
    chan: &mut SupervisorChannel,
    peer: &PeerCred,
    doorbell: bool,
    tally: &mut Tally,
) {
    let mut exit_seen = false;
    // Wake-ups that found nothing to read: a worker toggling its ring's head
    // could otherwise keep this loop (outside its cgroup) busy.
    let mut idle_wakes = 0u32;
    loop {
        let next = if doorbell {
            match chan.try_recv() {
                Ok(None) => match chan.wait_doorbell(Duration::from_millis(200)) {
                    Ok(_) => chan.try_recv(),
                    Err(e) => Err(e),
                },
                other => other,
            }
        } else {
            chan.recv_timeout(Duration::from_millis(200))
        };
        match next {
            Ok(Some(m)) => {
                idle_wakes = 0;
                dispatch(ctx, chan, peer, &mut exit_seen, tally, m);
            }
            // The ring is empty: read the control messages queued meanwhile,
            // until a doorbell says the ring has something again.
            Ok(None) => {
                idle_wakes += 1;
                if idle_wakes > IDLE_WAKES_BEFORE_BACKOFF {
                    std::thread::sleep(IDLE_BACKOFF);
                }
                for _ in 0..64 {
                    match chan.poll_control() {
                        Ok(Some(ControlEvent::Stop { .. })) => {
                            return drain(ctx, chan, peer, &mut exit_seen, tally)
                        }
                        Ok(Some(ControlEvent::Exit(code))) => {
                            exited(ctx, peer, &mut exit_seen, code)
                        }
                        Ok(Some(ControlEvent::Doorbell)) | Ok(None) => break,
                        Err(e) => return protocol_error(ctx, peer, &e),
                    }
                }
            }
            Err(e) => return protocol_error(ctx, peer, &e),
        }
        if chan.is_closed() {
            return drain(ctx, chan, peer, &mut exit_seen, tally);
        }
    }
}

/// Empty wake-ups in a row tolerated before each one costs a pause.
const IDLE_WAKES_BEFORE_BACKOFF: u32 = 16;
const IDLE_BACKOFF: Duration = Duration::from_millis(1);

fn dispatch(
    ctx: &Ctx,
    chan: &mut SupervisorChannel,
    peer: &PeerCred,
    seen: &mut bool,
    tally: &mut Tally,
    m: Message,
) {
    match m {
        Message::Exit(code) => exited(ctx, peer, seen, code),
        Message::Stdout(b) | Message::Stderr(b) => output(ctx, peer, tally, &b),
        m => handle(ctx, chan, peer, m),
    }
}

/// The worker stopped: what it wrote to the ring before its STOP (the end
/// of its output, its exit status) is still there. Bounded by what the ring
/// can hold, since another process in the container may keep writing.
fn drain(
    ctx: &Ctx,
    chan: &mut SupervisorChannel,
    peer: &PeerCred,
    seen: &mut bool,
    tally: &mut Tally,
) {
    // Each frame takes at least its length word and header.
    let max = W2S_CAPACITY as usize / (4 + crate::ipc::protocol::HEADER_LEN) + 1;
    for _ in 0..max {
        match chan.try_recv() {
            // Nobody is left to answer: a request is not carried out (a
            // write would still happen, an `ask` would still prompt).
            Ok(Some(Message::Request { request, .. })) => {
                let (kind, subject) = describe(&request);
                let mut r = record(ctx, peer.pid, kind, subject);
                r.decision = "close".into();
                r.reason = "the worker stopped before its request was read".into();
                ctx.audit.record(&r);
            }
            Ok(Some(m)) => dispatch(ctx, chan, peer, seen, tally, m),
            Ok(None) => return,
            Err(crate::ipc::IpcError::Poisoned) => return,
            Err(e) => return protocol_error(ctx, peer, &e),
        }
    }
}

fn protocol_error(ctx: &Ctx, peer: &PeerCred, e: &crate::ipc::IpcError) {
    let mut r = record(ctx, peer.pid, "protocol", e.to_string());
    r.decision = "close".into();
    r.reason = if e.is_peer_fault() {
        "worker broke the protocol".into()
    } else {
        "connection error".into()
    };
    ctx.audit.record(&r);
}

/// The worker's exit status (from its ring or its control socket), audited
/// once per connection: more would only let a worker flood the log.
fn exited(ctx: &Ctx, peer: &PeerCred, seen: &mut bool, code: i32) {
    if std::mem::replace(seen, true) {
        return;
    }
    let mut r = record(ctx, peer.pid, "exit", code.to_string());
    r.decision = "allow".into();
    ctx.audit.record(&r);
}

fn handle(ctx: &Ctx, chan: &mut SupervisorChannel, peer: &PeerCred, m: Message) {
    match m {
        // Tallied by `dispatch`; audited by the loop (`exited`).
        Message::Stdout(_) | Message::Stderr(_) | Message::Exit(_) => {}
        Message::Request { id, request } => {
            let start = Instant::now();
            let (kind, subject) = describe(&request);
            let outcome = decide(ctx, peer, &request);
            let mut r = record(ctx, peer.pid, kind, subject);
            let sent = match outcome {
                Outcome::Allow {
                    data,
                    fd,
                    rule,
                    bytes,
                } => {
                    r.decision = "allow".into();
                    r.rule = rule;
                    r.bytes = bytes;
                    match fd {
                        Some(fd) => chan.allow_with_fd(id, fd.as_fd(), &data),
                        None => chan.allow(id, &data),
                    }
                }
                Outcome::Deny { rule, reason } => {
                    r.decision = "deny".into();
                    r.rule = rule;
                    r.reason = reason.clone();
                    chan.deny(id, &reason)
                }
            };
            r.latency_us = start.elapsed().as_micros() as u64;
            ctx.audit.record(&r);
            if let Err(e) = sent {
                protocol_error(ctx, peer, &e);
            }
        }
        Message::Reply { .. } => {} // refused by the channel already
    }
}

fn describe(req: &Request) -> (&'static str, String) {
    let lossy = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    match req {
        Request::FsRead { path } => ("fs_read", lossy(path)),
        Request::FsWrite { path, .. } => ("fs_write", lossy(path)),
        Request::ListDir { path } => ("list_dir", lossy(path)),
        Request::NetConnect { host, port } => ("net_connect", format!("{host}:{port}")),
        Request::Exec { argv } => (
            "exec",
            argv.iter().map(|a| lossy(a)).collect::<Vec<_>>().join(" "),
        ),
    }
}

/// STDOUT/STDERR frames of one connection, counted rather than audited
/// one by one (a sandbox decides how many frames it sends): one line per
/// `TALLY_EVERY` while output flows, and one at the end.
pub(super) struct Tally {
    frames: u64,
    kept: u64,
    dropped: u64,
    since: Instant,
}

const TALLY_EVERY: Duration = Duration::from_secs(60);

impl Tally {
    fn new() -> Tally {
        Tally {
            frames: 0,
            kept: 0,
            dropped: 0,
            since: Instant::now(),
        }
    }

    /// Audits what was counted since the last line (if anything).
    fn flush(&mut self, ctx: &Ctx, peer: &PeerCred) {
        if self.frames > 0 {
            let mut r = record(ctx, peer.pid, "stdout", "stdout+stderr".into());
            r.decision = "allow".into();
            r.bytes = self.kept;
            r.count = Some(self.frames);
            if self.dropped > 0 {
                r.rule = "resources.output".into();
                r.reason = format!("{} bytes over the output limit dropped", self.dropped);
            }
            ctx.audit.record(&r);
        }
        *self = Tally::new();
    }
}

fn output(ctx: &Ctx, peer: &PeerCred, tally: &mut Tally, data: &[u8]) {
    let (take, first_drop) = {
        let mut guard = match ctx.output.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (file, written) = &mut *guard;
        let room = ctx
            .output_limit
            .map_or(data.len() as u64, |l| l.saturating_sub(*written));
        let take = (data.len() as u64).min(room) as usize;
        if take > 0 && file.write_all(&data[..take]).is_ok() {
            *written += take as u64;
        }
        // Past the limit, `written` is one more than it: the drop is noted.
        let first = match ctx.output_limit {
            Some(l) if take < data.len() && *written <= l => {
                *written = l + 1;
                true
            }
            _ => false,
        };
        (take, first)
    };
    tally.frames += 1;
    tally.kept += take as u64;
    tally.dropped += (data.len() - take) as u64;
    // The limit reached is a decision, audited once per container.
    if first_drop {
        let mut r = record(ctx, peer.pid, "stdout", "stdout+stderr".into());
        r.decision = "deny".into();
        r.rule = "resources.output".into();
        r.reason = "output limit reached; later output is dropped".into();
        ctx.audit.record(&r);
    }
    if tally.since.elapsed() >= TALLY_EVERY {
        tally.flush(ctx, peer);
    }
}

/// `ask`/`allow`/`deny` of the broker section, for a request the static
/// rules do not grant. Ok: the rule that granted it.
fn broker(
    ctx: &Ctx,
    pid: i32,
    kind: &str,
    rule: BrokerRule,
    subject: &str,
) -> Result<String, Outcome> {
    match rule {
        BrokerRule::Allow => Ok(format!("broker.{kind}=allow")),
        BrokerRule::Deny => Err(deny("default", "not granted by the policy")),
        BrokerRule::Ask => {
            let q = serde_json::json!({
                "container": ctx.id, "pid": pid, "kind": kind, "subject": subject,
            });
            match ctx.approver.ask(q) {
                Answer::Allow => Ok(format!("broker.{kind}=ask")),
                Answer::Deny => Err(deny(format!("broker.{kind}=ask"), "denied by the approver")),
                Answer::NoAnswer => Err(deny(
                    format!("broker.{kind}=ask"),
                    format!(
                        "no answer from an approver within {} ms",
                        ctx.approver.timeout().as_millis()
                    ),
                )),
            }
        }
    }
}

fn decide(ctx: &Ctx, peer: &PeerCred, req: &Request) -> Outcome {
    let b = &ctx.policy.broker;
    let r = match req {
        Request::FsRead { path } => fs_request(ctx, peer, "fs_read", b.fs_read, path, None),
        Request::ListDir { path } => fs_request(ctx, peer, "list_dir", b.list_dir, path, None),
        Request::FsWrite { path, data } => {
            fs_request(ctx, peer, "fs_write", b.fs_write, path, Some(data))
        }
        Request::NetConnect { host, port } => net_request(ctx, peer, host, *port),
        Request::Exec { argv } => exec_request(ctx, peer, argv),
    };
    r.unwrap_or_else(|o| o)
}

/// The static grant covering `p`: (tree, rule text, follow symlinks).
fn static_grant(ctx: &Ctx, p: &Path, access: FsAccess) -> Option<(PathBuf, String)> {
    let fs = &ctx.policy.filesystem;
    let lists: &[(&str, &Vec<crate::policy::FsPath>)] = match access {
        FsAccess::Write => &[("write", &fs.write)],
        _ => &[("read", &fs.read), ("write", &fs.write), ("exec", &fs.exec)],
    };
    lists.iter().find_map(|(name, list)| {
        list.iter().find_map(|e| {
            let t = normalize_path(e.as_path());
            covers(&t, p).then(|| {
                let rule = format!("filesystem.{name} {}", t.display());
                (t, rule)
            })
        })
    })
}

fn fs_request(
    ctx: &Ctx,
    peer: &PeerCred,
    kind: &str,
    rule: BrokerRule,
    raw: &[u8],
    write: Option<&Vec<u8>>,
) -> Result<Outcome, Outcome> {
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(std::ffi::OsStr::from_bytes(raw));
    if !path.is_absolute() {
        return Err(deny("default", "path must be absolute"));
    }
    let p = normalize_path(path);
    let access = if write.is_some() {
        FsAccess::Write
    } else {
        FsAccess::Read
    };
    let (tree, rest, rule, follow, by_broker) = match ctx.policy.filesystem.decide(&p, access) {
        FsDecision::DeniedBy(d) => {
            return Err(deny(
                format!("filesystem.deny {}", d.display()),
                "denied by the policy",
            ))
        }
        FsDecision::Allow => {
            let (tree, rule) = static_grant(ctx, &p, access)
                .ok_or_else(|| deny("default", "not granted by the policy"))?;
            // Symlinks beneath the tree may be followed only when no deny
            // entry lies inside it (a link could reach the denied part).
            let follow = !ctx
                .policy
                .filesystem
                .deny
                .iter()
                .any(|d| covers(&tree, &normalize_path(d.as_path())));
            let rest = p.strip_prefix(&tree).unwrap_or(Path::new("")).to_path_buf();
            (tree, rest, rule, follow, false)
        }
        FsDecision::NotGranted => {
            let rule = broker(ctx, peer.pid, kind, rule, &p.to_string_lossy())?;
            // Granted for this path only: no symlink anywhere in it.
            let tree = p.parent().unwrap_or(Path::new("/")).to_path_buf();
            let rest = p.file_name().map(PathBuf::from).unwrap_or_default();
            (tree, rest, rule, false, true)
        }
    };
    let open = |flags| open_as_worker(ctx, &p, &tree, &rest, flags, follow, by_broker);
    let fail = |rule: &str, e: std::io::Error| deny(rule, why_not(ctx, &p, &e));
    let nb = libc::O_NONBLOCK | libc::O_NOCTTY;
    match (kind, write) {
        ("list_dir", _) => {
            let fd = open(libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| fail(&rule, e))?;
            // Listed with the worker's rights too (entry types may need a
            // stat inside the directory).
            let data = super::creds::assume_worker()
                .and_then(|_rights| fsops::list_dir(&fd, LIST_LIMIT))
                .map_err(|e| fail(&rule, e))?;
            Ok(Outcome::Allow {
                bytes: data.len() as u64,
                data,
                fd: None,
                rule,
            })
        }
        (_, None) => {
            let fd = open(libc::O_RDONLY | nb).map_err(|e| fail(&rule, e))?;
            if !fsops::is_regular(&fd) {
                return Err(deny(rule, "not a regular file"));
            }
            fsops::clear_nonblock(&fd);
            let bytes = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))
                .map(|s| s.st_size as u64)
                .unwrap_or(0);
            Ok(Outcome::Allow {
                data: Vec::new(),
                fd: Some(fd),
                rule,
                bytes,
            })
        }
        (_, Some(data)) => {
            let trunc = if data.is_empty() { 0 } else { libc::O_TRUNC };
            let fd =
                open(libc::O_WRONLY | libc::O_CREAT | trunc | nb).map_err(|e| fail(&rule, e))?;
            if !fsops::is_regular(&fd) {
                return Err(deny(rule, "not a regular file"));
            }
            fsops::clear_nonblock(&fd);
            if data.is_empty() {
                return Ok(Outcome::Allow {
                    data: Vec::new(),
                    fd: Some(fd),
                    rule,
                    bytes: 0,
                });
            }
            let mut f = std::fs::File::from(fd);
            f.write_all(data).map_err(|e| fail(&rule, e))?;
            Ok(Outcome::Allow {
                data: Vec::new(),
                fd: None,
                rule,
                bytes: data.len() as u64,
            })
        }
    }
}

/// Opens `tree/rest` in the sandbox's view with the worker's rights. A
/// path the broker granted (not a static rule) that the sandbox's view
/// lacks may name the host's file, under `buntime run`, where no mount of
/// the sandbox covers it (`view`).
fn open_as_worker(
    ctx: &Ctx,
    p: &Path,
    tree: &Path,
    rest: &Path,
    flags: i32,
    follow: bool,
    by_broker: bool,
) -> std::io::Result<OwnedFd> {
    // The root first, as the supervisor: /proc/<init>/root is the init's,
    // which may be another uid than the worker that asks.
    let root = ctx.view.root()?;
    let _rights = super::creds::assume_worker()?;
    match fsops::open_beneath(root, tree, rest, flags, follow) {
        // Reads only: a write to a host path the sandbox cannot see needs
        // a `filesystem.write` grant (bound into the sandbox), never just
        // a broker answer.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && by_broker && !writes(flags) => {
            match ctx.view.host_fallback(p) {
                Some(host) => fsops::open_beneath(host, tree, rest, flags, follow),
                None => Err(e),
            }
        }
        r => r,
    }
}

fn writes(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
}

/// The refusal's reason; a missing path under one of the sandbox's own
/// mounts says so (its `/tmp` is not the host's).
fn why_not(ctx: &Ctx, p: &Path, e: &std::io::Error) -> String {
    match ctx.view.shadowed_by(p) {
        Some(m) if e.raw_os_error() == Some(libc::ENOENT) => format!(
            "no such file or directory in the sandbox (its {} is its own, not the host's)",
            m.display()
        ),
        _ => fsops::describe(e),
    }
}

/// The network decision shared by NET_CONNECT and the proxy: resolves
/// `host` on the host side, applies the policy's rules to the name and to
/// every address (the broker decides what they do not grant, never a
/// denied or special address), and returns the addresses it checked with
/// the rule that allowed them.
pub(super) fn net_check(
    ctx: &Ctx,
    pid: i32,
    host: &str,
    port: u16,
) -> Result<(Vec<SocketAddr>, String), NetRefusal> {
    // The supervisor connects from the host, so the rules are applied as
    // for egress through the proxy, whatever the sandbox's own mode: its
    // loopback is not the host's.
    if crate::policy::numeric_name(host) {
        return Err(deny(
            "network",
            format!("{host} is an address in a non-standard form: write it as a.b.c.d"),
        )
        .into());
    }
    let mut net = ctx.policy.network.clone();
    net.mode = NetMode::Proxy;
    let hard = |r: NetDenyReason| {
        let rule = match &r {
            NetDenyReason::DeniedBy(x) => format!("network.deny {x}"),
            _ => "network".to_string(),
        };
        deny(rule, r.to_string())
    };
    // Refuse by name before resolving: a denied name is never looked up,
    // nor one nobody could grant (names are never allowed by address).
    // A name the rules do not grant goes to the broker before its lookup
    // too: the lookup is a DNS query leaving the host, which would carry
    // what the sandbox put in the name even if the approver said no.
    let ask = || {
        let rule = ctx.policy.broker.net_connect;
        broker(ctx, pid, "net_connect", rule, &format!("{host}:{port}"))
    };
    let mut granted = None;
    if let NetDecision::Deny(r) = net.decide(host, port) {
        if r != NetDenyReason::NotAllowed || ctx.policy.broker.net_connect == BrokerRule::Deny {
            return Err(hard(r).into());
        }
        if matches!(
            crate::policy::Dest::parse(host),
            crate::policy::Dest::Name(_)
        ) {
            granted = Some(ask().map_err(NetRefusal::from)?);
        }
    }
    let looked_up = match &ctx.pod {
        Some(pod) => pod.resolve(host, port),
        None => (host, port).to_socket_addrs().map(Iterator::collect),
    };
    let addrs: Vec<SocketAddr> = looked_up
        .map_err(|e| NetRefusal::from(deny("default", format!("cannot resolve {host}: {e}"))))?;
    if addrs.is_empty() {
        return Err(deny("default", format!("{host} has no address")).into());
    }
    // The host's own addresses, as they are now (see HostAddrs::read):
    // without them, refuse rather than risk reaching the host itself.
    let own = crate::policy::HostAddrs::read().map_err(|e| {
        NetRefusal::from(deny(
            "network",
            format!("cannot list the host's own addresses: {e}"),
        ))
    })?;
    // A refusal from here on is about an address: the audit names the
    // first one the rules refuse (the sandbox's answer does not: it would
    // tell the sandbox what names resolve to on the host's side).
    let refused = |net: &Network, r: NetDenyReason| NetRefusal {
        outcome: hard(r),
        addr: addrs
            .iter()
            .find(|a| {
                !matches!(
                    net.decide_resolved(host, port, &[a.ip()], &own),
                    NetDecision::Allow
                )
            })
            .or(addrs.first())
            .copied(),
    };
    let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
    let rule = match net.decide_resolved(host, port, &ips, &own) {
        NetDecision::Allow => {
            let dest = crate::policy::Dest::parse(host);
            let by = net
                .allow
                .iter()
                .find(|r| {
                    r.matches(&dest, port)
                        || ips
                            .iter()
                            .any(|ip| r.matches(&crate::policy::Dest::Ip(*ip), port))
                })
                .map(|r| r.to_string())
                .unwrap_or_default();
            format!("network.allow {by}")
        }
        NetDecision::Deny(NetDenyReason::NotAllowed) => {
            // Not granted statically; the broker may grant it, but never a
            // denied or special (loopback, private, metadata) address, nor
            // one of the host's own.
            let mut open = net.clone();
            if let Ok(any) = NetRule::parse("*") {
                open.allow.push(any);
            }
            match open.decide_resolved(host, port, &ips, &own) {
                // Nothing to ask: say which rule is missing.
                NetDecision::Allow if ctx.policy.broker.net_connect == BrokerRule::Deny => {
                    return Err(refused(&net, NetDenyReason::NotAllowed))
                }
                NetDecision::Allow => match granted {
                    Some(rule) => rule,
                    None => ask().map_err(|o| NetRefusal {
                        outcome: o,
                        addr: addrs.first().copied(),
                    })?,
                },
                NetDecision::Deny(r) => return Err(refused(&open, r)),
            }
        }
        NetDecision::Deny(r) => return Err(refused(&net, r)),
    };
    Ok((addrs, rule))
}

fn net_request(ctx: &Ctx, peer: &PeerCred, host: &str, port: u16) -> Result<Outcome, Outcome> {
    let (addrs, rule) = net_check(ctx, peer.pid, host, port).map_err(|r| r.outcome)?;
    // Connect to the addresses that were checked, not a fresh lookup.
    let connected = match &ctx.pod {
        Some(pod) => pod.connect(&addrs, CONNECT_TIMEOUT),
        None => crate::proxy::connect_any(&addrs, CONNECT_TIMEOUT),
    };
    match connected {
        Ok((s, a)) => Ok(Outcome::Allow {
            data: a.to_string().into_bytes(),
            fd: Some(OwnedFd::from(s)),
            rule,
            bytes: 0,
        }),
        Err(failed) => Err(deny(rule, format!("connect failed: {}", failed.error))),
    }
}

fn exec_request(ctx: &Ctx, peer: &PeerCred, argv: &[Vec<u8>]) -> Result<Outcome, Outcome> {
    let prog = argv
        .first()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .unwrap_or_default();
    let root = ctx
        .view
        .root()
        .map_err(|e| deny("default", format!("the sandbox's root: {e}")))?;
    let exists = |p: &Path| {
        let rel = p.strip_prefix("/").unwrap_or(p);
        fsops::openat2(
            root,
            rel,
            libc::O_PATH | libc::O_NOFOLLOW,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        )
        .is_ok()
    };
    let path = if prog.contains('/') {
        normalize_path(&Path::new("/").join(&prog))
    } else {
        // The PATH search is the worker's: it must not learn what lies in
        // directories it may not search.
        let _rights = super::creds::assume_worker()
            .map_err(|e| deny("default", format!("the worker's rights: {e}")))?;
        ctx.path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| normalize_path(&Path::new(d).join(&prog)))
            .find(|p| exists(p))
            .ok_or_else(|| deny("default", format!("{prog}: not found in PATH")))?
    };
    if let FsDecision::DeniedBy(d) = ctx.policy.filesystem.decide(&path, FsAccess::Exec) {
        return Err(deny(
            format!("filesystem.deny {}", d.display()),
            "denied by the policy",
        ));
    }
    let rule = if ctx.policy.may_exec(&path, &ctx.path_var) {
        "exec rules".to_string()
    } else {
        broker(
            ctx,
            peer.pid,
            "exec",
            ctx.policy.broker.exec,
            &path.to_string_lossy(),
        )?
    };
    use std::os::unix::ffi::OsStrExt;
    Ok(Outcome::Allow {
        data: path.as_os_str().as_bytes().to_vec(),
        fd: None,
        rule,
        bytes: 0,
    })
}
