use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::audit::{AuditRecord, Kind, Verdict};

fn root() -> (tempfile::TempDir, Root) {
    let d = tempfile::tempdir().expect("tempdir");
    let r = Root::open(&d.path().join("root"), false).expect("root");
    (d, r)
}

fn record(kind: Kind, subject: &str, decision: Verdict) -> String {
    let mut r = AuditRecord::new("c", 1, kind, subject);
    r.decision = decision;
    serde_json::to_string(&r).expect("record")
}

/// A state directory as a learning container's supervisor leaves it.
fn learning(root: &Root, id: &str) {
    let s = root.state_dir(id);
    fs::create_dir_all(s.path()).expect("state dir");
    s.write_text(LEARN_RECORD, r#"{"events":[]}"#)
        .expect("record");
    s.write_text(POLICY_FILE, r#"{"version":1}"#)
        .expect("policy");
    let lines = [
        record(Kind::Proxy, "example.org:443", Verdict::Allow),
        record(Kind::Proxy, "example.org:443", Verdict::Allow),
        record(Kind::FsRead, "/data/x", Verdict::Deny),
        record(Kind::FsRead, "/data/y", Verdict::Allow),
    ];
    s.write_text(AUDIT_FILE, &(lines.join("\n") + "\n"))
        .expect("audit");
}

#[test]
fn a_learning_containers_record_is_kept_private_with_the_audit_lines_learning_reads() {
    let (_d, r) = root();
    learning(&r, "job");
    keep(&r, "job");
    let kept = find(&r, "job").expect("kept");
    assert_eq!(kept.path(), kept_dir(&r, "job"));
    let mode = |p: &Path| fs::symlink_metadata(p).expect("stat").mode() & 0o777;
    assert_eq!(mode(kept.path()), 0o700);
    assert_eq!(mode(&r.path().join(KEPT_DIR)), 0o700);
    assert_eq!(mode(&kept.learn_record()), 0o600);
    assert_eq!(
        kept.read_text(LEARN_RECORD).expect("record"),
        r#"{"events":[]}"#
    );
    let audit = kept.read_text(AUDIT_FILE).expect("audit");
    assert_eq!(audit.lines().count(), 2, "{audit}");
    assert!(audit.contains("example.org:443") && audit.contains("/data/x"));
    assert!(!audit.contains("/data/y"), "{audit}");
    // `policy suggest --from-audit ID` reads the kept lines once the
    // state directory is gone.
    r.remove_extra("job").expect("delete");
    let records = crate::runtime::learned::read_audit_of("job", &[r.path().to_path_buf()])
        .expect("kept audit");
    assert_eq!(records.len(), 2);
    learning(&r, "job");
    // Kept again (the id reused): replaced whole.
    keep(&r, "job");
    assert!(find(&r, "job").is_some());
}

#[test]
fn a_container_that_was_not_learning_leaves_nothing() {
    let (_d, r) = root();
    fs::create_dir_all(r.state_dir("plain").path()).expect("state dir");
    keep(&r, "plain");
    assert!(find(&r, "plain").is_none());
    assert!(!r.path().join(KEPT_DIR).exists());
    for bad in ["../plain", "a/b", ".tmp-x", ""] {
        assert!(find(&r, bad).is_none(), "{bad}");
    }
}

#[test]
fn the_oldest_records_are_dropped_first() {
    let (_d, r) = root();
    for i in 0..MAX_KEPT + 3 {
        let id = format!("c{i:03}");
        learning(&r, &id);
        keep(&r, &id);
    }
    let base = Base::open(&r.path().join(KEPT_DIR))
        .expect("base")
        .expect("a base");
    let ids: Vec<String> = entries(&base).into_iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), MAX_KEPT);
    for i in 0..3 {
        assert!(find(&r, &format!("c{i:03}")).is_none(), "c{i:03} kept");
    }
    assert!(find(&r, &format!("c{:03}", MAX_KEPT + 2)).is_some());
}

#[test]
fn symlinks_are_never_followed() {
    let (d, r) = root();
    let elsewhere = d.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).expect("elsewhere");
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o700)).expect("chmod");
    // The directory of kept records as a symlink: refused, nothing written
    // where it leads.
    symlink(&elsewhere, r.path().join(KEPT_DIR)).expect("symlink");
    learning(&r, "job");
    keep(&r, "job");
    assert!(find(&r, "job").is_none());
    assert_eq!(fs::read_dir(&elsewhere).expect("ls").count(), 0);
    // A kept entry that is a symlink is not read, and pruned away.
    fs::remove_file(r.path().join(KEPT_DIR)).expect("rm");
    keep(&r, "job");
    fs::create_dir_all(elsewhere.join("x")).expect("x");
    symlink(elsewhere.join("x"), r.path().join(KEPT_DIR).join("other")).expect("symlink");
    assert!(find(&r, "other").is_none());
    learning(&r, "job2");
    keep(&r, "job2");
    assert!(fs::symlink_metadata(r.path().join(KEPT_DIR).join("other")).is_err());
    assert!(elsewhere.join("x").is_dir());
    // A record in the state directory that is a symlink is not kept.
    let s = r.state_dir("job3");
    fs::create_dir_all(s.path()).expect("state dir");
    symlink("/etc/hostname", s.learn_record()).expect("symlink");
    keep(&r, "job3");
    assert!(find(&r, "job3").is_none());
}

