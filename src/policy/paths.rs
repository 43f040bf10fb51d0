//! Filesystem and exec matching: a path entry grants the file or the whole
//! subtree; an explicit deny wins over every allow.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

use super::model::{normalize_path, Filesystem, FsPath, Policy};

/// The kind of filesystem access asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsAccess {
    Read,
    Write,
    Exec,
}

/// The outcome of a filesystem check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsDecision {
    Allow,
    /// A `filesystem.deny` entry covers the path.
    DeniedBy(PathBuf),
    /// No entry grants this access.
    NotGranted,
}

/// Does rule path `rule` grant `p` (the same path or anything below it)?
/// Component-wise, so `/usr` covers `/usr/bin` but not `/usrx`.
pub fn covers(rule: &Path, p: &Path) -> bool {
    match (canonical(rule), canonical(p)) {
        (Some(r), Some(q)) => below(r, q).is_some(),
        _ => p.starts_with(rule),
    }
}

/// The bytes of `p` when it is in the form `normalize_path` gives (`/`,
/// or `/a/b`: no empty, `.` or `..` component, no trailing `/`): there a
/// byte comparison answers what a component-wise one would, without
/// walking components (every request compares against every entry).
fn canonical(p: &Path) -> Option<&[u8]> {
    use std::os::unix::ffi::OsStrExt;
    let b = p.as_os_str().as_bytes();
    if b == b"/" {
        return Some(b);
    }
    let mut parts = b.strip_prefix(b"/")?.split(|&c| c == b'/');
    parts
        .all(|c| !c.is_empty() && c != b"." && c != b"..")
        .then_some(b)
}

/// What is left of canonical `p` below canonical `rule` (empty when they
/// are the same path), `None` when `p` is not `rule` or beneath it.
fn below<'a>(rule: &[u8], p: &'a [u8]) -> Option<&'a [u8]> {
    if rule == b"/" {
        return Some(&p[1..]);
    }
    match p.strip_prefix(rule)? {
        [] => Some(&[]),
        [b'/', rest @ ..] => Some(rest),
        _ => None,
    }
}

/// A `filesystem.deny` pattern, `/dir/prefix*` (a `*` ending the last
/// component, nowhere else): its directory and the name prefix. `None` for
/// an ordinary path.
pub fn deny_pattern(rule: &Path) -> Option<(&Path, &[u8])> {
    use std::os::unix::ffi::OsStrExt;
    let prefix = rule.file_name()?.as_bytes().strip_suffix(b"*")?;
    Some((rule.parent()?, prefix))
}

/// Does deny entry `rule` cover `p`? An ordinary path covers itself and
/// its subtree; a pattern `/dir/prefix*` covers every entry of `/dir`
/// whose name starts with `prefix` (`/etc/shadow*`: `/etc/shadow`,
/// `/etc/shadow-`, `/etc/shadow.bak`), and their subtrees.
pub fn deny_covers(rule: &Path, p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    match deny_pattern(rule) {
        None => covers(rule, p),
        Some((dir, prefix)) => match (canonical(dir), canonical(p)) {
            (Some(d), Some(q)) => below(d, q)
                .and_then(|rest| rest.split(|&c| c == b'/').next())
                .is_some_and(|first| !first.is_empty() && first.starts_with(prefix)),
            _ => p
                .strip_prefix(dir)
                .ok()
                .and_then(|rest| rest.components().next())
                .is_some_and(|c| c.as_os_str().as_bytes().starts_with(prefix)),
        },
    }
}

/// `p` normalised. Every request compares against every entry, so an
/// entry already normal (absolute, no `..`: how a loaded policy keeps
/// them) is borrowed, not copied: the comparisons go by components,
/// which skip `.` and repeated or trailing `/` already.
fn clean(p: &FsPath) -> Cow<'_, Path> {
    let path = p.as_path();
    if path.is_absolute() && !path.components().any(|c| c == Component::ParentDir) {
        return Cow::Borrowed(path);
    }
    Cow::Owned(normalize_path(path))
}

