use super::interp::interpreter;
use super::*;
use crate::learn::observe::{Event, FileUse};

fn file(p: &str, access: FileUse) -> Event {
    Event::File {
        path: PathBuf::from(p),
        access,
    }
}

fn gen(threshold: usize) -> Generalise {
    Generalise {
        base: crate::policy::builtin_run_default(),
        threshold,
        home: Some(PathBuf::from("/home/u")),
        implicit: vec![PathBuf::from("/opt/buntime")],
        proxy: None,
    }
}

#[test]
fn base_rules_stay_credentials_never_granted() {
    let seen = Observed {
        events: vec![
            file("/usr/lib/python3/os.py", FileUse::Read),
            file("/etc/shadow", FileUse::Read),
            file("/opt/buntime/python/x.py", FileUse::Read),
            file("/usr/bin/python3", FileUse::Exec),
            Event::Connect("8.8.4.4:8080".parse().unwrap()),
            Event::Connect("10.0.0.2:53".parse().unwrap()),
        ],
        attached: true,
        ..Observed::default()
    };
    let l = gen(3).learn(&seen).unwrap();
    let read: Vec<&str> = l
        .policy
        .filesystem
        .read
        .iter()
        .map(|p| p.as_str())
        .collect();
    assert!(
        read.contains(&"/usr") && !read.contains(&"/etc"),
        "{read:?}"
    );
    let exec: Vec<&str> = l
        .policy
        .filesystem
        .exec
        .iter()
        .map(|p| p.as_str())
        .collect();
    assert_eq!(exec, ["/usr/bin"]);
    assert!(l
        .summary
        .not_granted
        .iter()
        .any(|n| n.what == "/etc/shadow"));
    assert_eq!(l.summary.hosts, ["8.8.4.4:8080"]);
    assert_eq!(l.policy.network.mode, NetMode::Proxy);
    assert!(l.policy.filesystem.write.is_empty());
}

#[test]
fn many_files_make_a_directory_but_never_home() {
    let d = std::env::temp_dir().join(format!("learn-gen-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let mut events = Vec::new();
    for i in 0..4 {
        let f = d.join(format!("f{i}"));
        std::fs::write(&f, "x").unwrap();
        events.push(Event::File {
            path: f,
            access: FileUse::Read,
        });
    }
    events.push(file("/nonexistent/learn/x", FileUse::Read));
    let seen = Observed {
        events,
        attached: true,
        ..Observed::default()
    };
    let mut g = gen(3);
    // The temp dir is below /tmp, the sandbox's own: use another base.
    g.base.filesystem.read.clear();
    g.base.filesystem.write.clear();
    let l = g.learn(&seen).unwrap();
    let read: Vec<&str> = l
        .policy
        .filesystem
        .read
        .iter()
        .map(|p| p.as_str())
        .collect();
    if d.starts_with("/tmp") {
        assert_eq!(read.len(), 4, "{read:?}");
    } else {
        assert_eq!(read, [d.to_str().unwrap()]);
    }
    g.home = Some(d.clone());
    let l = g.learn(&seen).unwrap();
    assert_eq!(l.policy.filesystem.read.len(), 4);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_elf_program_brings_its_loader() {
    let i = interpreter(Path::new("/bin/sh")).expect("/bin/sh has an interpreter");
    assert!(i.0.to_string_lossy().contains("ld-"), "{i:?}");
    assert!(!i.1);
}

/// A directory outside /tmp (the sandbox's own tree).
fn workdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("learn-gen-{tag}-"))
        .tempdir_in("/var/tmp")
        .unwrap()
}

#[test]
fn a_fifo_or_a_device_run_as_a_program_is_never_opened() {
    let d = workdir("fifo");
    let fifo = d.path().join("f");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o777)).unwrap();
    let seen = Observed {
        events: vec![
            Event::File {
                path: fifo,
                access: FileUse::Exec,
            },
            file("/dev/watchdog", FileUse::Exec),
            file("/proc/self/exe", FileUse::Exec),
        ],
        attached: true,
        ..Observed::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let g = gen(3);
    std::thread::spawn(move || {
        let _ = tx.send(g.with_interpreters(&seen).len());
    });
    let n = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("blocked opening a FIFO");
    assert_eq!(n, 3, "no interpreter read from any of them");
}

