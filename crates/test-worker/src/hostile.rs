//! Connections of the worker's own that misbehave or push limits (garbage
//! control messages, a corrupt ring, too many connections, a burst then
//! STOP): what a hostile worker could do, for tests/supervisor_*.rs.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use buntime_ipc::control::{self, ctl};
use buntime_ipc::{Client, ControlSocket};

fn control_path() -> String {
    std::env::var(buntime_ipc::ENV_CONTROL).unwrap_or_default()
}

/// A control message that is not HELLO, then garbage bytes.
pub(crate) fn garbage_ctl() -> Result<String, String> {
    let s = ControlSocket::connect(Path::new(&control_path())).map_err(|e| e.to_string())?;
    s.send(0x77, 0xdead_beef, b"\xff\xfe garbage", None)
        .map_err(|e| e.to_string())?;
    match s.recv(Some(Duration::from_secs(5))) {
        Ok(Some(m)) => Ok(format!("kind=0x{:02x}", m.kind)),
        Ok(None) => Ok("no answer".into()),
        Err(e) => Ok(format!("closed: {e}")),
    }
}

/// HELLO with doorbell wake-ups (as the pure-Python worker sends it) on a
/// connection of our own; the socket and the WELCOME.
fn doorbell_handshake() -> Result<(ControlSocket, control::ControlMsg), String> {
    let s = ControlSocket::connect(Path::new(&control_path())).map_err(|e| e.to_string())?;
    let mut hello = control::hello_body();
    hello[8..12].copy_from_slice(&control::FLAG_DOORBELL_WAKE.to_le_bytes());
    s.send(ctl::HELLO, 0, &hello, None)
        .map_err(|e| e.to_string())?;
    let m = s
        .recv(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?
        .ok_or("no WELCOME")?;
    if m.kind != ctl::WELCOME {
        return Err(format!("got 0x{:02x} instead of WELCOME", m.kind));
    }
    Ok((s, m))
}

/// Handshake by hand as the pure-Python worker does (doorbell wake-ups),
/// then report the exit status `code` on the control socket, twice (only
/// the first may be audited), and STOP.
pub(crate) fn ctl_exit(code: &str) -> Result<(), String> {
    let code: i32 = code.parse().map_err(|e| format!("exit code: {e}"))?;
    let (s, _) = doorbell_handshake()?;
    for kind in [ctl::READY, ctl::EXIT, ctl::EXIT, ctl::STOP] {
        s.send(kind, code as u32, &[], None)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `hold:N`: see the module comment.
pub(crate) fn hold(n: &str) -> Result<String, String> {
    let n: usize = n.parse().map_err(|e| format!("count: {e}"))?;
    let mut held = Vec::new();
    let mut why = String::new();
    for _ in 0..n {
        match Client::connect_env() {
            Ok(c) => held.push(c),
            Err(e) if why.is_empty() => why = e.to_string(),
            Err(_) => {}
        }
    }
    let taken = held.len();
    if let Some(c) = held.pop() {
        c.close().map_err(|e| e.to_string())?;
    }
    // The supervisor gives the slot back once it has seen the close.
    let mut again = "refused";
    for _ in 0..200 {
        if let Ok(c) = Client::connect_env() {
            held.push(c);
            again = "taken";
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(format!(
        "taken={taken} refused={} again={again} why={why}",
        n - taken
    ))
}

/// Handshake by hand with doorbell wake-ups (as the Python worker does),
/// adopt the connection, leave `n` STDOUT messages and an EXIT in the ring
/// and STOP right away: the supervisor must still read all of them.
pub(crate) fn burst_stop(n: &str) -> Result<(), String> {
    let n: usize = n.parse().map_err(|e| format!("count: {e}"))?;
    let (s, m) = doorbell_handshake()?;
    let fd = m.fd.ok_or("WELCOME without a segment")?;
    let version = u16::try_from(m.arg).map_err(|e| format!("version: {e}"))?;
    let flags = control::welcome_flags(&m.body);
    s.send(ctl::READY, 0, &[], None)
        .map_err(|e| e.to_string())?;
    let mut c = Client::adopt(s, fd, version, flags).map_err(|e| e.to_string())?;
    for i in 0..n {
        c.write_stdout(format!("burst line {i}\n").as_bytes())
            .map_err(|e| e.to_string())?;
    }
    c.exit(9).map_err(|e| e.to_string())?;
    c.close().map_err(|e| e.to_string())
}

/// Handshake by hand, then write nonsense indexes into the ring the
/// supervisor reads, ring the doorbell and wait for its STOP.
pub(crate) fn garbage_ring() -> Result<String, String> {
    let s = ControlSocket::connect(Path::new(&control_path())).map_err(|e| e.to_string())?;
    s.send(ctl::HELLO, 0, &control::hello_body(), None)
        .map_err(|e| e.to_string())?;
    let m = s
        .recv(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?
        .ok_or("no WELCOME")?;
    let fd = m.fd.ok_or("WELCOME without a segment")?;
    let file = File::from(fd);
    // SAFETY: a shared mapping of the segment; only raw bytes are written.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(|e| e.to_string())?;
    s.send(ctl::READY, 0, &[], None)
        .map_err(|e| e.to_string())?;
    let w2s = u32::from_le_bytes([map[0x18], map[0x19], map[0x1a], map[0x1b]]) as usize;
    // head far beyond tail + capacity: a corrupt ring.
    map[w2s..w2s + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    for b in &mut map[w2s + 64..w2s + 64 + 256] {
        *b = 0xAB;
    }
    let _ = s.send(ctl::DATA, 0, &[], None);
    match s.recv(Some(Duration::from_secs(5))) {
        Ok(Some(m)) if m.kind == ctl::STOP => Ok(format!("stop code={}", m.arg)),
        Ok(Some(m)) => Ok(format!("kind=0x{:02x}", m.kind)),
        Ok(None) => Ok("no answer".into()),
        Err(e) => Ok(format!("closed: {e}")),
    }
}
