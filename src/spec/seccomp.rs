//! The default seccomp profile, used when a bundle brings none: an
//! allow-list in the spirit of Docker's. Anything not listed fails with
//! EPERM. Documented in `docs/policy.md`.

use libcontainer::oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

use crate::policy::NetMode;

/// Syscalls allowed without conditions. Names the running kernel or
/// architecture lacks are skipped by libcontainer.
pub const ALLOWED_SYSCALLS: &[&str] = &[
    // files and directories
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "open",
    "openat",
    "openat2",
    "close",
    "close_range",
    "creat",
    "lseek",
    "_llseek",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "fstatat64",
    "stat64",
    "fstat64",
    "lstat64",
    "statx",
    "statfs",
    "fstatfs",
    "statfs64",
    "fstatfs64",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getdents",
    "getdents64",
    "mkdir",
    "mkdirat",
    "rmdir",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "chown32",
    "fchown32",
    "lchown32",
    "truncate",
    "ftruncate",
    "truncate64",
    "ftruncate64",
    "fallocate",
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "umask",
    "utime",
    "utimes",
    "utimensat",
    "utimensat_time64",
    "futimesat",
    "mknod",
    "mknodat",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fcntl64",
    "flock",
    "ioctl",
    "pipe",
    "pipe2",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "sendfile",
    "sendfile64",
    "fadvise64",
    "fadvise64_64",
    "readahead",
    "getcwd",
    "chdir",
    "fchdir",
    "memfd_create",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "getxattrat",
    "setxattrat",
    "listxattrat",
    "removexattrat",
    // memory
    "brk",
    "mmap",
    "mmap2",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "mincore",
    "msync",
    "remap_file_pages",
    "membarrier",
    "get_mempolicy",
    "set_mempolicy",
    "mbind",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "map_shadow_stack",
    // processes and threads (clone and personality have conditional rules below)
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    "kill",
    "tkill",
    "tgkill",
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getuid32",
    "geteuid32",
    "getgid32",
    "getegid32",
    "getresuid",
    "getresgid",
    "getresuid32",
    "getresgid32",
    "getgroups",
    "getgroups32",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
    "setuid32",
    "setgid32",
    "setreuid32",
    "setregid32",
    "setresuid32",
    "setresgid32",
    "setgroups32",
    "setfsuid32",
    "setfsgid32",
    "getpgid",
    "setpgid",
    "getpgrp",
    "getsid",
    "setsid",
    "prctl",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futex_wait",
    "futex_wake",
    "futex_requeue",
    "rseq",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_getattr",
    "sched_setattr",
    "getpriority",
    "setpriority",
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "ugetrlimit",
    "getrusage",
    "times",
    "uname",
    "sysinfo",
    "capget",
    "capset",
    "pidfd_open",
    "pidfd_send_signal",
    "restart_syscall",
    "ioprio_get",
    "ioprio_set",
    "getcpu",
    "set_thread_area",
    "get_thread_area",
    "seccomp",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    // signals
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "rt_sigsuspend",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigreturn",
    "sigprocmask",
    "sigpending",
    "sigsuspend",
    "pause",
    "alarm",
    // time
    "clock_gettime",
    "clock_gettime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "nanosleep",
    "gettimeofday",
    "time",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_settime",
    "timer_settime64",
    "timer_gettime",
    "timer_gettime64",
    "timer_getoverrun",
    "timer_delete",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_settime64",
    "timerfd_gettime",
    "timerfd_gettime64",
    // waiting for events
    "select",
    "_newselect",
    "pselect6",
    "pselect6_time64",
    "poll",
    "ppoll",
    "ppoll_time64",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_wait",
    "epoll_wait_old",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    // sockets (socket and socketpair have conditional rules below)
    "bind",
    "connect",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "recvmmsg_time64",
    "shutdown",
    "setsockopt",
    "getsockopt",
    // System V and POSIX IPC (private to the container's IPC namespace)
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "semctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_notify",
    "mq_getsetattr",
    "ipc",
    // asynchronous I/O (not io_uring)
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    // misc
    "getrandom",
    "cachestat",
];