#[test]
fn only_what_the_sandbox_may_read_is_read_for_it() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let d = workdir("mode");
    let prog = d.path().join("prog");
    std::fs::write(&prog, "#!/opt/secret/interp\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        interpreter(&prog),
        None,
        "root's own file read for the sandbox"
    );
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        interpreter(&prog),
        Some((PathBuf::from("/opt/secret/interp"), true))
    );
    // Nor through a directory it may not search.
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(interpreter(&prog), None);
    // Root's credentials are back on this thread.
    assert!(std::fs::File::open(&prog).is_ok());
}

#[test]
fn home_credentials_are_asked_for_not_granted() {
    let seen = Observed {
        events: vec![
            file("/home/u/.ssh/id_ed25519", FileUse::Read),
            file("/home/bob/.aws/credentials", FileUse::Read),
            file("/root/.kube/config", FileUse::Read),
            file("/home/bob/.docker/config.json", FileUse::Read),
            file("/home/bob/.netrc", FileUse::Read),
            file("/home/bob/.git-credentials", FileUse::Read),
            file("/home/bob/.config/gcloud/credentials.db", FileUse::Read),
            file("/home/bob/.gnupg/private-keys-v1.d", FileUse::List),
        ],
        attached: true,
        ..Observed::default()
    };
    let l = gen(3).learn(&seen).unwrap();
    assert_eq!(
        l.summary.not_granted.len(),
        8,
        "{:?}",
        l.summary.not_granted
    );
    assert!(
        l.policy.filesystem.read.is_empty(),
        "{:?}",
        l.policy.filesystem.read
    );
}

#[test]
fn a_grant_covering_a_home_keeps_its_credentials_denied() {
    let mut g = gen(3);
    g.base.filesystem.read = vec![FsPath::new("/home/bob").unwrap()];
    let seen = Observed {
        events: vec![file("/home/bob/notes.txt", FileUse::Read)],
        attached: true,
        ..Observed::default()
    };
    let l = g.learn(&seen).unwrap();
    let deny: Vec<&str> = l
        .policy
        .filesystem
        .deny
        .iter()
        .map(|d| d.as_str())
        .collect();
    assert!(deny.contains(&"/home/bob/.ssh"), "{deny:?}");
    assert!(deny.contains(&"/home/bob/.aws"), "{deny:?}");
}

#[test]
fn a_symlink_is_judged_by_its_target() {
    let d = workdir("link");
    let base = d.path();
    std::fs::create_dir_all(base.join("home/.ssh")).unwrap();
    std::fs::write(base.join("home/.ssh/id_ed25519"), "key").unwrap();
    std::fs::create_dir_all(base.join("data")).unwrap();
    std::fs::write(base.join("data/real.txt"), "x").unwrap();
    std::fs::create_dir_all(base.join("work")).unwrap();
    let link = |name: &str, to: &Path| {
        std::os::unix::fs::symlink(to, base.join("work").join(name)).unwrap();
        base.join("work").join(name)
    };
    let notes = link("notes.txt", &base.join("home/.ssh/id_ed25519"));
    let keys = link("keys", &base.join("home/.ssh"));
    let fine = link("fine.txt", &base.join("data/real.txt"));
    let broken = link("broken", &base.join("nowhere"));
    let mut g = gen(8);
    g.home = Some(base.join("home"));
    g.base.filesystem.read.clear();
    g.base.filesystem.write.clear();
    let seen = Observed {
        events: vec![
            Event::File {
                path: notes.clone(),
                access: FileUse::Read,
            },
            Event::File {
                path: keys.join("id_ed25519"),
                access: FileUse::Read,
            },
            Event::File {
                path: fine.clone(),
                access: FileUse::Read,
            },
            Event::File {
                path: broken.join("x"),
                access: FileUse::Create,
            },
        ],
        attached: true,
        ..Observed::default()
    };
    let l = g.learn(&seen).unwrap();
    let read: Vec<&str> = l
        .policy
        .filesystem
        .read
        .iter()
        .map(|p| p.as_str())
        .collect();
    let real = std::fs::canonicalize(base.join("data/real.txt")).unwrap();
    assert_eq!(read, [real.to_str().unwrap()], "{:?}", l.summary);
    assert!(l.policy.filesystem.write.is_empty(), "{:?}", l.summary);
    let refused: Vec<&str> = l
        .summary
        .not_granted
        .iter()
        .map(|n| n.what.as_str())
        .collect();
    for p in [&notes, &keys.join("id_ed25519"), &broken.join("x")] {
        assert!(
            refused.contains(&p.to_str().unwrap()),
            "{p:?} in {refused:?}"
        );
    }
}

