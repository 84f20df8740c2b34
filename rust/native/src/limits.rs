//! Errors of a Context that could not get a kernel or process resource.
//!
//! A limit that was hit is raised as `OSError(errno, message)` (Python picks the subclass:
//! `BlockingIOError` for `EAGAIN`, `PermissionError` for `EPERM`), the message naming the
//! limit and how to raise it, so that users (and `caio.AsyncioContext`, which then falls
//! back to another backend) can tell it from a bad argument. Any other failure keeps the
//! error caio raised.

use std::io;

use crate::error::Error;

/// The resource a Context constructor failed to get.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Resource {
    /// `eventfd()`.
    EventFd,
    /// Kernel AIO's `io_setup(events)`.
    AioContext { events: u32 },
    /// `io_uring_setup()` (and the ring's mappings).
    Ring,
}

impl Resource {
    fn call(self) -> &'static str {
        match self {
            Resource::EventFd => "eventfd",
            Resource::AioContext { .. } => "io_setup",
            Resource::Ring => "io_uring_setup",
        }
    }
}

/// The error to raise when getting `resource` failed with `e`.
pub(crate) fn setup_error(resource: Resource, e: io::Error) -> Error {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    match explain(resource, errno) {
        Some(why) => Error::Os(errno, format!("{}: {why}", resource.call())),
        None => Error::Errno(errno),
    }
}

/// Which limit `errno` from getting `resource` means and how to raise it; `None` if it is not a limit.
pub(crate) fn explain(resource: Resource, errno: i32) -> Option<String> {
    let text = match (resource, errno) {
        (_, libc::EMFILE) => "this process is out of file descriptors (RLIMIT_NOFILE, see \
             `ulimit -n`): close some, or raise the limit (`ulimit -n`, \
             resource.setrlimit(resource.RLIMIT_NOFILE, ...))"
            .into(),
        (_, libc::ENFILE) => "the system is out of file descriptors (fs.file-max): close \
             some, or raise it (`sysctl -w fs.file-max=...`)"
            .into(),
        (Resource::AioContext { events }, libc::EAGAIN) => aio_events_used_up(events),
        (Resource::AioContext { .. }, libc::ENOSYS | libc::EPERM) => "kernel AIO is not \
             available: the kernel is built without CONFIG_AIO, or a seccomp filter (e.g. a \
             container runtime's) blocks io_setup"
            .into(),
        (Resource::Ring, libc::EPERM | libc::EACCES) => io_uring_refused(),
        (Resource::Ring, libc::ENOSYS) => "io_uring is not available: the kernel is \
             built without CONFIG_IO_URING, or a seccomp filter (e.g. a container runtime's) \
             blocks io_uring_setup"
            .into(),
        (Resource::Ring, libc::ENOMEM) => "not enough memory for the ring: on kernels \
             before 5.12 it is locked memory (RLIMIT_MEMLOCK, see `ulimit -l`), later it is \
             charged to the memory cgroup; lower max_requests or raise the limit"
            .into(),
        (Resource::Ring, libc::EAGAIN) => "the kernel could not start the ring's \
             thread (RLIMIT_NPROC, kernel.threads-max)"
            .into(),
        (_, libc::ENOMEM) => "out of memory".into(),
        _ => return None,
    };
    Some(text)
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `io_setup` EAGAIN: `fs.aio-max-nr` is machine-wide and each Context holds its
/// `max_requests` of it until it is freed.
fn aio_events_used_up(events: u32) -> String {
    let (Some(max), Some(used)) = (
        read_number("/proc/sys/fs/aio-max-nr"),
        read_number("/proc/sys/fs/aio-nr"),
    ) else {
        return "kernel AIO events are used up (the machine-wide limit fs.aio-max-nr): close \
                unused Contexts, or raise it (`sysctl -w fs.aio-max-nr=...`)"
            .into();
    };
    let events = u64::from(events);
    let wanted = (used + events).max(2 * max).next_power_of_two();
    let state = if events > max {
        format!(
            "this Context asks for {events} events, more than the machine-wide limit \
                 fs.aio-max-nr ({max}) allows: lower max_requests, or raise the limit"
        )
    } else {
        format!(
            "kernel AIO events are used up: this Context asks for {events} of the \
                 machine-wide limit fs.aio-max-nr ({max}), of which {used} are taken by open \
                 Contexts of all processes (/proc/sys/fs/aio-nr): close unused Contexts, or \
                 raise the limit"
        )
    };
    format!("{state} (`sysctl -w fs.aio-max-nr={wanted}`)")
}

/// `io_uring_setup` EPERM: `kernel.io_uring_disabled` (Linux 6.6+) or a seccomp filter.
fn io_uring_refused() -> String {
    match read_number("/proc/sys/kernel/io_uring_disabled") {
        Some(2) => "io_uring is disabled on this machine (kernel.io_uring_disabled = 2): \
                    enable it with `sysctl -w kernel.io_uring_disabled=0`"
            .into(),
        Some(1) => "io_uring is limited to the group kernel.io_uring_group \
                    (kernel.io_uring_disabled = 1): add this user to that group, or \
                    `sysctl -w kernel.io_uring_disabled=0`"
            .into(),
        _ => "io_uring is refused to this process: a seccomp filter (container runtimes \
              block io_uring by default) or a security module denies it, or \
              kernel.io_uring_disabled (check `sysctl kernel.io_uring_disabled`)"
            .into(),
    }
}