/// The list of `filesystem` an entry that grants an access is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsField {
    Read,
    Write,
    Exec,
}

impl FsField {
    pub fn as_str(self) -> &'static str {
        match self {
            FsField::Read => "read",
            FsField::Write => "write",
            FsField::Exec => "exec",
        }
    }
}

/// The entry that decides an access, found in one walk of the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsMatch {
    /// The `filesystem.deny` entry (normalised) that covers the path.
    Denied(PathBuf),
    /// The first entry (normalised) that grants the access, and its list.
    Granted(FsField, PathBuf),
    /// No entry is about it.
    Nothing,
}

impl Filesystem {
    /// The deny entry covering `path`, else the first entry granting
    /// `access` to it (`write` implies read, `exec` implies read; for a
    /// read, `read` then `write` then `exec` are searched).
    pub fn find(&self, path: &Path, access: FsAccess) -> FsMatch {
        let p = match canonical(path) {
            Some(_) => Cow::Borrowed(path),
            None => Cow::Owned(normalize_path(path)),
        };
        if let Some(d) = self.deny.iter().find(|d| deny_covers(&clean(d), &p)) {
            return FsMatch::Denied(normalize_path(d.as_path()));
        }
        let lists: &[(FsField, &Vec<FsPath>)] = match access {
            FsAccess::Read => &[
                (FsField::Read, &self.read),
                (FsField::Write, &self.write),
                (FsField::Exec, &self.exec),
            ],
            FsAccess::Write => &[(FsField::Write, &self.write)],
            FsAccess::Exec => &[(FsField::Exec, &self.exec)],
        };
        lists
            .iter()
            .find_map(|(field, list)| {
                let t = list.iter().map(clean).find(|t| covers(t, &p))?;
                Some(FsMatch::Granted(*field, normalize_path(&t)))
            })
            .unwrap_or(FsMatch::Nothing)
    }

    /// Decide an access to absolute path `path` (normalised lexically
    /// first). `write` implies read, `exec` implies read.
    pub fn decide(&self, path: &Path, access: FsAccess) -> FsDecision {
        match self.find(path, access) {
            FsMatch::Denied(d) => FsDecision::DeniedBy(d),
            FsMatch::Granted(..) => FsDecision::Allow,
            FsMatch::Nothing => FsDecision::NotGranted,
        }
    }

    /// Does a deny entry lie inside `tree`? Symlinks beneath a granted
    /// tree may be followed only when none does (a link could reach it).
    pub fn denies_inside(&self, tree: &Path) -> bool {
        self.deny.iter().any(|d| covers(tree, &clean(d)))
    }
}

/// A `read`/`write`/`exec` entry is a path: patterns are for `deny` only
/// (Landlock grants whole trees, it has no patterns).
pub fn check_grant_path(s: &str) -> Result<(), String> {
    if s.contains('*') {
        return Err(format!(
            "expected a path, got {s:?}: a \"*\" pattern is only supported in filesystem.deny"
        ));
    }
    Ok(())
}

/// A `deny` entry is a path, or a pattern with one `*` ending its last
/// component after part of a name (`/etc/shadow*`).
pub fn check_deny_path(s: &str) -> Result<(), String> {
    let Some(star) = s.find('*') else {
        return Ok(());
    };
    let bad = star + 1 != s.trim_end_matches('/').len()
        || s[..star].ends_with('/')
        || s[..star].is_empty();
    if bad {
        return Err(format!(
            "expected a path or a name prefix ending in \"*\" (as in \"/etc/shadow*\"), got {s:?}"
        ));
    }
    Ok(())
}

impl Filesystem {
    /// The first entry whose `*` is misplaced: its JSON pointer and why.
    pub fn pattern_problem(&self) -> Option<(String, String)> {
        for (list, rules) in [
            ("read", &self.read),
            ("write", &self.write),
            ("exec", &self.exec),
        ] {
            for (i, r) in rules.iter().enumerate() {
                if let Err(m) = check_grant_path(r.as_str()) {
                    return Some((format!("/filesystem/{list}/{i}"), m));
                }
            }
        }
        self.deny.iter().enumerate().find_map(|(i, r)| {
            check_deny_path(r.as_str())
                .err()
                .map(|m| (format!("/filesystem/deny/{i}"), m))
        })
    }
}

