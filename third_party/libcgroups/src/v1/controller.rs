use std::fs;
use std::path::Path;

use nix::unistd::{Pid, getpid};

use crate::common::{self, CGROUP_PROCS, ControllerOpt, WrapIoResult, WrappedIoError};

/// The v1 per-thread membership file.
const CGROUP_TASKS: &str = "tasks";

/// buntime patch: puts `pid` into the cgroup at `cgroup_path`. Pid 0 is
/// the caller, known to be single-threaded (`Manager::add_task` decides
/// that once for all controllers).
///
/// A write to `cgroup.procs` (or of another task's id to `tasks`) takes the
/// kernel's global cgroup_threadgroup_rwsem for writing, and the first such
/// writer after a quiet spell waits for an RCU grace period (8 ms at HZ=250,
/// once per container start). A thread moving itself through `tasks` ("0")
/// skips that lock (Linux 5.5 on); for a single-threaded process that is the
/// whole process. If that write fails, "0" goes to `cgroup.procs`, where the
/// kernel reads it as the caller's whole process, as before.
pub(super) fn attach(pid: Pid, cgroup_path: &Path) -> Result<(), WrappedIoError> {
    if pid.as_raw() == 0 {
        match common::write_cgroup_file_str(cgroup_path.join(CGROUP_TASKS), "0") {
            Ok(()) => return Ok(()),
            Err(err) => tracing::debug!(?err, "self-attach through tasks failed"),
        }
    }
    common::write_cgroup_file(cgroup_path.join(CGROUP_PROCS), pid)
}

/// buntime patch: `pid` as `attach` takes it: 0 when it is the caller and
/// the caller has one thread (a second one would stay behind in the old
/// cgroup if only the caller's thread moved).
pub(super) fn self_if_alone(pid: Pid) -> Pid {
    let alone = pid == getpid()
        && procfs::process::Process::myself()
            .and_then(|p| p.stat())
            .is_ok_and(|s| s.num_threads == 1);
    if alone { Pid::from_raw(0) } else { pid }
}

pub(super) trait Controller {
    type Error: From<WrappedIoError>;
    type Resource;

    /// Adds a new task specified by its pid to the cgroup
    fn add_task(pid: Pid, cgroup_path: &Path) -> Result<(), Self::Error> {
        fs::create_dir_all(cgroup_path).wrap_create_dir(cgroup_path)?;
        attach(pid, cgroup_path)?;
        Ok(())
    }

    /// Applies resource restrictions to the cgroup
    fn apply(controller_opt: &ControllerOpt, cgroup_root: &Path) -> Result<(), Self::Error>;

    /// Checks if the controller needs to handle this request
    fn needs_to_handle<'a>(controller_opt: &'a ControllerOpt) -> Option<&'a Self::Resource>;
}
