//! `libbuntime_ipc.so`: the worker-side IPC client behind a small C ABI
//! (header: `crates/buntime-ipc/include/buntime_ipc.h`), for Python ctypes, `bun:ffi` and C.
//!
//! Conventions: functions return >= 0 on success and -1 on error, with the
//! message available from `bi_last_error()` (thread-local). No function
//! unwinds into C: panics are caught and turned into errors.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use crate::{Client, ControlSocket, IpcError, Reply, WaitConfig};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: String) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Run `f`, mapping errors and panics to `err_value` + last error.
fn guard<T>(err_value: T, f: impl FnOnce() -> Result<T, IpcError>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_error(e.to_string());
            err_value
        }
        Err(_) => {
            set_error("internal panic in libbuntime_ipc".into());
            err_value
        }
    }
}

/// Opaque client handle.
pub struct BiClient {
    inner: Client,
}

fn client<'a>(c: *mut BiClient) -> Result<&'a mut Client, IpcError> {
    // SAFETY: the caller passes a handle from bi_connect that it has not
    // closed, and does not share it between threads (documented).
    unsafe { c.as_mut() }
        .map(|c| &mut c.inner)
        .ok_or_else(|| IpcError::Protocol("null client handle".into()))
}

fn bytes<'a>(p: *const u8, len: usize) -> Result<&'a [u8], IpcError> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(IpcError::Protocol(
            "null buffer with non-zero length".into(),
        ));
    }
    // SAFETY: the caller guarantees `p` points at `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Connect to the supervisor. `control_path` NULL: use `$BUNTIME_CONTROL`
/// (and `$BUNTIME_IPC` if the supervisor does not pass the segment fd).
/// Returns NULL on error.
///
/// # Safety
/// `c` must come from `bi_connect` and not be closed or used by another
/// thread concurrently; buffers must be valid for the given lengths and
/// out-pointers NULL or writable (see crates/buntime-ipc/include/buntime_ipc.h).
#[no_mangle]
pub unsafe extern "C" fn bi_connect(control_path: *const c_char) -> *mut BiClient {
    guard(std::ptr::null_mut(), || {
        let inner = if control_path.is_null() {
            Client::connect_env()?
        } else {
            // SAFETY: the caller passes a NUL-terminated string.
            let s = unsafe { CStr::from_ptr(control_path) };
            let p = std::str::from_utf8(s.to_bytes())
                .map_err(|_| IpcError::Protocol("control path is not UTF-8".into()))?;
            let seg = std::env::var_os(crate::ENV_IPC);
            Client::connect(Path::new(p), seg.as_deref().map(Path::new))?
        };
        Ok(Box::into_raw(Box::new(BiClient { inner })))
    })
}

/// Take over a connection whose handshake the caller made itself (HELLO,
/// WELCOME with the segment fd, READY): the Python worker does that in
/// pure Python and loads this library only when it first needs the rings.
/// Both descriptors are owned by the handle afterwards, also on error
/// (closed then). `welcome_flags`: the flags word of WELCOME's body.
/// Returns NULL on error.
///
/// # Safety
/// `control_fd` and `segment_fd` must be open descriptors the caller gives
/// up (a SOCK_SEQPACKET control socket and the WELCOME segment).
#[no_mangle]
pub unsafe extern "C" fn bi_adopt(
    control_fd: c_int,
    segment_fd: c_int,
    version: u16,
    welcome_flags: u32,
) -> *mut BiClient {
    guard(std::ptr::null_mut(), || {
        // Own what was handed over before judging it, so that even refused
        // descriptors are closed (once, if both are the same number).
        // SAFETY: the caller gives both descriptors up (documented).
        let ctrl = (control_fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(control_fd) });
        let seg = (segment_fd >= 0 && segment_fd != control_fd)
            .then(|| unsafe { OwnedFd::from_raw_fd(segment_fd) });
        let (Some(ctrl), Some(seg)) = (ctrl, seg) else {
            return Err(IpcError::Protocol("bi_adopt: bad descriptors".into()));
        };
        let inner = Client::adopt(ControlSocket::from_fd(ctrl), seg, version, welcome_flags)?;
        Ok(Box::into_raw(Box::new(BiClient { inner })))
    })
}

/// Spin budget in microseconds before a wait sleeps on the futex (default 50).
///
/// # Safety
/// `c` must come from `bi_connect` and not be closed or used by another
/// thread concurrently; buffers must be valid for the given lengths and
/// out-pointers NULL or writable (see crates/buntime-ipc/include/buntime_ipc.h).
#[no_mangle]
pub unsafe extern "C" fn bi_set_spin_us(c: *mut BiClient, spin_us: u32) -> c_int {
    guard(-1, || {
        client(c)?.set_wait(WaitConfig {
            spin: Duration::from_micros(u64::from(spin_us)),
        });
        Ok(0)
    })
}

/// Bound on every blocking call in milliseconds (0 = no bound).
///
/// # Safety
/// `c` must come from `bi_connect` and not be closed or used by another
/// thread concurrently; buffers must be valid for the given lengths and
/// out-pointers NULL or writable (see crates/buntime-ipc/include/buntime_ipc.h).
#[no_mangle]
pub unsafe extern "C" fn bi_set_timeout_ms(c: *mut BiClient, timeout_ms: u64) -> c_int {
    guard(-1, || {
        let t = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        client(c)?.set_timeout(t);
        Ok(0)
    })
}

