//! Kernel-facing backends of caio. They move bytes between files and buffers that someone
//! else owns, seen here only as `(ptr, len)`; nothing in this crate knows about Python.
//!
//! - [`io`]: one request ([`IoRequest`]) and the blocking and non-blocking syscalls that run it.
//! - [`eventfd`]: the wake-up counter an event loop watches.
//! - [`thread_pool`]: worker threads that run requests and hand back [`Completion`]s.
//! - [`event_queue`]: completions parked for a consumer thread, announced on an eventfd.
//! - [`uring`]: an io_uring instance: setup, staging, submission, reaping.
//! - [`aio`]: a Linux kernel AIO context through raw syscalls.
//! - [`driver`]: the [`Driver`] contract a Context is built on, one driver per mechanism.
//!
//! [`Completion`]: caio_core::Completion
#![warn(missing_docs)]

pub mod aio;
pub mod buffer;
pub mod driver;
pub mod event_queue;
pub mod eventfd;
pub mod io;
pub mod process;
pub mod thread_pool;
pub mod uring;

#[cfg(test)]
pub(crate) mod test_util;

pub use buffer::AlignedBuf;
pub use driver::{
    CancelOutcome, Delivery, DispatchError, Dispatched, Driver, Entry, InFlight, Submission,
};
pub use event_queue::EventQueue;
pub use eventfd::EventFd;
pub use io::{IoKind, IoRequest};
pub use thread_pool::{spawn_without_signals, Cancelled, CompletionSink, SubmitError, ThreadPool};
pub use uring::{Ring, RingFull, Stager};
