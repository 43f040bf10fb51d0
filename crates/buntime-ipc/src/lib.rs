//! IPC between a container's worker and its supervisor (see docs/ipc.md),
//! and `libbuntime_ipc.so`, its C ABI for workers (`ffi`).
//!
//! Data plane: one shared segment per container holding two SPSC rings
//! (supervisor-to-worker, worker-to-supervisor) of `[u32 len][payload]`
//! frames, with spin-then-futex waiting. Control plane: a SOCK_SEQPACKET
//! Unix socket for the handshake, SO_PEERCRED, READY/DATA/STOP and fd
//! passing. The supervisor side treats everything the worker can touch as
//! hostile.

pub mod client;
pub mod control;
pub mod error;
pub mod layout;
pub mod protocol;
pub mod ring;
pub mod segment;
pub mod supervisor;
pub mod wait;

pub use client::{Client, Response, ENV_CONTROL, ENV_IPC};
pub use control::{ControlListener, ControlSocket, PeerCred, PeerPolicy};
pub use error::{DecodeError, IpcError, RingId};
pub use protocol::{decode, kind, Message, Reply, Request};
pub use ring::Nudge;
pub use segment::Segment;
pub use supervisor::{ControlEvent, Received, SupervisorChannel, SupervisorConfig};
pub use wait::WaitConfig;

// The C ABI of libbuntime_ipc.so (header: include/buntime_ipc.h).
pub mod ffi;
