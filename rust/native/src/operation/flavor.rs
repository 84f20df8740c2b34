//! What an Operation does differently per backend, in one table. caio's native backends
//! differ in details users can observe, and we keep each as it was: the rest of this
//! module asks the table instead of checking which backend it is.

use std::ffi::CStr;

use caio_backends::IoKind;

/// Which backend's conventions an Operation follows (its row in the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Flavor {
    /// thread_aio.
    Thread = 0,
    /// linux_uring.
    Uring = 1,
    /// linux_aio.
    Aio = 2,
}

impl Flavor {
    /// Back from the `u8` the per-backend trampolines are instantiated with.
    pub(super) const fn from_u8(v: u8) -> Self {
        match v {
            1 => Flavor::Uring,
            2 => Flavor::Aio,
            _ => Flavor::Thread,
        }
    }

    /// The Operation type's qualified name, its name in `caio._native`, and its doc.
    pub(crate) const fn type_names(self) -> (&'static CStr, &'static CStr, &'static CStr) {
        match self {
            Flavor::Thread => (
                c"caio.thread_aio.Operation",
                c"ThreadOperation",
                c"A file operation for caio.thread_aio.Context (read, write, fsync, fdsync).",
            ),
            Flavor::Uring => (
                c"caio.linux_uring.Operation",
                c"UringOperation",
                c"A file operation for caio.linux_uring.Context (read, write, fsync, fdsync).",
            ),
            Flavor::Aio => (
                c"caio.linux_aio.Operation",
                c"AioOperation",
                c"A file operation for caio.linux_aio.Context (read, write, fsync, fdsync).",
            ),
        }
    }

    pub(super) const fn behaviour(self) -> &'static Behaviour {
        match self {
            Flavor::Thread => &THREAD,
            Flavor::Uring => &URING,
            Flavor::Aio => &AIO,
        }
    }
}

/// One backend's conventions.
pub(super) struct Behaviour {
    pub(super) priority: Priority,
    /// What `offset` accepts below 0.
    pub(super) negative_offset: NegativeOffset,
    /// What `result` and the callback get for a failed op.
    pub(super) failed_result: FailedResult,
    /// A completed write's `nbytes` becomes the bytes written (else it stays the size
    /// asked for).
    pub(super) write_nbytes_is_written: bool,
    /// A write's payload is dropped once the write completes (`payload` is then None).
    pub(super) write_payload_dropped: bool,
    /// What a read's `payload` is.
    pub(super) read_payload: ReadPayload,
    /// The largest read the backend can express, above which `read` refuses.
    pub(super) read_limit: Option<ReadLimit>,
}

/// How `priority` is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
    /// Masked to an unsigned short (`H`), as caio parsed it where it was unused.
    Masked,
    /// A range-checked signed short (`h`): linux_aio passes it on as `aio_reqprio`.
    Signed,
}

/// What an offset below 0 means. Every backend takes an `loff_t`, 0 ..= 2**63 - 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NegativeOffset {
    /// Refused with `ValueError` (kernel AIO's refusal in caio): the backend is positional,
    /// so nothing reaches a call that reads -1 as "the current position" (`preadv2`).
    Refused,
    /// Only -1 (also given as 2**64 - 1, what caio's unsigned parsing made of it): "the
    /// file position", for pipes and other streams; any other is an `OverflowError`.
    FilePosition,
}

/// What `result` and the callback get for a failed op (`error` is the errno on all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailedResult {
    /// -1, as the syscall returned it.
    MinusOne,
    /// The negated errno, as the kernel's completion carries it.
    NegatedErrno,
}

/// What a read's `payload` is: always the whole requested size, zero tail included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadPayload {
    /// A memoryview of it.
    MemoryView,
    /// A bytes object (caio handed out its buffer object).
    Bytes,
}

/// A read size limit: `max` bytes, named after what imposes it.
pub(super) struct ReadLimit {
    pub(super) max: u64,
    pub(super) name: &'static str,
}

const THREAD: Behaviour = Behaviour {
    priority: Priority::Masked,
    negative_offset: NegativeOffset::Refused,
    failed_result: FailedResult::MinusOne,
    write_nbytes_is_written: false,
    write_payload_dropped: true,
    read_payload: ReadPayload::MemoryView,
    read_limit: None,
};

const URING: Behaviour = Behaviour {
    priority: Priority::Masked,
    negative_offset: NegativeOffset::FilePosition,
    failed_result: FailedResult::NegatedErrno,
    write_nbytes_is_written: false,
    write_payload_dropped: false,
    read_payload: ReadPayload::Bytes,
    // A submission entry's length is 32 bits.
    read_limit: Some(ReadLimit {
        max: u32::MAX as u64,
        name: "io_uring",
    }),
};

const AIO: Behaviour = Behaviour {
    priority: Priority::Signed,
    negative_offset: NegativeOffset::Refused,
    failed_result: FailedResult::NegatedErrno,
    write_nbytes_is_written: true,
    write_payload_dropped: false,
    read_payload: ReadPayload::MemoryView,
    read_limit: None,
};

impl Behaviour {
    /// The argument format of a classmethod. `offset` is taken as an object and checked
    /// by `new::offset_arg`; a read's or write's keyword-only `flags` is range-checked
    /// (`L`) and then checked by `new::flags_arg`.
    pub(super) fn format(&self, kind: IoKind) -> &'static CStr {
        match (self.priority, kind) {
            (Priority::Masked, IoKind::Read) => c"KI|OH$L:read",
            (Priority::Signed, IoKind::Read) => c"KI|Oh$L:read",
            (Priority::Masked, IoKind::Write) => c"OI|OH$L:write",
            (Priority::Signed, IoKind::Write) => c"OI|Oh$L:write",
            (Priority::Masked, IoKind::Fsync) => c"I|H:fsync",
            (Priority::Signed, IoKind::Fsync) => c"I|h:fsync",
            (Priority::Masked, IoKind::Fdsync) => c"I|H:fdsync",
            (Priority::Signed, IoKind::Fdsync) => c"I|h:fdsync",
            (Priority::Masked, IoKind::ReadV) => c"OI|OH$L:readv",
            (Priority::Signed, IoKind::ReadV) => c"OI|Oh$L:readv",
            (Priority::Masked, IoKind::WriteV) => c"OI|OH$L:writev",
            (Priority::Signed, IoKind::WriteV) => c"OI|Oh$L:writev",
        }
    }

    /// The argument format of `read_into(buffer, fd, offset=0, priority=0, *, flags=0)`.
    pub(super) fn read_into_format(&self) -> &'static CStr {
        match self.priority {
            Priority::Masked => c"OI|OH$L:read_into",
            Priority::Signed => c"OI|Oh$L:read_into",
        }
    }

    /// What `result` and the callback show for `res` (bytes transferred or a negated
    /// errno).
    pub(super) fn reported(&self, res: i64) -> i64 {
        match self.failed_result {
            FailedResult::MinusOne if res < 0 => -1,
            _ => res,
        }
    }
}