#[test]
fn internal_addresses_only_when_the_base_allows_them() {
    let seen = Observed {
        events: vec![
            Event::Connect("127.0.0.1:8080".parse().unwrap()),
            Event::Connect("10.1.2.3:443".parse().unwrap()),
            Event::Connect("169.254.169.254:80".parse().unwrap()),
            Event::Connect("[fe80::1]:22".parse().unwrap()),
            Event::Connect("192.168.1.1:80".parse().unwrap()),
            Event::Connect("1.1.1.1:443".parse().unwrap()),
        ],
        attached: true,
        ..Observed::default()
    };
    let l = gen(3).learn(&seen).unwrap();
    assert_eq!(l.summary.hosts, ["1.1.1.1:443"]);
    assert_eq!(
        l.summary.not_granted.len(),
        5,
        "{:?}",
        l.summary.not_granted
    );
    let mut g = gen(3);
    g.base.network.mode = NetMode::Proxy;
    g.base.network.allow = vec![NetRule::parse("127.0.0.1:8080").unwrap()];
    let l = g.learn(&seen).unwrap();
    assert_eq!(l.summary.hosts, ["1.1.1.1:443", "127.0.0.1:8080"]);
}

/// Documentation addresses are never routed: never learned, in any form
/// the classifier reaches them by, unless the base allows one.
#[test]
fn documentation_addresses_are_not_learned_unless_the_base_allows_one() {
    let docs = [
        "192.0.2.1:443",
        "198.51.100.7:443",
        "203.0.113.200:443",
        "[2001:db8::1]:443",
        "[3fff::1]:443",
        "[3fff:fff:ffff::1]:443",
        "[::ffff:198.51.100.7]:443",
        "[64:ff9b::c000:201]:443",
    ];
    // Next to them, but not documentation: learned.
    let public = [
        "203.0.114.1:443",
        "[3ffe::1]:443",
        "[3fff:1000::1]:443",
        "[4000::1]:443",
    ];
    let seen = Observed {
        events: docs
            .iter()
            .chain(&public)
            .map(|a| Event::Connect(a.parse().unwrap()))
            .collect(),
        attached: true,
        ..Observed::default()
    };
    let l = gen(3).learn(&seen).unwrap();
    let mut hosts = l.summary.hosts.clone();
    hosts.sort();
    let mut want: Vec<String> = public.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(hosts, want, "{:?}", l.summary.not_granted);
    assert_eq!(
        l.summary.not_granted.len(),
        docs.len(),
        "{:?}",
        l.summary.not_granted
    );
    for n in &l.summary.not_granted {
        assert!(
            n.why
                .starts_with("a documentation address (reserved, never routed)"),
            "{}: {}",
            n.what,
            n.why
        );
    }
    let mut g = gen(3);
    g.base.network.mode = NetMode::Proxy;
    g.base.network.allow = vec![NetRule::parse("198.51.100.7:443").unwrap()];
    let l = g.learn(&seen).unwrap();
    assert!(
        l.summary.hosts.iter().any(|h| h == "198.51.100.7:443"),
        "{:?}",
        l.summary.hosts
    );
    assert_eq!(l.summary.not_granted.len(), docs.len() - 2);
}

