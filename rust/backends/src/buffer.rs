//! Heap memory with a chosen alignment, for `O_DIRECT` transfers.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_has_the_requested_alignment() {
        let buf = AlignedBuf::new(8192, 4096).unwrap();
        assert_eq!(buf.as_mut_ptr() as usize % 4096, 0);
        assert_eq!(buf.len(), 8192);
        assert!(AlignedBuf::new(usize::MAX - 4096, 4096).is_none());
    }
}