/// A kept record of `id` whose learned record is `body`, kept at `secs`
/// past the epoch (set, so ties of coarse timestamps cannot reorder).
fn kept_with(r: &Root, id: &str, body: &str, secs: u64) {
    let s = r.state_dir(id);
    fs::create_dir_all(s.path()).expect("state dir");
    s.write_text(LEARN_RECORD, body).expect("record");
    keep(r, id);
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    fs::File::open(kept_dir(r, id))
        .and_then(|f| f.set_modified(t))
        .expect("set mtime");
}

#[test]
fn list_shows_kept_records_and_forget_drops_one_without_following_symlinks() {
    let (d, r) = root();
    assert!(list(&r).expect("list").is_empty());
    kept_with(
        &r,
        "job",
        r#"{"events":[],"attached":false,"unreadable":0}"#,
        1_000,
    );
    kept_with(
        &r,
        "full",
        r#"{"events":[],"attached":true,"unreadable":0}"#,
        2_000,
    );
    let cut = r#"{"events":[],"attached":true,"unreadable":0,"truncated":true}"#;
    kept_with(&r, "cut", cut, 3_000);
    let all = list(&r).expect("list");
    let ids: Vec<(&str, bool)> = all.iter().map(|k| (k.id.as_str(), k.complete)).collect();
    assert_eq!(
        ids,
        [("job", false), ("full", true), ("cut", false)],
        "{all:?}"
    );
    assert!(all.iter().all(|k| k.bytes > 0));
    // A planted symlink is neither listed nor removed through.
    let elsewhere = d.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).expect("elsewhere");
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o700)).expect("chmod");
    symlink(&elsewhere, r.path().join(KEPT_DIR).join("link")).expect("symlink");
    assert_eq!(list(&r).expect("list").len(), 3);
    assert!(matches!(forget(&r, "link"), Err(ForgetError::Missing(..))));
    assert!(elsewhere.is_dir());
    assert!(matches!(forget(&r, "../x"), Err(ForgetError::Id(_))));
    forget(&r, "job").expect("forget");
    assert!(find(&r, "job").is_none());
    assert_eq!(list(&r).expect("list").len(), 2);
    // A record file that is a symlink: listed, but not read (not complete).
    let rec = kept_dir(&r, "full").join(LEARN_RECORD);
    fs::rename(&rec, elsewhere.join("rec")).expect("mv");
    symlink(elsewhere.join("rec"), &rec).expect("symlink");
    let full = list(&r).expect("list");
    assert!(
        full.iter().any(|k| k.id == "full" && !k.complete),
        "{full:?}"
    );
}

#[test]
fn forget_refuses_an_id_directory_that_is_not_private_and_leaves_it() {
    let (_d, r) = root();
    kept_with(&r, "open", r#"{"events":[]}"#, 1_000);
    kept_with(&r, "theirs", r#"{"events":[]}"#, 2_000);
    fs::set_permissions(kept_dir(&r, "open"), fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(kept_dir(&r, "theirs"), Some(4242), None).expect("chown");
    for id in ["open", "theirs"] {
        let e = forget(&r, id).expect_err(id);
        assert!(matches!(e, ForgetError::Io(..)), "{id}: {e}");
        assert!(e.to_string().contains("not a private directory"), "{e}");
        assert!(kept_dir(&r, id).is_dir(), "{id} removed");
    }
    // Nothing is left moved aside.
    let names: Vec<String> = fs::read_dir(r.path().join(KEPT_DIR))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_base_reached_through_a_symlink_or_not_private_is_an_error() {
    let (d, r) = root();
    kept_with(&r, "job", r#"{"events":[]}"#, 1_000);
    let base = r.path().join(KEPT_DIR);
    let moved = d.path().join("moved");
    fs::rename(&base, &moved).expect("mv");
    symlink(&moved, &base).expect("symlink");
    let e = list(&r).expect_err("list through a symlink");
    assert!(e.to_string().contains(KEPT_DIR), "{e}");
    assert!(matches!(forget(&r, "job"), Err(ForgetError::Base(_))));
    assert!(moved.join("job").is_dir(), "removed through the symlink");
    fs::remove_file(&base).expect("rm");
    fs::rename(&moved, &base).expect("mv back");
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).expect("chmod");
    let e = list(&r).expect_err("list of an open base");
    assert!(e.to_string().contains("not a private directory"), "{e}");
    let e = forget(&r, "job").expect_err("forget in an open base");
    assert!(e.to_string().contains("not a private directory"), "{e}");
    assert!(base.join("job").is_dir());
}
