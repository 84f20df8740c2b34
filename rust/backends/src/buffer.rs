//! Heap memory with a chosen alignment, and the `O_DIRECT` policy that sizes it.

use std::alloc::{self, Layout};
use std::fmt;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::aio::{direct_io_alignment, is_direct};

/// An owned, aligned, uninitialised byte buffer (`O_DIRECT` needs the memory aligned to
/// the device's DMA alignment, which `bytes` objects never are).
#[derive(Debug)]
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    len: usize,
}

// SAFETY: the buffer is plain owned memory with no thread affinity; whoever holds it has
// exclusive access, like a `Box<[u8]>`.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` bytes aligned to `align` (a power of two). `None` if the size is not
    /// representable or the allocation fails: callers report that instead of aborting.
    pub fn new(len: usize, align: usize) -> Option<Self> {
        let layout = Layout::from_size_align(len.max(1), align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc(layout) })?;
        Some(Self { ptr, layout, len })
    }

    /// Start of the buffer.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Why a request cannot run on a descriptor opened with `O_DIRECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectError {
    /// The offset or the size is not a multiple of `block`, the file's block size.
    Misaligned {
        /// The alignment the file needs, in bytes.
        block: usize,
    },
    /// The memory of a request that cannot be bounced (a vectored one) does not start at
    /// a multiple of `memory`, the device's memory alignment.
    MisalignedMemory {
        /// The alignment the memory needs, in bytes.
        memory: usize,
    },
    /// The aligned memory could not be allocated.
    NoMemory,
}

impl fmt::Display for DirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned { block } => write!(
                f,
                "O_DIRECT needs offset and size to be multiples of {block} bytes"
            ),
            Self::MisalignedMemory { memory } => write!(
                f,
                "O_DIRECT needs this request's memory aligned to {memory} bytes"
            ),
            Self::NoMemory => f.write_str("cannot allocate aligned memory for O_DIRECT"),
        }
    }
}

impl std::error::Error for DirectError {}

/// What `O_DIRECT` needs on one file (both powers of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectAlignment {
    /// Of the memory transferred.
    pub memory: usize,
    /// Of the file offset and of the size.
    pub block: usize,
}

const PAGE: usize = 4096;

/// Enough for every device with blocks of up to a page.
const PAGE_ALIGNED: DirectAlignment = DirectAlignment {
    memory: PAGE,
    block: PAGE,
};

/// Where an `O_DIRECT` request's data is transferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectPlan {
    /// Straight to or from the caller's memory, which is aligned enough: no copy.
    InPlace,
    /// Through a bounce buffer of this alignment, copied from or into the caller's memory.
    Bounce {
        /// Alignment to allocate the bounce buffer with.
        align: usize,
    },
}

/// The `O_DIRECT` decision, without the lookups: whether the request can run at all, and
/// whether the caller's memory (`caller`: its address, None where it cannot be handed to
/// the kernel) can be used in place. `device` is asked at most once, and only when the
/// request or the memory is not page-aligned.
pub fn direct_plan(
    offset: i64,
    len: usize,
    caller: Option<usize>,
    device: impl FnOnce() -> DirectAlignment,
) -> Result<DirectPlan, DirectError> {
    let mut device = Some(device);
    let mut ask = || device.take().map_or(PAGE_ALIGNED, |f| f());
    let page_aligned = offset >= 0 && offset as u64 % PAGE as u64 == 0 && len % PAGE == 0;
    let mut needs = if page_aligned { PAGE_ALIGNED } else { ask() };
    if offset < 0 || offset as u64 % needs.block as u64 != 0 || len % needs.block != 0 {
        return Err(DirectError::Misaligned { block: needs.block });
    }
    if let Some(address) = caller {
        if page_aligned && address % PAGE != 0 {
            // Not page-aligned, but the device may need less.
            needs = ask();
        }
        if address % needs.memory == 0 {
            return Ok(DirectPlan::InPlace);
        }
    }
    // Page-aligned at least: a transfer that straddles fewer pages needs fewer DMA segments.
    Ok(DirectPlan::Bounce {
        align: needs.memory.max(needs.block).max(PAGE),
    })
}

