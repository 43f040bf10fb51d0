//! A command's output on stdout, when the reader may go away.
//!
//! Rust ignores SIGPIPE, so writing into a closed pipe (`buntime-runc state
//! ID | head -c1`) is an `EPIPE` error, which `print!` turns into a panic.
//! runc (Go) dies of SIGPIPE there, quietly: the commands here do the same
//! ([`end_quietly`]). SIGPIPE stays ignored for everything else (the
//! supervisor writes to sockets a sandbox can close).

use std::io::Write;

/// Stdout's reader went away: the command ends without a word.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct Closed;

/// What writing the output can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    Closed(#[from] Closed),
    #[error("write standard output: {0}")]
    Io(std::io::Error),
}

/// Writes `text` to stdout and flushes it.
pub fn print(text: &str) -> Result<(), OutputError> {
    write(text.as_bytes())
}

/// Writes `bytes` to stdout and flushes them.
pub fn write(bytes: &[u8]) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => OutputError::Closed(Closed),
            _ => OutputError::Io(e),
        })
}

/// [`print`] with a newline.
pub fn println(text: &str) -> Result<(), OutputError> {
    print(&format!("{text}\n"))
}

/// True when `err` (or what it wraps) says stdout was closed
/// (`runtime::error::output_closed` also sees through a `RuntimeError`).
pub fn is_closed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<Closed>()
            || matches!(
                e.downcast_ref::<OutputError>(),
                Some(OutputError::Closed(_))
            )
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Ends the process as runc does when its output pipe is gone: killed by
/// SIGPIPE (a shell sees 141), nothing on stderr.
pub fn end_quietly() -> ! {
    use nix::sys::signal::{raise, signal, SigHandler, Signal};
    // SAFETY: restoring the default action of a signal installs no handler.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
    let _ = raise(Signal::SIGPIPE);
    std::process::exit(128 + Signal::SIGPIPE as i32)
}