/// Credential files of an ordinary Linux host: a path that stands for
/// each, and the `filesystem.deny` entry that keeps it out. `policy
/// check` warns when a rule covers one and no deny entry removes it.
pub const KNOWN_SECRETS: &[(&str, &str)] = &[
    ("/etc/shadow", "/etc/shadow*"),
    ("/etc/shadow-", "/etc/shadow*"),
    ("/etc/gshadow", "/etc/gshadow*"),
    ("/etc/gshadow-", "/etc/gshadow*"),
    ("/etc/security/opasswd", "/etc/security/opasswd*"),
    ("/etc/krb5.keytab", "/etc/krb5.keytab"),
    ("/etc/ssh/ssh_host_ed25519_key", "/etc/ssh"),
    ("/etc/ssl/private", "/etc/ssl/private"),
    ("/etc/pki/tls/private", "/etc/pki/tls/private"),
    ("/etc/letsencrypt/archive", "/etc/letsencrypt"),
    ("/etc/ipsec.secrets", "/etc/ipsec.secrets"),
    ("/etc/ppp/chap-secrets", "/etc/ppp/chap-secrets"),
    ("/etc/ppp/pap-secrets", "/etc/ppp/pap-secrets"),
    ("/etc/sudoers", "/etc/sudoers"),
    ("/etc/sudoers.d", "/etc/sudoers.d"),
    ("/root/.ssh", "/root"),
];

/// Credential files kept in a home directory, relative to it: SSH keys,
/// cloud, cluster and registry credentials, GnuPG, `.netrc`. Learning
/// (`docs/learn.md`) never grants them, under any home it knows of: the
/// caller's `$HOME`, `/root` and every `/home/NAME`.
pub const HOME_SECRETS: &[&str] = &[
    ".ssh",
    ".aws",
    ".gnupg",
    ".kube/config",
    ".docker/config.json",
    ".netrc",
    ".git-credentials",
    ".config/gcloud",
    ".azure",
    ".pgpass",
    ".config/gh/hosts.yml",
];

/// The home directory `p` lies in, if it lies in one learning knows of:
/// `home` (the caller's `$HOME`), `/root`, or `/home/NAME`.
pub fn home_of(p: &Path, home: Option<&Path>) -> Option<PathBuf> {
    if let Some(h) = home.filter(|h| h.is_absolute() && *h != Path::new("/")) {
        let h = normalize_path(h);
        if p.starts_with(&h) {
            return Some(h);
        }
    }
    if p.starts_with("/root") {
        return Some(PathBuf::from("/root"));
    }
    let mut c = p.strip_prefix("/home").ok()?.components();
    match c.next()? {
        std::path::Component::Normal(name) => Some(Path::new("/home").join(name)),
        _ => None,
    }
}

/// Why `p` (absolute, normalised) is a credential file: the deny entry
/// that stands for it, from [`KNOWN_SECRETS`] or a home's
/// [`HOME_SECRETS`]. `home` is the caller's `$HOME`, if known.
pub fn credential(p: &Path, home: Option<&Path>) -> Option<String> {
    if let Some((_, deny)) = KNOWN_SECRETS
        .iter()
        .find(|(_, deny)| deny_covers(Path::new(deny), p))
    {
        return Some((*deny).to_string());
    }
    let h = home_of(p, home)?;
    HOME_SECRETS
        .iter()
        .map(|rel| h.join(rel))
        .find(|s| p.starts_with(s))
        .map(|s| s.display().to_string())
}

/// A rule that gives the sandbox a known secret ([`KNOWN_SECRETS`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretExposure {
    /// `read`, `write` or `exec`.
    pub list: &'static str,
    /// The rule's index in that list.
    pub index: usize,
    pub rule: PathBuf,
    pub secret: &'static str,
    /// The deny entry that would remove it.
    pub deny: &'static str,
}

