//! Facts about this process and kernel that the bridge needs: which process and fork
//! generation it is (a child of `fork()` shares the parent's kernel objects but has none of
//! its threads), and the kernel release the probes name.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// Bumped in every child of `fork()` (by a `pthread_atfork` handler).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    // Only an atomic: the child of a threaded process may run async-signal-safe code only
    // until it execs or exits.
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// How many `fork()`s separate this process from the first one that asked (0 there).
/// Registers the `fork()` handler on first use; compare two values to tell whether
/// something was made in this process or inherited.
pub fn fork_generation() -> u64 {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a child handler that only touches an atomic; no pointer is kept.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    FORK_GENERATION.load(Ordering::SeqCst)
}

/// This process's id.
pub fn pid() -> i32 {
    // SAFETY: getpid takes nothing and cannot fail.
    unsafe { libc::getpid() }
}

/// The running kernel's release (`uname -r`), or `"unknown"`.
pub fn kernel_release() -> String {
    // SAFETY: `uname` fills a zeroed struct on our stack; its strings are NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::from("unknown");
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// `(major, minor)` of [`kernel_release`]; `(0, 0)` if it cannot be read.
pub fn kernel_version() -> (u32, u32) {
    let release = kernel_release();
    let mut parts = release.split(['.', '-']);
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_sees_a_new_generation_and_its_own_pid() {
        let parent = (fork_generation(), pid());
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only reads atomics, calls getpid, writes to a pipe and _exits.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let changed = fork_generation() != parent.0 && pid() != parent.1;
            // SAFETY: one byte from a local to the pipe's write end, then _exit.
            unsafe {
                libc::write(fds[1], [changed as u8].as_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        let mut byte = [0u8];
        // SAFETY: one byte into a local from the pipe's read end; waitpid on our child.
        unsafe {
            assert_eq!(libc::read(fds[0], byte.as_mut_ptr().cast(), 1), 1);
            libc::waitpid(child, std::ptr::null_mut(), 0);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        assert_eq!(byte[0], 1);
        assert_eq!(fork_generation(), parent.0, "the parent is unchanged");
    }

    #[test]
    fn the_kernel_version_is_read() {
        assert!(kernel_version() >= (3, 0), "{}", kernel_release());
    }
}
