use super::*;

#[test]
fn of_pid_reads_the_filesystem_ids_and_groups() {
    let c = SandboxCreds::of_pid(std::process::id()).expect("own status");
    assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
    assert_eq!(c.gid, nix::unistd::getegid().as_raw());
    let mut want: Vec<u32> = nix::unistd::getgroups()
        .expect("getgroups")
        .iter()
        .map(|g| g.as_raw())
        .collect();
    let mut got = c.groups.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(SandboxCreds::of_pid(u32::MAX).is_err());
}

#[test]
fn any_second_guard_on_a_thread_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    std::thread::spawn(|| {
        let nobody = SandboxCreds {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        // One guard: a second of either kind is refused.
        let g = nobody.assume().unwrap();
        assert!(nobody.assume().is_err());
        assert!(serve_as(nobody.clone()).is_err());
        assert!(as_supervisor().is_err());
        drop(g);
        // Serving: another's rights may not be taken on top.
        let serving = serve_as(nobody.clone()).unwrap();
        assert!(serve_as(nobody.clone()).is_err());
        assert!(nobody.assume().is_err());
        {
            let own = as_supervisor().unwrap();
            // The worker's for a guard inside: nothing else on top.
            let w = assume_worker().unwrap();
            assert!(assume_worker().is_err());
            assert!(as_supervisor().is_err());
            assert!(nobody.assume().is_err());
            drop(w);
            drop(own);
        }
        drop(serving);
        // No worker any more.
        assert!(assume_worker().is_err());
        drop(nobody.assume().unwrap());
    })
    .join()
    .unwrap();
}

#[test]
fn a_failed_switch_undoes_only_the_steps_taken() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    std::thread::spawn(|| {
        // No effective capabilities: setgroups fails, and so would
        // putting the same groups back (the abort of old).
        let own = Caps::get().unwrap();
        own.without_effective().set().unwrap();
        let before = Saved::take().unwrap();
        let other = SandboxCreds {
            uid: before.fsuid,
            gid: before.fsgid,
            groups: vec![4242],
        };
        assert!(other.assume().is_err());
        let after = Saved::take().unwrap();
        assert_eq!(after.groups, before.groups);
        // The thread's mark is cleared: a switch that needs nothing
        // may be made.
        let same = SandboxCreds {
            groups: before.groups.clone(),
            ..other
        };
        drop(same.assume().unwrap());
    })
    .join()
    .unwrap();
}

#[test]
fn a_serving_thread_keeps_the_workers_rights_and_is_itself_only_in_a_section() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "x").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::thread::spawn(move || {
        // No worker recorded: nothing may be opened.
        assert!(assume_worker().is_err());
        let own = Saved::take().unwrap();
        let serving = serve_as(SandboxCreds {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        })
        .unwrap();
        let worker = Saved::take().unwrap();
        assert_eq!((worker.fsuid, worker.fsgid), (65534, 65534));
        assert_eq!(worker.groups, vec![65534]);
        assert_eq!(worker.caps.effective(), 0);
        for _ in 0..3 {
            // Requests: the worker's rights, no switch.
            let g = assume_worker().unwrap();
            let e = std::fs::read(&secret).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EACCES));
            drop(g);
            assert!(std::fs::read(&secret).is_err());
            // The supervisor's business: its own rights, for the section.
            {
                let _own = as_supervisor().unwrap();
                // Nested: nothing more to do.
                drop(as_supervisor().unwrap());
                assert_eq!(std::fs::read(&secret).unwrap(), b"x");
                let now = Saved::take().unwrap();
                assert_eq!((now.fsuid, now.fsgid), (own.fsuid, own.fsgid));
                assert_eq!(now.groups, own.groups);
                assert_eq!(now.caps.effective(), own.caps.effective());
            }
            let now = Saved::take().unwrap();
            assert_eq!((now.fsuid, now.fsgid), (65534, 65534));
            assert_eq!(now.caps.effective(), 0);
            assert!(std::fs::read(&secret).is_err());
        }
        drop(serving);
        // The connection ended: the thread is itself again.
        assert_eq!(std::fs::read(&secret).unwrap(), b"x");
        let after = Saved::take().unwrap();
        assert_eq!((after.fsuid, after.fsgid), (own.fsuid, own.fsgid));
        assert_eq!(after.groups, own.groups);
        assert_eq!(after.caps.effective(), own.caps.effective());
    })
    .join()
    .unwrap();
}

#[test]
fn a_thread_started_while_serving_is_not_given_the_workers_rights_by_the_section() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    std::thread::spawn(|| {
        let own = Saved::take().unwrap();
        let _serving = serve_as(SandboxCreds {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        })
        .unwrap();
        // A thread made inside a section (the pod's lookups) is the
        // supervisor's: credentials are copied from the creating thread.
        let _own = as_supervisor().unwrap();
        let fsuid = std::thread::spawn(|| Saved::take().unwrap().fsuid)
            .join()
            .unwrap();
        assert_eq!(fsuid, own.fsuid);
    })
    .join()
    .unwrap();
}

#[test]
fn assumed_credentials_apply_to_opens_and_are_given_back() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "x").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // A thread of its own: the switch must not leak to the test runner.
    let secret2 = secret.clone();
    std::thread::spawn(move || {
        let nobody = SandboxCreds {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        {
            let _g = nobody.assume().unwrap();
            let e = std::fs::read(&secret2).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EACCES));
        }
        // Root again: the file opens.
        assert_eq!(std::fs::read(&secret2).unwrap(), b"x");
        // Root on the host without capabilities: file modes of other
        // owners apply.
        let root_nocaps = SandboxCreds {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        let other = secret2.with_file_name("other");
        std::fs::write(&other, "y").unwrap();
        nix::unistd::chown(&other, Some(nix::unistd::Uid::from_raw(1234)), None).unwrap();
        std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        {
            let _g = root_nocaps.assume().unwrap();
            assert!(std::fs::read(&other).is_err());
        }
        assert_eq!(std::fs::read(&other).unwrap(), b"y");
    })
    .join()
    .unwrap();
}