/// Syscalls the profile refuses on purpose (documentation and tests; the
/// profile is an allow-list, so they are refused by not being listed).
pub const BLOCKED_SYSCALLS: &[&str] = &[
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "unshare",
    "setns",
    "userfaultfd",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "syslog",
    "iopl",
    "ioperm",
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
    "nfsservctl",
    "vhangup",
    "fanotify_init",
    "socketcall",
    "memfd_secret",
];

const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const SOCK_STREAM: u64 = 1;
const SOCK_TYPE_MASK: u64 = 0xf;
const IPPROTO_TCP: u64 = 6;
/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET: clone may not create
/// namespaces.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

fn arg(index: usize, value: u64, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op)
        .build()
        .expect("every field of the seccomp argument is set")
}

fn masked_arg(index: usize, mask: u64, value: u64) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(mask)
        .value_two(value)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
        .expect("every field of the seccomp argument is set")
}

fn rule(
    names: &[&str],
    action: LinuxSeccompAction,
    args: Option<Vec<LinuxSeccompArg>>,
) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(action);
    s.set_args(args);
    s
}

/// The socket families the sandbox may create in `mode`: `none` is
/// loopback-only, so inet sockets are pointless and refused outright.
pub fn socket_families(mode: NetMode) -> &'static [u64] {
    match mode {
        NetMode::None => &[AF_UNIX],
        NetMode::Proxy | NetMode::Pod | NetMode::Bundle | NetMode::Host => {
            &[AF_UNIX, AF_INET, AF_INET6]
        }
    }
}

/// The native ABI only. A syscall made through another ABI (32-bit
/// `int 0x80`, x32) matches no architecture of the filter and is killed:
/// a sandbox has no need of them, they are a classic way around filters,
/// and each extra ABI triples the filter libseccomp compiles at every start.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64]
    } else {
        vec![Arch::ScmpArchX86_64]
    }
}

