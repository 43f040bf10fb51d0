//! One worker request carried out: `policy::decide` says whether, and by
//! which rule; this module only does the I/O around it (the approver, the
//! name lookup, opening files with the worker's rights, connecting).

use std::io::Write;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::approver::Answer;
use super::Ctx;
use crate::deputy::fsops;
use crate::ipc::{PeerCred, Request};
use crate::policy::{
    self, normalize_path, BrokerOp, BrokerRule, Decision, FsOp, HostAddrs, Resolved, RuleRef,
    Verdict,
};
use crate::proxy::Refused;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest inline LISTDIR answer (fits the supervisor-to-worker ring).
const LIST_LIMIT: usize = 200 << 10;

/// A request carried out: what the worker gets, and the rule that
/// granted it.
pub(super) struct Allowed {
    pub data: Vec<u8>,
    pub fd: Option<OwnedFd>,
    pub rule: RuleRef,
    pub bytes: u64,
}

/// A refusal (the audit's rule and the worker's reason; for a network
/// destination refused after its lookup, the address it was about).
fn deny(rule: RuleRef, reason: impl Into<String>) -> Refused {
    Refused {
        rule,
        reason: reason.into(),
        addr: None,
    }
}

/// Carries out `req` for `peer`.
pub(super) fn carry_out(ctx: &Ctx, peer: &PeerCred, req: &Request) -> Result<Allowed, Refused> {
    match req {
        Request::FsRead { path } => fs_request(ctx, peer, FsOp::Read, path, None),
        Request::ListDir { path } => fs_request(ctx, peer, FsOp::ListDir, path, None),
        Request::FsWrite { path, data } => fs_request(ctx, peer, FsOp::Write, path, Some(data)),
        Request::NetConnect { host, port } => net_request(ctx, peer, host, *port),
        Request::Exec { argv } => exec_request(ctx, peer, argv),
    }
}

/// Asks the approver (the broker section says `ask`). Ok: the rule.
fn ask(ctx: &Ctx, pid: i32, op: BrokerOp, subject: &str) -> Result<RuleRef, Refused> {
    // The answer can take the approver's timeout: the lines held back
    // (the denials just before this question) are written first.
    ctx.audit.flush();
    let rule = RuleRef::Broker {
        op,
        rule: BrokerRule::Ask,
    };
    let q = serde_json::json!({
        "container": ctx.id, "pid": pid, "kind": op.as_str(), "subject": subject,
    });
    // The approver's socket is the supervisor's, not the worker's.
    let own = crate::deputy::creds::as_supervisor()
        .map_err(|e| deny(rule.clone(), format!("the supervisor's rights: {e}")))?;
    let answer = ctx.approver.ask(q);
    drop(own);
    match answer {
        Answer::Allow => Ok(rule),
        Answer::Deny => Err(deny(rule, "denied by the approver")),
        Answer::NoAnswer => {
            let ms = ctx.approver.timeout().as_millis();
            Err(deny(
                rule,
                format!("no answer from an approver within {ms} ms"),
            ))
        }
    }
}

/// Acts on a decision: Ok with the rule that grants it (after asking the
/// approver when the broker section says so), or the refusal.
fn settle(
    ctx: &Ctx,
    pid: i32,
    op: BrokerOp,
    subject: &str,
    d: Decision,
) -> Result<RuleRef, Refused> {
    match d.verdict {
        Verdict::Allow => Ok(d.rule),
        Verdict::Ask => ask(ctx, pid, op, subject),
        Verdict::Deny(why) => Err(deny(d.rule, why.to_string())),
        // Only a network decision by name says so, which the caller
        // follows with the lookup.
        Verdict::Lookup => Err(deny(RuleRef::Default, "internal error")),
    }
}

/// Where a granted path is opened: the tree the grant covers, the rest
/// of the path beneath it, whether symlinks there may be followed, and
/// whether the broker (not a static rule) granted it.
struct Target {
    tree: PathBuf,
    rest: PathBuf,
    follow: bool,
    by_broker: bool,
}

/// Decides a filesystem request (`path` as asked, `p` normalised): the
/// rule and where to open it.
fn fs_target(
    ctx: &Ctx,
    pid: i32,
    op: FsOp,
    path: &Path,
    p: &Path,
) -> Result<(RuleRef, Target), Refused> {
    let d = policy::decide(&ctx.policy, &policy::Request::Fs { op, path }, None);
    let granted_tree = match &d.rule {
        RuleRef::FsGrant { path, .. } => Some(path.clone()),
        _ => None,
    };
    let rule = settle(ctx, pid, op.broker_op(), &p.to_string_lossy(), d)?;
    let target = match granted_tree {
        Some(tree) => Target {
            // Symlinks beneath the tree may be followed only when no deny
            // entry lies inside it (a link could reach the denied part).
            follow: !ctx.policy.filesystem.denies_inside(&tree),
            rest: p.strip_prefix(&tree).unwrap_or(Path::new("")).to_path_buf(),
            tree,
            by_broker: false,
        },
        // Granted for this path only: no symlink anywhere in it.
        None => Target {
            tree: p.parent().unwrap_or(Path::new("/")).to_path_buf(),
            rest: p.file_name().map(PathBuf::from).unwrap_or_default(),
            follow: false,
            by_broker: true,
        },
    };
    Ok((rule, target))
}

