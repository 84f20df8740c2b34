//! Heap memory with a chosen alignment, and the `O_DIRECT` policy that sizes it.

use std::alloc::{self, Layout};
use std::fmt;
use std::os::fd::RawFd;
use std::ptr::NonNull;

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

/// The `O_DIRECT` decision, without the lookups: the alignment to allocate a request's
/// memory with, or why the request cannot run. `device` gives the file's alignment; it is
/// only asked for a request that is not page-aligned, so the common case pays no `statx`.
pub fn direct_alignment(
    offset: i64,
    len: usize,
    device: impl FnOnce() -> DirectAlignment,
) -> Result<usize, DirectError> {
    let page_aligned = offset >= 0 && offset as u64 % PAGE as u64 == 0 && len % PAGE == 0;
    let DirectAlignment { memory, block } = if page_aligned { PAGE_ALIGNED } else { device() };
    if offset < 0 || offset as u64 % block as u64 != 0 || len % block != 0 {
        return Err(DirectError::Misaligned { block });
    }
    // Page-aligned at least: a transfer that straddles fewer pages needs fewer DMA segments.
    Ok(memory.max(block).max(PAGE))
}

/// For a descriptor opened with `O_DIRECT`: checks the request's alignment and allocates
/// the aligned memory the kernel will transfer (uninitialised). `Ok(None)` for ordinary
/// descriptors, which transfer straight from the caller's buffer.
pub fn direct_buffer(
    fd: RawFd,
    offset: i64,
    len: usize,
) -> Result<Option<AlignedBuf>, DirectError> {
    if !is_direct(fd) {
        return Ok(None);
    }
    let align = direct_alignment(offset, len, || {
        let (memory, block) = direct_io_alignment(fd);
        DirectAlignment { memory, block }
    })?;
    AlignedBuf::new(len, align)
        .map(Some)
        .ok_or(DirectError::NoMemory)
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
    fn an_ordinary_descriptor_gets_no_buffer() {
        let f = temp_file(b"");
        assert!(matches!(direct_buffer(f.as_raw_fd(), 3, 7), Ok(None)));
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
        let buf = direct_buffer(f.as_raw_fd(), 4096, 8192).unwrap().unwrap();
        assert_eq!(buf.len(), 8192);
        assert_eq!(buf.as_mut_ptr() as usize % 4096, 0);
        assert_eq!(
            direct_buffer(f.as_raw_fd(), 1, 4096).unwrap_err(),
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
