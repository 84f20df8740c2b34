//! What a native event loop reaches with O_DIRECT 4 KiB random reads on this crate's
//! io_uring path, with no Python at all: the reference `benchmarks/direct.py` puts beside
//! fio and the asyncio rows (its `native` mode), so that the part of a gap that belongs to
//! the kernel interface is told apart from the part that belongs to the interpreter.
//!
//! It does what the asyncio floor does, minus the interpreter: one thread, an epoll set
//! holding the ring's eventfd, `DEPTH` reads in flight, each completion answered at once
//! with the next read (its own `io_uring_enter`, as the adapters submit), and a sleep in
//! `epoll_wait` whenever nothing has completed.
//!
//! Usage: `direct_floor FILE DEPTH SECONDS` (FILE opened with O_DIRECT); prints one JSON
//! object: `{"ok", "errors", "first_error", "elapsed_s", "cpu_s"}`, `first_error` the
//! result of the first read that did not return a whole block (a negated errno, or the
//! bytes a short read got), or null.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use caio_backends::{AlignedBuf, EventFd, IoKind, IoRequest, Ring};
use caio_core::RequestId;

const BLOCK: usize = 4096;

/// Every block of the file once in a random order, then again (as fio's random map).
struct Offsets {
    table: Vec<i64>,
    next: usize,
}

impl Offsets {
    fn new(size: u64, seed: u64) -> Self {
        let mut table: Vec<i64> = (0..size / BLOCK as u64)
            .map(|b| (b * BLOCK as u64) as i64)
            .collect();
        let mut state = seed | 1;
        for i in (1..table.len()).rev() {
            // xorshift64: any fair shuffle will do.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            table.swap(i, (state % (i as u64 + 1)) as usize);
        }
        Self { table, next: 0 }
    }

    fn take(&mut self) -> i64 {
        let offset = self.table[self.next];
        self.next = (self.next + 1) % self.table.len();
        offset
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one struct rusage into a zeroed local of that type.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// An epoll set watching one descriptor for readability.
struct Epoll(OwnedFd);

impl Epoll {
    fn watching(fd: i32) -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointer; a negative return is handled.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `epfd` is a new descriptor nothing else owns.
        let epoll = Self(unsafe { OwnedFd::from_raw_fd(epfd) });
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: `event` is a live local the kernel copies; both descriptors are open.
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(epoll)
    }

    /// Sleeps until the descriptor is readable (or a signal interrupts the wait).
    fn wait(&self) {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: room for the one event asked for, in a live local.
        unsafe { libc::epoll_wait(self.0.as_raw_fd(), &mut event, 1, -1) };
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: direct_floor FILE DEPTH SECONDS");
        std::process::exit(2);
    }
    let depth: usize = args[2].parse().expect("DEPTH: a positive integer");
    let seconds: f64 = args[3].parse().expect("SECONDS: a number");
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&args[1])?;
    let size = file.metadata()?.len();
    if size < BLOCK as u64 || depth == 0 {
        eprintln!("direct_floor: FILE needs at least one 4 KiB block, DEPTH at least 1");
        std::process::exit(2);
    }
    let mut offsets = Offsets::new(size, depth as u64);
    let eventfd = EventFd::new()?;
    let mut ring = Ring::new(depth.max(32) as u32, false, eventfd.as_raw_fd())?;
    let epoll = Epoll::watching(eventfd.as_raw_fd())?;
    // One buffer per slot; slot `i` is request id `i`, so a buffer has one read at a time.
    let buffers: Vec<AlignedBuf> = (0..depth)
        .map(|_| AlignedBuf::new(BLOCK, BLOCK).expect("aligned memory"))
        .collect();
    let read = |ring: &mut Ring, slot: usize, offset: i64| -> io::Result<()> {
        let request = IoRequest {
            kind: IoKind::Read,
            fd: file.as_raw_fd(),
            offset,
            buf: buffers[slot].as_mut_ptr(),
            len: BLOCK,
            rw_flags: 0,
        };
        // SAFETY: the buffer of `slot` lives until `main` returns, after every read has
        // completed (the loop below ends with none in flight), and only the read of that
        // slot uses it.
        unsafe { ring.stager().push_request(RequestId(slot as u64), &request) }
            .map_err(|_| io::Error::other("submission queue full"))?;
        ring.submit().map(drop)
    };

    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let deadline = start + Duration::from_secs_f64(seconds);
    for slot in 0..depth {
        read(&mut ring, slot, offsets.take())?;
    }
    let mut in_flight = depth;
    let mut done = VecDeque::new();
    while in_flight > 0 {
        epoll.wait();
        let _ = eventfd.read(); // reset first: a later completion signals it again
        ring.reap(&mut done);
        let more = Instant::now() < deadline;
        while let Some(completion) = done.pop_front() {
            if completion.res == BLOCK as i64 {
                ok += 1;
            } else {
                errors += 1;
                first_error.get_or_insert(completion.res);
            }
            if more {
                read(&mut ring, completion.id.0 as usize, offsets.take())?;
            } else {
                in_flight -= 1;
            }
        }
    }
    let (elapsed, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu_start);
    let first_error = first_error.map_or("null".to_string(), |res: i64| res.to_string());
    println!(
        "{{\"ok\": {ok}, \"errors\": {errors}, \"first_error\": {first_error}, \
         \"elapsed_s\": {elapsed}, \"cpu_s\": {cpu}}}"
    );
    Ok(())
}