fn fs_request(
    ctx: &Ctx,
    peer: &PeerCred,
    op: FsOp,
    raw: &[u8],
    write: Option<&Vec<u8>>,
) -> Result<Allowed, Refused> {
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(std::ffi::OsStr::from_bytes(raw));
    let p = normalize_path(path);
    let (rule, t) = fs_target(ctx, peer.pid, op, path, &p)?;
    let open = |flags| open_as_worker(ctx, &p, &t, flags);
    let fail = |e: std::io::Error| deny(rule.clone(), why_not(ctx, &p, &e));
    match (op, write) {
        (FsOp::ListDir, _) => {
            let fd = open(libc::O_RDONLY | libc::O_DIRECTORY).map_err(fail)?;
            // Listed with the worker's rights too (entry types may need a
            // stat inside the directory): the connection thread's already.
            let data = crate::deputy::creds::assume_worker()
                .and_then(|_rights| fsops::list_dir(&fd, LIST_LIMIT))
                .map_err(fail)?;
            Ok(Allowed {
                bytes: data.len() as u64,
                data,
                fd: None,
                rule,
            })
        }
        (_, None) => read_file(open, fail, rule.clone()),
        (_, Some(data)) => write_file(open, fail, rule.clone(), data),
    }
}

const NB: i32 = libc::O_NONBLOCK | libc::O_NOCTTY;

fn read_file(
    open: impl Fn(i32) -> std::io::Result<OwnedFd>,
    fail: impl Fn(std::io::Error) -> Refused,
    rule: RuleRef,
) -> Result<Allowed, Refused> {
    let flags = libc::O_RDONLY | NB;
    let fd = open(flags).map_err(fail)?;
    let Some(bytes) = fsops::regular_size(&fd) else {
        return Err(deny(rule, "not a regular file"));
    };
    fsops::clear_nonblock(&fd, flags);
    Ok(Allowed {
        data: Vec::new(),
        fd: Some(fd),
        rule,
        bytes,
    })
}

fn write_file(
    open: impl Fn(i32) -> std::io::Result<OwnedFd>,
    fail: impl Fn(std::io::Error) -> Refused,
    rule: RuleRef,
    data: &[u8],
) -> Result<Allowed, Refused> {
    let trunc = if data.is_empty() { 0 } else { libc::O_TRUNC };
    let flags = libc::O_WRONLY | libc::O_CREAT | trunc | NB;
    let fd = open(flags).map_err(&fail)?;
    if fsops::regular_size(&fd).is_none() {
        return Err(deny(rule, "not a regular file"));
    }
    fsops::clear_nonblock(&fd, flags);
    if data.is_empty() {
        return Ok(Allowed {
            data: Vec::new(),
            fd: Some(fd),
            rule,
            bytes: 0,
        });
    }
    let mut f = std::fs::File::from(fd);
    f.write_all(data).map_err(fail)?;
    Ok(Allowed {
        data: Vec::new(),
        fd: None,
        rule,
        bytes: data.len() as u64,
    })
}

/// Opens `tree/rest` in the sandbox's view with the worker's rights. A
/// path the broker granted (not a static rule) that the sandbox's view
/// lacks may name the host's file, under `buntime run`, where no mount of
/// the sandbox covers it (`view`).
fn open_as_worker(ctx: &Ctx, p: &Path, t: &Target, flags: i32) -> std::io::Result<OwnedFd> {
    let root = sandbox_root(ctx)?;
    // The connection thread holds the worker's rights: nothing to switch.
    let _rights = crate::deputy::creds::assume_worker()?;
    match fsops::open_beneath(root, &t.tree, &t.rest, flags, t.follow) {
        // Reads only: a write to a host path the sandbox cannot see needs
        // a `filesystem.write` grant (bound into the sandbox), never just
        // a broker answer.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && t.by_broker && !writes(flags) => {
            match ctx.view.host_fallback(p) {
                Some(host) => fsops::open_beneath(host, &t.tree, &t.rest, flags, t.follow),
                None => Err(e),
            }
        }
        r => r,
    }
}