/// The alignment a request's bounce buffer needs, or why the request cannot run (see
/// [`direct_plan`], for memory that cannot be used in place).
pub fn direct_alignment(
    offset: i64,
    len: usize,
    device: impl FnOnce() -> DirectAlignment,
) -> Result<usize, DirectError> {
    match direct_plan(offset, len, None, device)? {
        DirectPlan::Bounce { align } => Ok(align),
        DirectPlan::InPlace => unreachable!("no caller memory to use in place"),
    }
}

/// The memory an `O_DIRECT` request transfers.
#[derive(Debug)]
pub enum DirectMemory {
    /// The caller's own (aligned) memory.
    InPlace,
    /// Aligned memory of the request's size, uninitialised.
    Bounce(AlignedBuf),
}

/// Bounce buffers allocated so far, process-wide: how tests tell a zero-copy request from
/// a copied one.
static BOUNCE_BUFFERS: AtomicU64 = AtomicU64::new(0);

/// How many `O_DIRECT` bounce buffers [`direct_buffer`] has allocated in this process.
pub fn bounce_buffers_allocated() -> u64 {
    BOUNCE_BUFFERS.load(Ordering::Relaxed)
}

/// For a descriptor opened with `O_DIRECT`: checks the request's alignment and decides
/// whether the kernel can use `caller` (the caller's memory, where it may be handed to the
/// kernel) in place, else allocates aligned memory for it. `Ok(None)` for ordinary
/// descriptors, which transfer straight from the caller's buffer.
pub fn direct_buffer(
    fd: RawFd,
    offset: i64,
    len: usize,
    caller: Option<*const u8>,
) -> Result<Option<DirectMemory>, DirectError> {
    if !is_direct(fd) {
        return Ok(None);
    }
    let plan = direct_plan(offset, len, caller.map(|p| p as usize), || {
        let (memory, block) = direct_io_alignment(fd);
        DirectAlignment { memory, block }
    })?;
    match plan {
        DirectPlan::InPlace => Ok(Some(DirectMemory::InPlace)),
        DirectPlan::Bounce { align } => {
            let buf = AlignedBuf::new(len, align).ok_or(DirectError::NoMemory)?;
            BOUNCE_BUFFERS.fetch_add(1, Ordering::Relaxed);
            Ok(Some(DirectMemory::Bounce(buf)))
        }
    }
}

/// The `O_DIRECT` decision for a vectored request at `offset` over `segments` (each
/// `(address, size)`), which has no bounce buffer: every non-empty segment's memory is used
/// in place, so each must be aligned for the device and sized in whole blocks (what the
/// kernel checks per segment), and the offset a multiple of the block size. `device` is
/// asked at most once, and only when something is not page-aligned.
pub fn direct_segments_plan(
    offset: i64,
    segments: impl IntoIterator<Item = (usize, usize)>,
    device: impl FnOnce() -> DirectAlignment,
) -> Result<(), DirectError> {
    let mut device = Some(device);
    let mut known = None;
    let mut ask = || *known.get_or_insert_with(|| device.take().map_or(PAGE_ALIGNED, |f| f()));
    for (address, len) in segments.into_iter().filter(|&(_, len)| len > 0) {
        if let DirectPlan::Bounce { .. } = direct_plan(offset, len, Some(address), &mut ask)? {
            return Err(DirectError::MisalignedMemory {
                memory: ask().memory,
            });
        }
    }
    // The offset alone, should every segment be empty.
    direct_plan(offset, 0, None, &mut ask).map(|_| ())
}