#[test]
fn created_files_grant_their_directory() {
    let seen = Observed {
        events: vec![file("/srv/out/result.txt", FileUse::Create)],
        attached: true,
        ..Observed::default()
    };
    let l = gen(3).learn(&seen).unwrap();
    let write: Vec<&str> = l
        .policy
        .filesystem
        .write
        .iter()
        .map(|p| p.as_str())
        .collect();
    assert_eq!(write, ["/srv/out"]);
}

#[test]
fn names_asked_of_a_proxy_are_judged_by_their_address_too() {
    let proxied = |host: &str, addr: &str| Event::Proxied {
        host: host.into(),
        addr: addr.parse().unwrap(),
    };
    let seen = Observed {
        events: vec![
            proxied("pypi.org:443", "151.101.0.223:443"),
            proxied("localhost:8080", "127.0.0.1:8080"),
            proxied("intranet.example:80", "10.1.2.3:80"),
        ],
        attached: true,
        ..Observed::default()
    };
    // A public name by name; names of internal addresses not granted.
    let l = gen(3).learn(&seen).unwrap();
    assert_eq!(l.summary.hosts, ["pypi.org:443"]);
    let not: Vec<&str> = l
        .summary
        .not_granted
        .iter()
        .map(|n| n.what.as_str())
        .collect();
    assert_eq!(not, ["intranet.example:80", "localhost:8080"]);
    assert!(l.summary.not_granted[1].why.contains("127.0.0.1:8080"));
    // The address alone in the base: not the name (a localhost name is
    // the loopback address to the rules, so that one is).
    let mut g = gen(3);
    g.base.network.mode = NetMode::Proxy;
    g.base.network.allow = vec![
        NetRule::parse("127.0.0.1:8080").unwrap(),
        NetRule::parse("10.1.2.3:80").unwrap(),
    ];
    let l = g.learn(&seen).unwrap();
    assert_eq!(
        l.summary.hosts,
        ["127.0.0.1:8080", "localhost:8080", "pypi.org:443"]
    );
    assert_eq!(l.summary.not_granted[0].what, "intranet.example:80");
    // The name and the address: both, the address's entry with the name.
    g.base
        .network
        .allow
        .push(NetRule::parse("intranet.example:80").unwrap());
    let l = g.learn(&seen).unwrap();
    assert_eq!(
        l.summary.hosts,
        [
            "10.1.2.3:80",
            "127.0.0.1:8080",
            "intranet.example:80",
            "localhost:8080",
            "pypi.org:443"
        ]
    );
}

#[test]
fn a_name_of_a_documentation_address_is_not_granted() {
    let seen = Observed {
        events: vec![Event::Proxied {
            host: "docs.example:443".into(),
            addr: "203.0.113.5:443".parse().unwrap(),
        }],
        attached: true,
        ..Observed::default()
    };
    let l = gen(3).learn(&seen).unwrap();
    assert!(l.summary.hosts.is_empty(), "{:?}", l.summary.hosts);
    let n = &l.summary.not_granted[0];
    assert_eq!(n.what, "docs.example:443");
    assert!(n.why.contains("documentation"), "{}", n.why);
}

#[test]
fn connects_to_the_learning_proxy_are_not_learned_in_either_address_form() {
    let seen = Observed {
        events: vec![
            Event::Connect("127.0.0.1:41000".parse().unwrap()),
            Event::Connect("[::ffff:127.0.0.1]:41000".parse().unwrap()),
            Event::Connect("127.0.0.1:41001".parse().unwrap()),
        ],
        attached: true,
        proxy: Some(41000),
        ..Observed::default()
    };
    let mut g = gen(3);
    g.proxy = seen.proxy;
    let l = g.learn(&seen).unwrap();
    let what: Vec<&str> = l
        .summary
        .not_granted
        .iter()
        .map(|n| n.what.as_str())
        .collect();
    assert_eq!(what, ["127.0.0.1:41001"]);
    assert!(l.summary.hosts.is_empty());
}