impl Filesystem {
    /// Every (rule, secret) where an absolute read/write/exec rule covers
    /// a known secret that no deny entry removes. Relative rules are left
    /// out: what they cover depends on where the policy is used.
    pub fn exposed_secrets(&self) -> Vec<SecretExposure> {
        let mut out = Vec::new();
        for (list, rules) in [
            ("read", &self.read),
            ("write", &self.write),
            ("exec", &self.exec),
        ] {
            for (index, r) in rules.iter().enumerate() {
                if !r.is_absolute() {
                    continue;
                }
                let rule = clean(r);
                for &(secret, deny) in KNOWN_SECRETS {
                    let p = Path::new(secret);
                    if covers(&rule, p) && !self.deny.iter().any(|d| deny_covers(&clean(d), p)) {
                        out.push(SecretExposure {
                            list,
                            index,
                            rule: normalize_path(&rule),
                            secret,
                            deny,
                        });
                    }
                }
            }
        }
        out
    }
}

impl Policy {
    /// May the sandbox execute the program at absolute path `program`?
    /// `path_var` is the sandbox's PATH, used for `exec.allow` entries that
    /// are bare names. Pure: nothing is looked up on disk.
    pub fn may_exec(&self, program: &Path, path_var: &str) -> bool {
        let p = normalize_path(program);
        match self.filesystem.find(&p, FsAccess::Exec) {
            FsMatch::Granted(..) => true,
            FsMatch::Denied(_) => false,
            FsMatch::Nothing => self.exec_allows(&p, path_var),
        }
    }

