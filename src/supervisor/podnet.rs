//! `pod` mode: the proxy decides as everywhere, but looks names up and
//! connects inside the pod's network namespace, so cluster DNS names,
//! Services, pod IPs and the pod's own loopback are what the sandbox would
//! reach there.
//!
//! Each lookup and connect runs on a short-lived thread that enters the
//! namespace (`setns`, per thread) and ends: no long-lived supervisor
//! thread is ever left in the pod's namespace, and the host's addresses
//! (`HostAddrs`) are still read from the host's. A socket keeps the
//! namespace it was made in, so the connected stream is used from any
//! thread afterwards.
//!
//! Names are looked up with the nameservers of the `resolv.conf` the
//! engine mounts at `/etc/resolv.conf` (its source on the host, from the
//! effective spec: the engine's file, never the image's), as given (no
//! search domain, as on the host side), after the `hosts` file the engine
//! mounts at `/etc/hosts`. Without such a mount the host's resolver
//! answers, as in `proxy` mode.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::Spec;
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};

use crate::proxy::ConnectFailed;

/// How long one nameserver gets for one query.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Larger answers are truncated by the server (no TCP fallback here).
const DNS_MAX: usize = 4096;

/// The pod's network namespace and how names are looked up in it.
pub struct PodNet {
    netns: File,
    nameservers: Vec<IpAddr>,
    hosts: Vec<(String, IpAddr)>,
    /// No resolv.conf mount: the host's resolver answers.
    host_resolver: bool,
}

impl PodNet {
    /// The namespace of the container's init (the pod's: the container
    /// joined it), and the engine's resolv.conf and hosts from `spec`.
    pub fn open(init_pid: i32, spec: &Spec) -> io::Result<PodNet> {
        let netns = File::open(format!("/proc/{init_pid}/ns/net"))?;
        let source = |dest: &str| {
            spec.mounts()
                .as_deref()
                .unwrap_or_default()
                .iter()
                .rev()
                .find(|m| m.destination() == Path::new(dest))
                .and_then(|m| m.source().clone())
        };
        let resolv = source("/etc/resolv.conf");
        let nameservers = match &resolv {
            Some(p) => parse_nameservers(&std::fs::read_to_string(p)?),
            None => Vec::new(),
        };
        let hosts = match source("/etc/hosts") {
            Some(p) => parse_hosts(&std::fs::read_to_string(p).unwrap_or_default()),
            None => Vec::new(),
        };
        Ok(PodNet {
            netns,
            nameservers,
            hosts,
            host_resolver: resolv.is_none(),
        })
    }

    /// Runs `f` on a new thread inside the pod's namespace.
    fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let ns = self.netns.as_fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("pod network thread panicked"))?
        })
    }

    /// The addresses of `host` (a name or an address literal) in the pod.
    pub fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let listed: Vec<SocketAddr> = self
            .hosts
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, ip)| SocketAddr::new(*ip, port))
            .collect();
        if !listed.is_empty() {
            return Ok(listed);
        }
        if name == "localhost" {
            return Ok(vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            ]);
        }
        if self.host_resolver {
            return (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect);
        }
        let servers = self.nameservers.clone();
        let ips = self.within(move || lookup(&servers, &name))??;
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// [`crate::proxy::connect_any`] from inside the pod's namespace.
    pub fn connect(
        &self,
        addrs: &[SocketAddr],
        timeout: Duration,
    ) -> Result<(std::net::TcpStream, SocketAddr), ConnectFailed> {
        self.within(|| crate::proxy::connect_any(addrs, timeout))
            .unwrap_or_else(|error| Err(ConnectFailed { error, addr: None }))
    }
}

/// `nameserver` lines of a resolv.conf (at most three, as glibc).
fn parse_nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.split('%').next())
                .and_then(|a| a.parse().ok())
        })
        .take(3)
        .collect()
}

/// (name, address) pairs of a hosts file, names lower-cased.
fn parse_hosts(text: &str) -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut w = line.split_whitespace();
        let Some(Ok(ip)) = w.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in w {
            out.push((name.trim_end_matches('.').to_ascii_lowercase(), ip));
        }
    }
    out
}

/// A and AAAA records of `name` from the first nameserver that answers.
fn lookup(servers: &[IpAddr], name: &str) -> io::Result<Vec<IpAddr>> {
    if servers.is_empty() {
        return Err(io::Error::other(
            "the pod's resolv.conf names no nameserver",
        ));
    }
    let mut last = io::Error::other("no nameserver answered");
    for server in servers {
        let mut ips = Vec::new();
        let mut answered = true;
        for ty in [TYPE::A, TYPE::AAAA] {
            match query(*server, name, ty) {
                Ok(mut found) => ips.append(&mut found),
                Err(e) => {
                    answered = false;
                    last = e;
                    break;
                }
            }
        }
        if answered {
            if ips.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name} has no address in the pod's DNS"),
                ));
            }
            return Ok(ips);
        }
    }
    Err(last)
}

/// One query over UDP; the answer must come from the server asked, carry
/// our id and the question asked.
fn query(server: IpAddr, name: &str, ty: TYPE) -> io::Result<Vec<IpAddr>> {
    let bad = |e: simple_dns::SimpleDnsError| io::Error::new(io::ErrorKind::InvalidData, e);
    let id: u16 = rand_id();
    let mut q = Packet::new_query(id);
    q.set_flags(PacketFlag::RECURSION_DESIRED);
    q.questions.push(Question::new(
        Name::new(name).map_err(bad)?,
        QTYPE::TYPE(ty),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let bytes = q.build_bytes_vec().map_err(bad)?;
    let local: SocketAddr = match server {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect((server, 53))?;
    sock.set_read_timeout(Some(DNS_TIMEOUT))?;
    sock.send(&bytes)?;
    let mut buf = vec![0u8; DNS_MAX];
    loop {
        let n = sock.recv(&mut buf)?;
        let Ok(answer) = Packet::parse(&buf[..n]) else {
            continue;
        };
        if answer.id() != id
            || answer.questions.len() != 1
            || !answer.questions[0]
                .qname
                .to_string()
                .eq_ignore_ascii_case(name)
        {
            continue;
        }
        if answer.has_flags(PacketFlag::TRUNCATION) {
            return Err(io::Error::other(format!(
                "{name}: the pod's DNS answer is truncated"
            )));
        }
        return match answer.rcode() {
            RCODE::NoError => Ok(answer
                .answers
                .iter()
                .filter_map(|r| match &r.rdata {
                    RData::A(a) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
                    RData::AAAA(a) => Some(IpAddr::V6(Ipv6Addr::from(a.address))),
                    _ => None,
                })
                .collect()),
            RCODE::NameError => Ok(Vec::new()),
            other => Err(io::Error::other(format!(
                "{name}: the pod's DNS answered {other:?}"
            ))),
        };
    }
}

/// A query id nobody on the path can guess (getrandom).
fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 2 {
        // Fall back on the clock: the answer is still checked against the
        // question, and its addresses against the rules.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        return t as u16;
    }
    u16::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_and_hosts_are_read_as_the_engine_writes_them() {
        let r = "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\n\
                 nameserver fe80::1%eth0\noptions ndots:5\n";
        assert_eq!(
            parse_nameservers(r),
            vec![
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        let h = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n10.213.0.5\tweb  Web.Local. # pod\n";
        let got = parse_hosts(h);
        assert!(got.contains(&("web.local".into(), "10.213.0.5".parse().unwrap())));
        assert!(got.contains(&("localhost".into(), "127.0.0.1".parse().unwrap())));
        assert_eq!(got.len(), 3);
    }
}
