//! buntime: a deny-by-default OCI container runtime for untrusted code.
//!
//! The library holds everything the two binaries share: the runc-compatible
//! runtime on top of libcontainer, the policy model, the IPC data plane and
//! the supervisor.

pub mod audit;
pub mod audit_follow;
pub mod deputy;
pub mod exeseal;
// The IPC data plane is its own crate (crates/buntime-ipc: what
// libbuntime_ipc.so is built from, without the runtime); `crate::ipc::...`
// keeps naming it.
pub use buntime_ipc as ipc;
pub mod landlock;
pub mod learn;
pub mod logging;
pub mod policy;
pub mod prepare;
pub mod proxy;
pub mod runtime;
pub mod sandbox;
pub mod spec;
pub mod statedir;
pub mod stdout;
pub mod supervisor;
// The debug UI and its HTTP server: the `ui` feature (on by default).
#[cfg(feature = "ui")]
pub mod ui;
