//! The shared segment file: created by the supervisor (O_EXCL, 0600),
//! mapped with memmap2, unlinked when the supervisor drops it.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapMut;

use super::error::{IpcError, Result, RingId};
use super::layout::{Layout, HEADER_SIZE};
use super::ring::{self, Consumer, Producer, RingRef};

/// Default message size limit (the ring capacity caps it further).
pub const DEFAULT_MAX_MESSAGE: u32 = 16 << 20;

/// A shared mapping. Ring ends hold an `Arc` of it, so the memory outlives
/// every pointer into it.
pub struct Mapping {
    _map: MmapMut,
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all concurrent access goes
// through atomics or raw byte copies (see ring.rs).
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &File) -> Result<Self> {
        // SAFETY: a MAP_SHARED file mapping; we never form Rust references to
        // its bytes (the peer can change them), only raw pointers/atomics.
        let mut map = unsafe { MmapMut::map_mut(file)? };
        let base = map.as_mut_ptr();
        let len = map.len();
        Ok(Mapping {
            _map: map,
            base,
            len,
        })
    }
    pub(crate) fn base(&self) -> *mut u8 {
        self.base
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One container's shared segment.
pub struct Segment {
    file: File,
    map: Arc<Mapping>,
    layout: Layout,
    /// Set for the supervisor's own file: removed on drop.
    unlink: Option<PathBuf>,
}

impl Segment {
    /// Supervisor: create the segment file at `path` (must not exist).
    pub fn create(path: &Path, s2w_capacity: u32, w2s_capacity: u32) -> Result<Self> {
        let layout = Layout::new(s2w_capacity, w2s_capacity)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)?;
        let seg = Self::init(file, layout, Some(path.to_path_buf()));
        if seg.is_err() {
            let _ = std::fs::remove_file(path);
        }
        seg
    }

    /// Supervisor: an anonymous segment (memfd), for tests and benchmarks
    /// that pass the fd rather than a path.
    pub fn create_anonymous(s2w_capacity: u32, w2s_capacity: u32) -> Result<Self> {
        let layout = Layout::new(s2w_capacity, w2s_capacity)?;
        let fd = nix::sys::memfd::memfd_create(
            c"buntime-ipc",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC
                | nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING,
        )?;
        let seg = Self::init(File::from(fd), layout, None)?;
        // The worker gets this fd read-write: without seals it could
        // ftruncate the file and the supervisor's next access to the
        // mapping would die of SIGBUS. Fix the size for good.
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&seg.file),
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        Ok(seg)
    }

    fn init(file: File, layout: Layout, unlink: Option<PathBuf>) -> Result<Self> {
        file.set_len(layout.total_size as u64)?;
        let map = Arc::new(Mapping::new(&file)?);
        let header = layout.header_bytes(std::process::id());
        // SAFETY: the file is new; nobody else maps it yet. The header is
        // inside the first page of a mapping of total_size >= 2 pages.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), map.base(), header.len()) };
        let seg = Segment {
            file,
            map,
            layout,
            unlink,
        };
        ring::init_header(&seg.ring(RingId::S2W)?);
        ring::init_header(&seg.ring(RingId::W2S)?);
        Ok(seg)
    }

    /// Worker: map an existing segment (from the fd the supervisor passed or
    /// the file at `BUNTIME_IPC`) and validate its header.
    pub fn open_fd(fd: OwnedFd) -> Result<Self> {
        let file = File::from(fd);
        let map = Arc::new(Mapping::new(&file)?);
        if map.len() < HEADER_SIZE {
            return Err(IpcError::BadSegment("file smaller than its header".into()));
        }
        let mut header = [0u8; 64];
        // SAFETY: map.len() >= HEADER_SIZE >= 64.
        unsafe { std::ptr::copy_nonoverlapping(map.base(), header.as_mut_ptr(), 64) };
        let layout = Layout::parse(&header, map.len())?;
        Ok(Segment {
            file,
            map,
            layout,
            unlink: None,
        })
    }

    /// Worker: open and map the segment file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)?;
        Self::open_fd(file.into())
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn path(&self) -> Option<&Path> {
        self.unlink.as_deref()
    }

    /// The segment's file descriptor (to pass to the worker).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub(crate) fn ring(&self, id: RingId) -> Result<RingRef> {
        let (off, cap) = match id {
            RingId::S2W => (self.layout.s2w_offset, self.layout.s2w_capacity),
            RingId::W2S => (self.layout.w2s_offset, self.layout.w2s_capacity),
        };
        RingRef::new(self.map.clone(), off, cap, id)
    }

    /// Supervisor's ends: producer of S2W, consumer of W2S. Starts from the
    /// counters the supervisor initialised (0), never from the mapping.
    pub fn supervisor_ends(&self, max_message: u32) -> Result<(Producer, Consumer)> {
        Ok((
            Producer::new(self.ring(RingId::S2W)?, 0, max_message),
            Consumer::new(self.ring(RingId::W2S)?, 0, max_message),
        ))
    }

    /// Worker's ends: producer of W2S, consumer of S2W, resuming from the
    /// counters currently in the mapping.
    pub fn worker_ends(&self, max_message: u32) -> Result<(Producer, Consumer)> {
        let w2s = self.ring(RingId::W2S)?;
        let s2w = self.ring(RingId::S2W)?;
        let head = w2s.head().load(std::sync::atomic::Ordering::Acquire);
        let tail = s2w.tail().load(std::sync::atomic::Ordering::Acquire);
        Ok((
            Producer::new(w2s, head, max_message),
            Consumer::new(s2w, tail, max_message),
        ))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Some(p) = &self.unlink {
            if let Err(e) = std::fs::remove_file(p) {
                tracing::warn!(target: "supervisor", path = %p.display(), error = %e, "could not unlink IPC segment");
            }
        }
    }
}
