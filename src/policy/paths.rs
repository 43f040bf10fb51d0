//! Filesystem and exec matching: a path entry grants the file or the whole
//! subtree; an explicit deny wins over every allow.

use std::path::{Path, PathBuf};

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
    p.starts_with(rule)
}

fn clean(p: &FsPath) -> PathBuf {
    normalize_path(p.as_path())
}

impl Filesystem {
    fn covered_by<'a>(list: &'a [FsPath], p: &Path) -> Option<&'a FsPath> {
        list.iter().find(|r| covers(&clean(r), p))
    }

    /// Decide an access to absolute path `path` (normalised lexically
    /// first). `write` implies read, `exec` implies read.
    pub fn decide(&self, path: &Path, access: FsAccess) -> FsDecision {
        let p = normalize_path(path);
        if let Some(d) = Self::covered_by(&self.deny, &p) {
            return FsDecision::DeniedBy(clean(d));
        }
        let granted = match access {
            FsAccess::Read => {
                Self::covered_by(&self.read, &p).is_some()
                    || Self::covered_by(&self.write, &p).is_some()
                    || Self::covered_by(&self.exec, &p).is_some()
            }
            FsAccess::Write => Self::covered_by(&self.write, &p).is_some(),
            FsAccess::Exec => Self::covered_by(&self.exec, &p).is_some(),
        };
        if granted {
            FsDecision::Allow
        } else {
            FsDecision::NotGranted
        }
    }
}

impl Policy {
    /// May the sandbox execute the program at absolute path `program`?
    /// `path_var` is the sandbox's PATH, used for `exec.allow` entries that
    /// are bare names. Pure: nothing is looked up on disk.
    pub fn may_exec(&self, program: &Path, path_var: &str) -> bool {
        let p = normalize_path(program);
        match self.filesystem.decide(&p, FsAccess::Exec) {
            FsDecision::Allow => return true,
            FsDecision::DeniedBy(_) => return false,
            FsDecision::NotGranted => {}
        }
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