/// For a descriptor opened with `O_DIRECT`: checks a vectored request (see
/// [`direct_segments_plan`]); `Ok(Some(InPlace))` if it can run, `Ok(None)` for ordinary
/// descriptors.
pub fn direct_segments(
    fd: RawFd,
    offset: i64,
    segments: impl IntoIterator<Item = (usize, usize)>,
) -> Result<Option<DirectMemory>, DirectError> {
    if !is_direct(fd) {
        return Ok(None);
    }
    direct_segments_plan(offset, segments, || {
        let (memory, block) = direct_io_alignment(fd);
        DirectAlignment { memory, block }
    })?;
    Ok(Some(DirectMemory::InPlace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::temp_file;
    use std::os::fd::AsRawFd;

    const SECTOR: DirectAlignment = DirectAlignment {
        memory: 512,
        block: 512,
    };

    fn never_asked() -> DirectAlignment {
        panic!("a page-aligned request must not look the alignment up")
    }

    #[test]
    fn a_vectored_request_needs_every_segment_aligned_and_skips_empty_ones() {
        let page = 0x7000_0000;
        let ok = [(page, 4096), (0x123, 0), (page + 8192, 8192)];
        assert_eq!(direct_segments_plan(4096, ok, never_asked), Ok(()));
        assert_eq!(
            direct_segments_plan(0, [(page, 512), (page + 512, 512)], || SECTOR),
            Ok(())
        );
        assert_eq!(
            direct_segments_plan(0, [(page, 4096), (page + 3, 4096)], || SECTOR),
            Err(DirectError::MisalignedMemory { memory: 512 })
        );
        assert_eq!(
            direct_segments_plan(0, [(page, 4096), (page, 100)], || SECTOR),
            Err(DirectError::Misaligned { block: 512 })
        );
        assert_eq!(
            direct_segments_plan(100, [(0, 0)], || SECTOR),
            Err(DirectError::Misaligned { block: 512 })
        );
    }

    #[test]
    fn a_page_aligned_request_needs_no_lookup() {
        assert_eq!(direct_alignment(0, 4096, never_asked), Ok(4096));
        assert_eq!(direct_alignment(8192, 1 << 20, never_asked), Ok(4096));
        assert_eq!(direct_alignment(0, 0, never_asked), Ok(4096));
    }

    #[test]
    fn any_other_request_is_checked_against_the_files_block_size() {
        let mut asked = 0;
        let mut sector = || {
            asked += 1;
            SECTOR
        };
        assert_eq!(direct_alignment(512, 1024, &mut sector), Ok(4096));
        assert_eq!(
            direct_alignment(100, 512, &mut sector),
            Err(DirectError::Misaligned { block: 512 })
        );
        assert_eq!(
            direct_alignment(512, 100, &mut sector),
            Err(DirectError::Misaligned { block: 512 })
        );
        assert_eq!(asked, 3);
    }

    #[test]
    fn a_page_block_refuses_a_sector_aligned_request() {
        let page = || PAGE_ALIGNED;
        assert_eq!(
            direct_alignment(512, 4096, page),
            Err(DirectError::Misaligned { block: 4096 })
        );
        assert_eq!(
            direct_alignment(0, 512, page),
            Err(DirectError::Misaligned { block: 4096 })
        );
    }

    #[test]
    fn a_negative_offset_is_misaligned_on_every_file() {
        assert_eq!(
            direct_alignment(-1, 4096, || SECTOR),
            Err(DirectError::Misaligned { block: 512 })
        );
        assert_eq!(
            direct_alignment(-4096, 4096, || PAGE_ALIGNED),
            Err(DirectError::Misaligned { block: 4096 })
        );
    }

    #[test]
    fn the_memory_is_aligned_to_the_largest_of_page_block_and_device_memory() {
        let wide = || DirectAlignment {
            memory: 1 << 16,
            block: 512,
        };
        assert_eq!(direct_alignment(512, 512, wide), Ok(1 << 16));
    }

    #[test]
    fn page_aligned_memory_for_a_page_aligned_request_is_used_in_place_without_lookup() {
        assert_eq!(
            direct_plan(0, 8192, Some(0x7000_0000), never_asked),
            Ok(DirectPlan::InPlace)
        );
        assert_eq!(
            direct_plan(4096, 0, Some(0x1000), never_asked),
            Ok(DirectPlan::InPlace)
        );
    }

    #[test]
    fn memory_aligned_to_the_device_but_not_a_page_is_used_in_place() {
        let mut asked = 0;
        let mut sector = || {
            asked += 1;
            SECTOR
        };
        assert_eq!(
            direct_plan(0, 4096, Some(0x1200), &mut sector),
            Ok(DirectPlan::InPlace)
        );
        assert_eq!(
            direct_plan(512, 512, Some(0x1200), &mut sector),
            Ok(DirectPlan::InPlace)
        );
        assert_eq!(asked, 2);
    }

    #[test]
    fn misaligned_memory_is_bounced_and_the_device_asked_once() {
        let mut asked = 0;
        let mut sector = || {
            asked += 1;
            SECTOR
        };
        assert_eq!(
            direct_plan(0, 4096, Some(0x1010), &mut sector),
            Ok(DirectPlan::Bounce { align: 4096 })
        );
        assert_eq!(
            direct_plan(512, 512, Some(0x1010), &mut sector),
            Ok(DirectPlan::Bounce { align: 4096 })
        );
        assert_eq!(asked, 2);
        // On a device that needs a page, only page-aligned memory goes in place.
        assert_eq!(
            direct_plan(0, 4096, Some(0x1200), || PAGE_ALIGNED),
            Ok(DirectPlan::Bounce { align: 4096 })
        );
        // No caller memory (a `bytes` object): always bounced.
        assert_eq!(
            direct_plan(0, 4096, None, never_asked),
            Ok(DirectPlan::Bounce { align: 4096 })
        );
    }

    #[test]
    fn misaligned_offsets_and_sizes_are_refused_whatever_the_memory() {
        assert_eq!(
            direct_plan(100, 512, Some(0x1000), || SECTOR),
            Err(DirectError::Misaligned { block: 512 })
        );
        assert_eq!(
            direct_plan(0, 512, Some(0x1000), || PAGE_ALIGNED),
            Err(DirectError::Misaligned { block: 4096 })
        );
    }

    #[test]
    fn an_ordinary_descriptor_gets_no_buffer() {
        let f = temp_file(b"");
        assert!(matches!(direct_buffer(f.as_raw_fd(), 3, 7, None), Ok(None)));
    }

    #[test]
    fn an_o_direct_descriptor_gets_an_aligned_buffer_or_the_reason_why_not() {
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!("caio-direct-{}", std::process::id()));
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path);
        let _ = std::fs::remove_file(&path);
        let f = match opened {
            Ok(f) => f,
            // A filesystem without O_DIRECT (old tmpfs): nothing to check here.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => panic!("open with O_DIRECT: {e}"),
        };
        let before = bounce_buffers_allocated();
        let Some(DirectMemory::Bounce(buf)) =
            direct_buffer(f.as_raw_fd(), 4096, 8192, None).unwrap()
        else {
            panic!("no caller memory: a bounce buffer");
        };
        assert_eq!(buf.len(), 8192);
        assert_eq!(buf.as_mut_ptr() as usize % 4096, 0);
        assert!(bounce_buffers_allocated() > before);
        let own = AlignedBuf::new(8192, 4096).unwrap();
        assert!(matches!(
            direct_buffer(f.as_raw_fd(), 4096, 8192, Some(own.as_mut_ptr())),
            Ok(Some(DirectMemory::InPlace))
        ));
        assert_eq!(
            direct_buffer(f.as_raw_fd(), 1, 4096, Some(own.as_mut_ptr())).unwrap_err(),
            DirectError::Misaligned {
                block: direct_io_alignment(f.as_raw_fd()).1
            }
        );
    }

    #[test]
    fn the_buffer_has_the_requested_alignment() {
        let buf = AlignedBuf::new(8192, 4096).unwrap();
        assert_eq!(buf.as_mut_ptr() as usize % 4096, 0);
        assert_eq!(buf.len(), 8192);
        assert!(AlignedBuf::new(usize::MAX - 4096, 4096).is_none());
    }
}
