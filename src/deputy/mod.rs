//! Acting for a sandbox with the sandbox's rights (docs/supervisor.md: "the
//! supervisor is a deputy of the sandbox, never of the host"): the
//! credentials a request is served with, file operations resolved inside
//! the sandbox's root, and the host ids `buntime run`'s sandboxes get.
//! A leaf: the supervisor, learning and `buntime run` build on it.

pub mod creds;
pub mod fsops;
pub mod ids;
