//! Errors of the IPC layer. Every failure the hostile peer can provoke ends
//! up here as a value (never a panic), so the supervisor can audit it.

use std::io;

/// Why a payload taken off a ring is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload shorter than the {0}-byte message header")]
    Truncated(usize),
    #[error("unknown message type 0x{0:02x}")]
    UnknownKind(u8),
    #[error("reserved header bytes are not zero")]
    ReservedNonZero,
    #[error("flags 0x{flags:02x} not allowed on message type 0x{kind:02x}")]
    BadFlags { kind: u8, flags: u8 },
    #[error("message type 0x{0:02x} must carry request id 0")]
    UnexpectedId(u8),
    #[error("message type 0x{0:02x} needs a non-zero request id")]
    MissingId(u8),
    #[error("bad path: {0}")]
    BadPath(&'static str),
    #[error("bad host name")]
    BadHost,
    #[error("bad port")]
    BadPort,
    #[error("bad argv: {0}")]
    BadArgv(&'static str),
    #[error("bad deny reason")]
    BadReason,
    #[error("EXIT body must be exactly 4 bytes")]
    BadExit,
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

/// Which ring of a segment an error concerns (for audit logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingId {
    /// Supervisor to worker.
    S2W,
    /// Worker to supervisor.
    W2S,
}

impl std::fmt::Display for RingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RingId::S2W => "supervisor-to-worker",
            RingId::W2S => "worker-to-supervisor",
        })
    }
}

/// Every error the IPC layer returns.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("system call failed: {0}")]
    Sys(#[from] nix::errno::Errno),
    /// The peer broke a ring invariant (index out of range, bad length...).
    #[error("{ring} ring corrupted by peer: {detail}")]
    Corrupt { ring: RingId, detail: String },
    #[error("malformed message: {0}")]
    Decode(#[from] DecodeError),
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("peer credentials rejected: {0}")]
    PeerRejected(String),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("timed out")]
    Timeout,
    #[error("peer is not draining its ring")]
    Full,
    #[error("connection closed by peer")]
    Closed,
    /// The supervisor sent STOP (a refused request, a protocol error, or
    /// its own shutdown); the body is its reason.
    #[error("the supervisor stopped the connection: {0}")]
    Stopped(String),
    #[error("channel unusable after an earlier error")]
    Poisoned,
    #[error("bad segment: {0}")]
    BadSegment(String),
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
}

impl IpcError {
    /// True when the error means the peer misbehaved (worth an audit record),
    /// as opposed to a local or transient failure.
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            IpcError::Corrupt { .. }
                | IpcError::Decode(_)
                | IpcError::Protocol(_)
                | IpcError::PeerRejected(_)
                | IpcError::Full
        )
    }
}

pub type Result<T, E = IpcError> = std::result::Result<T, E>;