    /// Does an `exec.allow` entry name `p` (absolute, normalised)?
    pub fn exec_allows(&self, p: &Path, path_var: &str) -> bool {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parent = p.parent().unwrap_or(Path::new("/"));
        self.exec.allow.iter().any(|prog| {
            if prog.is_name() {
                prog.as_str() == name
                    && path_var
                        .split(':')
                        .filter(|d| d.starts_with('/'))
                        .any(|d| normalize_path(Path::new(d)) == parent)
            } else {
                normalize_path(Path::new(prog.as_str())) == p
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte comparison answers as the component-wise one, and paths
    /// not in normal form still go by components.
    #[test]
    fn byte_and_component_comparisons_agree() {
        let paths = [
            "/",
            "/usr",
            "/usr/",
            "/usrx",
            "/usr/bin",
            "/usr//bin",
            "/usr/./bin",
            "/usr/bin/x",
            "/etc/shadow",
            "/etc/shadow-",
            "/etc",
            "/e",
        ];
        for r in paths {
            for p in paths {
                let (r, p) = (Path::new(r), Path::new(p));
                assert_eq!(covers(r, p), p.starts_with(r), "{r:?} {p:?}");
            }
        }
        let pat = Path::new("/etc/shadow*");
        for (p, want) in [
            ("/etc/shadow", true),
            ("/etc/shadow.bak/x", true),
            ("/etc/shado", false),
            ("/etc", false),
            ("/etc//shadow", true),
            ("/etcx/shadow", false),
        ] {
            assert_eq!(deny_covers(pat, Path::new(p)), want, "{p}");
        }
        assert!(deny_covers(Path::new("/s*"), Path::new("/srv/x")));
        assert!(!deny_covers(Path::new("/s*"), Path::new("/")));
    }
    use crate::policy::model::Program;

    fn fs(read: &[&str], write: &[&str], exec: &[&str], deny: &[&str]) -> Filesystem {
        let v = |l: &[&str]| l.iter().map(|s| FsPath::new(*s).unwrap()).collect();
        Filesystem {
            read: v(read),
            write: v(write),
            exec: v(exec),
            deny: v(deny),
        }
    }

    #[test]
    fn subtree_and_exact_file() {
        let f = fs(&["/usr", "/etc/hosts"], &[], &[], &[]);
        assert_eq!(
            f.decide(Path::new("/usr"), FsAccess::Read),
            FsDecision::Allow
        );
        assert_eq!(
            f.decide(Path::new("/usr/lib/x.so"), FsAccess::Read),
            FsDecision::Allow
        );
        assert_eq!(
            f.decide(Path::new("/usrx/a"), FsAccess::Read),
            FsDecision::NotGranted
        );
        assert_eq!(
            f.decide(Path::new("/etc/hosts"), FsAccess::Read),
            FsDecision::Allow
        );
        assert_eq!(
            f.decide(Path::new("/etc/passwd"), FsAccess::Read),
            FsDecision::NotGranted
        );
        assert_eq!(
            f.decide(Path::new("/usr/x"), FsAccess::Write),
            FsDecision::NotGranted
        );
    }

    #[test]
    fn dot_dot_cannot_escape_a_grant() {
        let f = fs(&["/tmp/work"], &[], &[], &[]);
        assert_eq!(
            f.decide(Path::new("/tmp/work/../../etc/shadow"), FsAccess::Read),
            FsDecision::NotGranted
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let f = fs(
            &["/etc"],
            &["/data"],
            &["/usr/bin"],
            &["/etc/shadow", "/data/secret"],
        );
        assert_eq!(
            f.decide(Path::new("/etc/shadow"), FsAccess::Read),
            FsDecision::DeniedBy(PathBuf::from("/etc/shadow"))
        );
        assert_eq!(
            f.decide(Path::new("/data/secret/key"), FsAccess::Write),
            FsDecision::DeniedBy(PathBuf::from("/data/secret"))
        );
        assert_eq!(
            f.decide(Path::new("/data/x"), FsAccess::Write),
            FsDecision::Allow
        );
    }

    #[test]
    fn write_and_exec_imply_read() {
        let f = fs(&[], &["/tmp"], &["/usr/bin"], &[]);
        assert_eq!(
            f.decide(Path::new("/tmp/a"), FsAccess::Read),
            FsDecision::Allow
        );
        assert_eq!(
            f.decide(Path::new("/usr/bin/ls"), FsAccess::Read),
            FsDecision::Allow
        );
        assert_eq!(
            f.decide(Path::new("/usr/bin/ls"), FsAccess::Exec),
            FsDecision::Allow
        );
        assert_eq!(
            f.decide(Path::new("/tmp/a"), FsAccess::Exec),
            FsDecision::NotGranted
        );
    }

    #[test]
    fn deny_patterns_cover_names_with_the_prefix() {
        let f = fs(
            &["/etc"],
            &[],
            &[],
            &["/etc/shadow*", "/etc/security/opasswd*"],
        );
        let by = FsDecision::DeniedBy(PathBuf::from("/etc/shadow*"));
        for p in [
            "/etc/shadow",
            "/etc/shadow-",
            "/etc/shadow.bak",
            "/etc/shadow.d/x",
        ] {
            assert_eq!(f.decide(Path::new(p), FsAccess::Read), by, "{p}");
        }
        assert_eq!(
            f.decide(Path::new("/etc/security/opasswd.old"), FsAccess::Read),
            FsDecision::DeniedBy(PathBuf::from("/etc/security/opasswd*"))
        );
        // Only the entries of that directory; not the directory itself,
        // nor a deeper name that happens to start the same way.
        for p in ["/etc", "/etc/gshadow", "/etc/x/shadow", "/etc/passwd"] {
            assert_eq!(
                f.decide(Path::new(p), FsAccess::Read),
                FsDecision::Allow,
                "{p}"
            );
        }
        assert_eq!(deny_pattern(Path::new("/etc/shadow")), None);
        assert_eq!(
            deny_pattern(Path::new("/etc/shadow*")),
            Some((Path::new("/etc"), &b"shadow"[..]))
        );
    }

    #[test]
    fn stars_only_end_deny_entries() {
        for ok in ["/etc/shadow*", "/etc/x", "rel/key*", "/etc/shadow*/"] {
            assert!(check_deny_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/etc/*",
            "/*",
            "*",
            "/etc/*/key",
            "/etc/sh*dow",
            "/etc/shadow**",
        ] {
            assert!(check_deny_path(bad).is_err(), "{bad}");
        }
        assert!(check_grant_path("/etc/ssl*").is_err());
        let f = fs(&["/etc"], &[], &["/usr/*"], &["/etc/shadow*"]);
        let (ptr, msg) = f.pattern_problem().unwrap();
        assert_eq!(ptr, "/filesystem/exec/0");
        assert!(msg.contains("only supported in filesystem.deny"), "{msg}");
    }

    #[test]
    fn secrets_a_rule_exposes_are_named_with_the_deny_that_removes_them() {
        let f = fs(
            &["/etc", "/usr", "rel"],
            &["/etc/ssh"],
            &[],
            &["/etc/shadow", "/etc/ssl/private"],
        );
        let got = f.exposed_secrets();
        let has = |list: &str, secret: &str, deny: &str| {
            got.iter()
                .any(|e| e.list == list && e.secret == secret && e.deny == deny)
        };
        // /etc/shadow is denied; its backup is not.
        assert!(!got.iter().any(|e| e.secret == "/etc/shadow"), "{got:?}");
        assert!(has("read", "/etc/shadow-", "/etc/shadow*"), "{got:?}");
        assert!(
            has("read", "/etc/krb5.keytab", "/etc/krb5.keytab"),
            "{got:?}"
        );
        assert!(
            has("write", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh"),
            "{got:?}"
        );
        assert!(
            !got.iter().any(|e| e.secret == "/etc/ssl/private"),
            "{got:?}"
        );
        assert!(got.iter().all(|e| e.rule.starts_with("/etc")), "{got:?}");
        // Everything denied: nothing to say.
        let all: Vec<&str> = KNOWN_SECRETS.iter().map(|(_, d)| *d).collect();
        assert!(fs(&["/"], &[], &[], &all).exposed_secrets().is_empty());
    }

    #[test]
    fn home_credentials_under_any_home() {
        let home = Some(Path::new("/srv/users/u"));
        for (p, deny) in [
            ("/root/.ssh/id_ed25519", "/root"),
            ("/home/bob/.ssh/id_rsa", "/home/bob/.ssh"),
            ("/home/bob/.aws/credentials", "/home/bob/.aws"),
            ("/home/bob/.gnupg", "/home/bob/.gnupg"),
            ("/home/bob/.kube/config", "/home/bob/.kube/config"),
            (
                "/home/bob/.docker/config.json",
                "/home/bob/.docker/config.json",
            ),
            ("/home/bob/.netrc", "/home/bob/.netrc"),
            ("/home/bob/.git-credentials", "/home/bob/.git-credentials"),
            ("/home/bob/.config/gcloud/x.db", "/home/bob/.config/gcloud"),
            ("/srv/users/u/.ssh/id_rsa", "/srv/users/u/.ssh"),
        ] {
            assert_eq!(credential(Path::new(p), home).as_deref(), Some(deny), "{p}");
        }
        for p in [
            "/home/bob/notes.txt",
            "/home/bob/.sshx",
            "/home/bob/.kube/cache",
            "/srv/.ssh/x",
            "/home",
        ] {
            assert_eq!(credential(Path::new(p), home), None, "{p}");
        }
    }

    #[test]
    fn exec_programs_by_path_and_name() {
        let mut p = Policy::default();
        p.exec.allow = vec![
            Program::new("python3").unwrap(),
            Program::new("/bin/sh").unwrap(),
        ];
        p.filesystem.deny = vec![FsPath::new("/opt/evil").unwrap()];
        let path = "/usr/local/bin:/usr/bin";
        assert!(p.may_exec(Path::new("/usr/bin/python3"), path));
        assert!(p.may_exec(Path::new("/bin/sh"), path));
        assert!(!p.may_exec(Path::new("/tmp/python3"), path));
        assert!(!p.may_exec(Path::new("/usr/bin/perl"), path));
        p.filesystem.exec = vec![FsPath::new("/opt").unwrap()];
        assert!(p.may_exec(Path::new("/opt/tool/bin/x"), path));
        assert!(!p.may_exec(Path::new("/opt/evil/x"), path));
    }
}
