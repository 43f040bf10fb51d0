//! The runc-compatible runtime on top of libcontainer.
//!
//! Each submodule is one concern: where containers live (`state`), how a
//! bundle becomes the spec we hand to libcontainer (`bundle`), what runs in
//! the container right before exec (`executor`), and the commands.

pub mod bundle;
pub mod cgroup;
pub mod cgroup_warmup;
pub mod create;
pub mod defaults;
pub mod error;
pub mod events;
pub mod exec;
pub mod exec_learn;
pub mod executor;
pub mod foreground;
pub mod freezer;
pub mod kept;
pub mod learned;
pub mod lifecycle;
pub mod list;
pub mod loopback;
pub mod netns_hook;
pub mod ps;
pub mod refusal;
pub mod seccomp_bpf;
pub mod stage;
pub mod state;
pub mod update;
pub mod userns;

pub use error::{Result, RuntimeError};
pub use state::Root;

/// `buntime-runc`'s state root unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/buntime-runc";