/// Build the default profile for network `mode`.
pub fn default_seccomp(mode: NetMode) -> LinuxSeccomp {
    let allow = LinuxSeccompAction::ScmpActAllow;
    let mut rules = vec![rule(ALLOWED_SYSCALLS, allow, None)];
    // One rule per family: conditions inside a rule are ANDed, rules ORed.
    for fam in socket_families(mode) {
        let family = arg(0, *fam, LinuxSeccompOperator::ScmpCmpEq);
        if !mode.is_proxied() || *fam == AF_UNIX {
            rules.push(rule(&["socket"], allow, Some(vec![family])));
            continue;
        }
        // In `proxy` and `pod` modes the only way out is a TCP connection to the
        // proxy (Landlock checks the port); datagram and raw inet sockets
        // would bypass it. The type's low bits are the kind; the high bits
        // are SOCK_NONBLOCK/SOCK_CLOEXEC. The protocol must be 0 or TCP,
        // exactly: Landlock's port rules cover TCP only (SCTP and MPTCP are
        // stream sockets too), and for protocols the kernel does not know
        // it would run modprobe on the host before refusing. One rule per
        // protocol: two conditions on one argument would not be ANDed.
        for proto in [0, IPPROTO_TCP] {
            let conds = vec![
                family,
                masked_arg(1, SOCK_TYPE_MASK, SOCK_STREAM),
                arg(2, proto, LinuxSeccompOperator::ScmpCmpEq),
            ];
            rules.push(rule(&["socket"], allow, Some(conds)));
        }
    }
    rules.push(rule(
        &["socketpair"],
        allow,
        Some(vec![arg(0, AF_UNIX, LinuxSeccompOperator::ScmpCmpEq)]),
    ));
    // clone without namespace flags (flags are argument 0 on x86 and arm).
    rules.push(rule(
        &["clone"],
        allow,
        Some(vec![masked_arg(0, CLONE_NAMESPACE_FLAGS, 0)]),
    ));
    // clone3 passes flags in memory, which seccomp cannot inspect; ENOSYS
    // makes libc fall back to clone, which is filtered above.
    let mut clone3 = rule(&["clone3"], LinuxSeccompAction::ScmpActErrno, None);
    clone3.set_errno_ret(Some(ENOSYS));
    rules.push(clone3);
    // personality: only the harmless personas (Linux, 32-bit, UNAME26,
    // and the query value).
    for persona in [0u64, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        rules.push(rule(
            &["personality"],
            allow,
            Some(vec![arg(0, persona, LinuxSeccompOperator::ScmpCmpEq)]),
        ));
    }
    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno);
    s.set_default_errno_ret(Some(EPERM));
    s.set_architectures(Some(architectures()));
    s.set_syscalls(Some(rules));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_names(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn blocked_syscalls_are_never_allowed() {
        let s = default_seccomp(NetMode::Host);
        let allowed = allowed_names(&s);
        for b in BLOCKED_SYSCALLS {
            assert!(!allowed.iter().any(|a| a == b), "{b} must not be allowed");
        }
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(EPERM));
    }

    #[test]
    fn no_duplicate_names_in_allow_list() {
        let mut v: Vec<_> = ALLOWED_SYSCALLS.to_vec();
        v.sort_unstable();
        let before = v.len();
        v.dedup();
        assert_eq!(before, v.len());
    }

    fn socket_values(s: &LinuxSeccomp) -> Vec<u64> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names() == &vec!["socket".to_string()])
            .flat_map(|r| r.args().clone().unwrap_or_default())
            .filter(|a| a.index() == 0)
            .map(|a| a.value())
            .collect()
    }

    #[test]
    fn proxy_mode_allows_only_stream_inet_sockets() {
        let s = default_seccomp(NetMode::Proxy);
        let inet: Vec<_> = s
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names() == &vec!["socket".to_string()])
            .filter_map(|r| r.args().clone())
            .filter(|a| a[0].value() != AF_UNIX)
            .collect();
        // Per family (inet, inet6), one rule per protocol (0, TCP).
        assert_eq!(inet.len(), 4);
        let mut seen = Vec::new();
        for args in inet {
            assert_eq!(args.len(), 3, "family, type and protocol: {args:?}");
            assert_eq!(args[1].index(), 1);
            assert_eq!(args[1].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
            assert_eq!((args[1].value(), args[1].value_two()), (0xf, Some(1)));
            assert_eq!(args[2].index(), 2);
            assert_eq!(args[2].op(), LinuxSeccompOperator::ScmpCmpEq);
            seen.push((args[0].value(), args[2].value()));
        }
        seen.sort();
        assert_eq!(seen, [(2, 0), (2, 6), (10, 0), (10, 6)]);
        // Host mode keeps datagram sockets and every protocol.
        let host = default_seccomp(NetMode::Host);
        assert!(host
            .syscalls()
            .iter()
            .flatten()
            .filter_map(|r| r.args().clone())
            .all(|a| a.iter().all(|x| x.index() == 0)));
    }

    #[test]
    fn socket_families_follow_network_mode() {
        assert_eq!(
            socket_values(&default_seccomp(NetMode::None)),
            vec![AF_UNIX]
        );
        let mut proxy = socket_values(&default_seccomp(NetMode::Proxy));
        proxy.dedup();
        assert_eq!(proxy, vec![AF_UNIX, AF_INET, AF_INET6]);
        // socket itself is never allowed unconditionally.
        assert!(!ALLOWED_SYSCALLS.contains(&"socket"));
        assert!(!ALLOWED_SYSCALLS.contains(&"clone"));
        assert!(!ALLOWED_SYSCALLS.contains(&"personality"));
    }

    #[test]
    fn profile_serializes_like_oci() {
        let v = serde_json::to_value(default_seccomp(NetMode::None)).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["defaultErrnoRet"], 1);
        assert!(v.get("listenerPath").is_none());
        let clone = v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"][0] == "clone")
            .unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["value"], CLONE_NAMESPACE_FLAGS);
        assert_eq!(clone["args"][0]["valueTwo"], 0);
    }
}