/// Send an unsolicited message: kind 0x00 STDOUT / 0x06 STDERR (split into
/// several messages if large) or 0x07 EXIT (4-byte LE code).
///
/// # Safety
/// `c` must come from `bi_connect` and not be closed or used by another
/// thread concurrently; buffers must be valid for the given lengths and
/// out-pointers NULL or writable (see crates/buntime-ipc/include/buntime_ipc.h).
#[no_mangle]
pub unsafe extern "C" fn bi_send(c: *mut BiClient, kind: u8, data: *const u8, len: usize) -> c_int {
    guard(-1, || {
        let c = client(c)?;
        let data = bytes(data, len)?;
        if kind == crate::kind::EXIT {
            c.send(kind, data)?;
        } else {
            c.write_output(kind, data)?;
        }
        Ok(0)
    })
}

/// Send a request without waiting. Returns its id (> 0), or -1.
///
/// # Safety
/// `c` must come from `bi_connect` and not be closed or used by another
/// thread concurrently; buffers must be valid for the given lengths and
/// out-pointers NULL or writable (see crates/buntime-ipc/include/buntime_ipc.h).
#[no_mangle]
pub unsafe extern "C" fn bi_send_request(
    c: *mut BiClient,
    kind: u8,
    body: *const u8,
    len: usize,
) -> i64 {
    guard(-1, || {
        Ok(i64::from(client(c)?.send_request(kind, bytes(body, len)?)?))
    })
}

/// Store a reply into the caller's out-parameters; returns the body length
/// (which may exceed `cap`: then only `cap` bytes were copied).
fn deliver(
    resp: crate::Response,
    out_kind: *mut u8,
    out: *mut u8,
    cap: usize,
    out_fd: *mut c_int,
) -> i64 {
    let (k, body): (u8, &[u8]) = match &resp.reply {
        Reply::Allow { data, .. } => (crate::kind::ALLOW, data),
        Reply::Deny { reason } => (crate::kind::DENY, reason.as_bytes()),
    };
    let fd = resp.fd.map_or(-1, |f| f.into_raw_fd());
    // SAFETY: each out-pointer is either NULL (ignored) or valid as
    // documented in the header; `out` has room for `cap` bytes.
    unsafe {
        if let Some(k_out) = out_kind.as_mut() {
            *k_out = k;
        }
        if let Some(f) = out_fd.as_mut() {
            *f = fd;
        } else if fd >= 0 {
            // Nobody to hand it to: don't leak it.
            libc::close(fd);
        }
        if !out.is_null() {
            std::ptr::copy_nonoverlapping(body.as_ptr(), out, body.len().min(cap));
        }
    }
    body.len() as i64
}

/// Wait for the reply to request `id`. Writes the reply type (0x10 ALLOW,
/// 0x11 DENY) to `*out_kind`, up to `cap` body bytes (ALLOW data or DENY
/// reason) to `out`, the passed fd or -1 to `*out_fd` (caller owns it).
/// Returns the full body length, or -1.
///
/// # Safety
/// `c` must come from `bi_connect` and not be closed or used by another
/// thread concurrently; buffers must be valid for the given lengths and
/// out-pointers NULL or writable (see crates/buntime-ipc/include/buntime_ipc.h).
#[no_mangle]
pub unsafe extern "C" fn bi_recv(
    c: *mut BiClient,
    id: u32,
    out_kind: *mut u8,
    out: *mut u8,
    cap: usize,
    out_fd: *mut c_int,
) -> i64 {
    guard(-1, || {
        let resp = client(c)?.wait_reply(id)?;
        Ok(deliver(resp, out_kind, out, cap, out_fd))
    })
}

/// `bi_send_request` + `bi_recv` in one call.
///
/// # Safety
/// `c` must come from `bi_connect` and not be closed or used by another
/// thread concurrently; buffers must be valid for the given lengths and
/// out-pointers NULL or writable (see crates/buntime-ipc/include/buntime_ipc.h).
#[no_mangle]
pub unsafe extern "C" fn bi_request(
    c: *mut BiClient,
    kind: u8,
    body: *const u8,
    len: usize,
    out_kind: *mut u8,
    out: *mut u8,
    cap: usize,
    out_fd: *mut c_int,
) -> i64 {
    guard(-1, || {
        let resp = client(c)?.request(kind, bytes(body, len)?)?;
        Ok(deliver(resp, out_kind, out, cap, out_fd))
    })
}

/// Send STOP and free the handle (NULL is a no-op).
///
/// # Safety
/// `c` must come from `bi_connect` and not be closed or used by another
/// thread concurrently; buffers must be valid for the given lengths and
/// out-pointers NULL or writable (see crates/buntime-ipc/include/buntime_ipc.h).
#[no_mangle]
pub unsafe extern "C" fn bi_close(c: *mut BiClient) -> c_int {
    if c.is_null() {
        return 0;
    }
    guard(-1, || {
        // SAFETY: `c` came from bi_connect and is not used after this call.
        let b = unsafe { Box::from_raw(c) };
        b.inner.close()?;
        Ok(0)
    })
}

/// Last error message on this thread (empty if none). Valid until the next
/// call on this thread.
#[no_mangle]
pub extern "C" fn bi_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
