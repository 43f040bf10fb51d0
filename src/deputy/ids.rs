//! The host ids `buntime run`'s sandboxes act as.

/// First host uid (and gid) of the sandboxes `buntime run` starts as root:
/// the run's uid is this plus the pid of its `buntime`, unique among the
/// runs going on, far above the ranges of users and of /etc/subuid's
/// usual allocations, below 2^31 (tools that read ids as signed ints).
pub const RUN_ID_BASE: u32 = 2_140_000_000;

/// The host uid and gid a run's sandbox acts as (root inside maps to it).
pub fn sandbox_host_ids() -> (u32, u32) {
    if nix::unistd::geteuid().is_root() {
        let id = RUN_ID_BASE + std::process::id();
        (id, id)
    } else {
        // The effective ids, the ones tested above and the ones the
        // sandbox's sockets and files get (a real uid of 0 with another
        // effective one must not make the sandbox's uid 0).
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }
}