/// The sandbox's root, taken when the worker connected; if it could not be
/// then, taken now as the supervisor: /proc/<init>/root is the init's,
/// which may be another uid than the worker that asks.
fn sandbox_root(ctx: &Ctx) -> std::io::Result<&std::fs::File> {
    if let Some(root) = ctx.view.root_taken() {
        return Ok(root);
    }
    let _own = crate::deputy::creds::as_supervisor()?;
    ctx.view.root()
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

/// The network decision shared by NET_CONNECT and the proxy: decides by
/// name (asking the approver before the lookup when the broker section
/// says so), resolves `host` on the host side, then decides with every
/// address. Returns the addresses checked and the rule that allowed them.
pub(super) fn net_check(
    ctx: &Ctx,
    pid: i32,
    host: &str,
    port: u16,
) -> Result<(Vec<SocketAddr>, RuleRef), Refused> {
    let req = policy::Request::Net { host, port };
    let subject = format!("{host}:{port}");
    let op = BrokerOp::NetConnect;
    let by_name = policy::decide(&ctx.policy, &req, None);
    let granted = match by_name.verdict {
        Verdict::Lookup => None,
        _ => Some(settle(ctx, pid, op, &subject, by_name)?),
    };
    let addrs = resolve(ctx, host, port)?;
    // The host's own addresses, as they are now, asked address by address
    // (see HostAddrs::live): one the kernel cannot answer for counts as
    // the host's, rather than risk reaching the host itself.
    let own = HostAddrs::live();
    let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
    let res = Resolved {
        addrs: &ips,
        own: &own,
    };
    let d = policy::decide(&ctx.policy, &req, Some(&res));
    // A refusal from here on is about an address: the audit names it (the
    // sandbox's answer does not: it would tell the sandbox what names
    // resolve to on the host's side).
    let about = d.addr.and_then(|i| addrs.get(i)).or(addrs.first()).copied();
    let rule = match (granted, &d.rule) {
        (Some(rule), RuleRef::Broker { .. }) => rule,
        _ => settle(ctx, pid, op, &subject, d).map_err(|r| Refused { addr: about, ..r })?,
    };
    Ok((addrs, rule))
}

/// `host`'s addresses as the host (or the pod) resolves it.
fn resolve(ctx: &Ctx, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
    let looked_up = match &ctx.pod {
        Some(pod) => pod.resolve(host, port),
        None => (host, port).to_socket_addrs().map(Iterator::collect),
    };
    let addrs: Vec<SocketAddr> =
        looked_up.map_err(|e| deny(RuleRef::Default, format!("cannot resolve {host}: {e}")))?;
    if addrs.is_empty() {
        return Err(deny(RuleRef::Default, format!("{host} has no address")));
    }
    Ok(addrs)
}

fn net_request(ctx: &Ctx, peer: &PeerCred, host: &str, port: u16) -> Result<Allowed, Refused> {
    // The lookup and the connect can block for seconds: held lines first.
    ctx.audit.flush();
    // The lookup (the host's resolver files, the pod's namespace), the
    // host's addresses and the connection are the supervisor's to make.
    let _own = crate::deputy::creds::as_supervisor()
        .map_err(|e| deny(RuleRef::Default, format!("the supervisor's rights: {e}")))?;
    let (addrs, rule) = net_check(ctx, peer.pid, host, port)?;
    // Connect to the addresses that were checked, not a fresh lookup.
    let connected = match &ctx.pod {
        Some(pod) => pod.connect(&addrs, CONNECT_TIMEOUT),
        None => crate::proxy::connect_any(&addrs, CONNECT_TIMEOUT),
    };
    match connected {
        Ok((s, a)) => Ok(Allowed {
            data: a.to_string().into_bytes(),
            fd: Some(OwnedFd::from(s)),
            rule,
            bytes: 0,
        }),
        Err(failed) => Err(deny(rule, format!("connect failed: {}", failed.error))),
    }
}

/// The program `argv[0]` names, as the sandbox would find it.
fn program(ctx: &Ctx, argv: &[Vec<u8>]) -> Result<PathBuf, Refused> {
    let prog = argv
        .first()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .unwrap_or_default();
    let root = sandbox_root(ctx)
        .map_err(|e| deny(RuleRef::Default, format!("the sandbox's root: {e}")))?;
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
    if prog.contains('/') {
        return Ok(normalize_path(&Path::new("/").join(&prog)));
    }
    // The PATH search is the worker's: it must not learn what lies in
    // directories it may not search (the connection thread's rights).
    let _rights = crate::deputy::creds::assume_worker()
        .map_err(|e| deny(RuleRef::Default, format!("the worker's rights: {e}")))?;
    ctx.path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| normalize_path(&Path::new(d).join(&prog)))
        .find(|p| exists(p))
        .ok_or_else(|| deny(RuleRef::Default, format!("{prog}: not found in PATH")))
}

fn exec_request(ctx: &Ctx, peer: &PeerCred, argv: &[Vec<u8>]) -> Result<Allowed, Refused> {
    use std::os::unix::ffi::OsStrExt;
    let path = program(ctx, argv)?;
    let req = policy::Request::Exec {
        program: &path,
        path_var: &ctx.path_var,
    };
    let d = policy::decide(&ctx.policy, &req, None);
    let rule = settle(ctx, peer.pid, BrokerOp::Exec, &path.to_string_lossy(), d)?;
    Ok(Allowed {
        data: path.as_os_str().as_bytes().to_vec(),
        fd: None,
        rule,
        bytes: 0,
    })
}
