//! Errors of the runtime, each naming what is wrong the way runc users expect.

use std::path::PathBuf;

/// What a runtime command can fail with. The `Display` text is the one line
/// that goes to stderr and to the json log.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: String },
    #[error("bundle {path}: {reason}")]
    Bundle { path: PathBuf, reason: String },
    #[error("{file}: {pointer}: {message}")]
    Config {
        file: PathBuf,
        pointer: String,
        message: String,
    },
    #[error("container {id:?} is {status}: cannot {action}")]
    Status {
        id: String,
        status: String,
        action: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    /// The container's policy did not resolve, translate or narrow.
    #[error("policy: {0}")]
    Policy(String),
    /// `exec` asked for more than the container's policy gives its init
    /// (a capability, a variable the env rules drop).
    #[error("exec refused by policy {policy}: {field}: {detail}")]
    ExecRefused {
        policy: String,
        field: ExecRule,
        detail: String,
    },
    // The io error is part of the message rather than a `source`, so that
    // printing the cause chain does not repeat it.
    #[error("{context}: {err}")]
    Io {
        context: String,
        err: std::io::Error,
    },
    /// Processes entering the container must run from a sealed copy of the
    /// binary: the command unwinds and `main` redoes it from one
    /// (`exeseal::reexec`). Seen only if that fails to happen.
    #[error("the runtime binary must be sealed first ({0})")]
    Reseal(crate::exeseal::SealReason),
    /// A failure inside libcontainer or libcgroups, with its whole cause chain.
    #[error("{context}: {detail}")]
    Backend { context: String, detail: String },
    /// A runc command buntime-runc does not offer, and why.
    #[error("{command} is not supported by buntime-runc: {reason}")]
    Unsupported {
        command: &'static str,
        reason: &'static str,
    },
    /// Writing the command's output failed (`crate::stdout`).
    #[error(transparent)]
    Output(#[from] crate::stdout::OutputError),
}

impl RuntimeError {
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            err,
        }
    }

    /// Wraps a library error, keeping every cause: libcontainer's top-level
    /// messages ("io error", "syscall error") say little on their own.
    pub fn backend(context: impl Into<String>, err: &(dyn std::error::Error + 'static)) -> Self {
        Self::Backend {
            context: context.into(),
            detail: error_chain(err),
        }
    }
}

/// A policy that cannot be prepared is a policy error, as it always was;
/// reading the host or building a mount fails as itself.
impl From<crate::prepare::PrepareError> for RuntimeError {
    fn from(e: crate::prepare::PrepareError) -> Self {
        use crate::prepare::PrepareError;
        match e {
            PrepareError::Io { context, err } => Self::io(context, err),
            PrepareError::Invalid(message) => Self::Invalid(message),
            other => Self::Policy(other.to_string()),
        }
    }
}

impl From<crate::statedir::StateFileError> for RuntimeError {
    fn from(e: crate::statedir::StateFileError) -> Self {
        use crate::statedir::StateFileError;
        match e {
            StateFileError::Read { path, err } => Self::io(format!("read {path}"), err),
            StateFileError::Write { path, err } => Self::io(format!("write {path}"), err),
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// Joins an error and its sources with ": ", skipping repeats.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// The rule that refused an `exec` request, shown by its policy field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecRule {
    /// Init's capability sets (the policy grants none).
    Capabilities,
    /// `env.pass`: the variable does not pass.
    EnvPass,
    /// `env.set`: the policy fixes the variable.
    EnvSet,
    /// `network.mode: proxy`: the proxy sets the variable.
    ProxyEnv,
}

impl std::fmt::Display for ExecRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExecRule::Capabilities => "capabilities",
            ExecRule::EnvPass => "env.pass",
            ExecRule::EnvSet => "env.set",
            ExecRule::ProxyEnv => "network.mode",
        })
    }
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// True when `err` (or what it wraps) says stdout was closed, also where a
/// [`RuntimeError::Output`] wraps it (transparent, so its source is not
/// the [`crate::stdout::OutputError`] itself).
pub fn output_closed(err: &(dyn std::error::Error + 'static)) -> bool {
    use crate::stdout::OutputError;
    crate::stdout::is_closed(err)
        || std::iter::successors(Some(err), |e| e.source()).any(|e| {
            matches!(
                e.downcast_ref::<RuntimeError>(),
                Some(RuntimeError::Output(OutputError::Closed(_)))
            )
        })
}
