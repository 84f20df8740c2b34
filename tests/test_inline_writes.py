"""linux_uring and linux_aio: small buffered writes to regular files complete inline
(``run_inline``).

A small buffered write is a page-cache copy. io_uring punts every one on ext4 to a kernel
worker (no non-blocking buffered writes there), one at a time per file; kernel AIO's
``io_submit`` does the copy on the calling thread anyway, behind an iocb, an event and an
eventfd wake-up. ``Context.run_inline`` runs it on the calling thread, unless it could
wait for the disk (sync flags or descriptors, ``RWF_NOWAIT``, ``O_DIRECT``, a partly
written page that is not cached) or is not a regular file: those go to the backend's own
path as before ("the ring" below).
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import itertools
import os
import threading
import types

import pytest
from conftest import Calls, run_ops
from test_rw_flags import cachestat

BACKENDS = ("linux_uring", "linux_aio")


@pytest.fixture(params=BACKENDS)
def backend(request) -> types.SimpleNamespace:
    """The backend's Context, Operation and AsyncioContext."""
    try:
        raw = importlib.import_module(f"caio.{request.param}")
        adapter = importlib.import_module(f"caio.{request.param}_asyncio")
    except ImportError as exc:  # old kernel, seccomp, io_uring_disabled, ...
        pytest.skip(f"caio.{request.param} is not available: {exc}")
    return types.SimpleNamespace(
        name=request.param, Context=raw.Context, Operation=raw.Operation,
        AsyncioContext=adapter.AsyncioContext,
    )

KiB = 1024
PAGE = os.sysconf("SC_PAGESIZE")
INLINE_WRITE_MAX = 64 * KiB


def drop_cache(fd: int) -> None:
    """Leaves none of the file's pages in the page cache."""
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def is_cached(fd: int, offset: int) -> bool:
    try:
        os.preadv(fd, [bytearray(1)], offset, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    return True


@pytest.mark.parametrize("size", [1, PAGE, 3 * PAGE + 5, INLINE_WRITE_MAX])
def test_a_small_buffered_write_completes_inline_with_its_callback(backend, files, size):
    fd = files.open(b"\0" * (2 * INLINE_WRITE_MAX))
    ctx = backend.Context()
    payload = os.urandom(size)
    op = backend.Operation.write(payload, fd, PAGE)
    calls = Calls()
    op.set_callback(calls)
    assert ctx.run_inline(op) is True
    assert calls.results == [size]
    assert calls.threads == [threading.get_ident()]
    assert op.get_value() == size
    assert op.context is None
    assert os.pread(fd, size, PAGE) == payload
    assert ctx.submit(op) == 0  # done: never written again
    assert ctx.run_inline(op) is False
    assert ctx.process_events() == 0
    assert calls.results == [size]


def test_a_vectored_write_and_one_past_the_end_complete_inline(backend, files):
    fd = files.open(b"abc")
    ctx = backend.Context()
    parts = [b"one ", bytearray(b"two "), memoryview(b"three")]
    op = backend.Operation.writev(parts, fd, 10 * PAGE + 7)
    assert ctx.run_inline(op) is True
    assert op.get_value() == 13
    assert os.pread(fd, 13, 10 * PAGE + 7) == b"one two three"
    assert os.fstat(fd).st_size == 10 * PAGE + 20


def test_a_partial_page_write_runs_inline_only_if_the_page_is_cached(backend, files):
    data = os.urandom(8 * PAGE)
    fd = files.open(data)
    ctx = backend.Context()
    # A non-blocking read that misses starts reading the page in; FADV_RANDOM keeps that
    # to the page asked for, so each check below sees its own page still uncached.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    # The pages the partial writes below touch (1 and 4) must be out of the cache; a
    # freshly written page can escape one FADV_DONTNEED, so drop again until they are
    # (looked at with cachestat, which reads nothing in).
    for _ in range(5):
        drop_cache(fd)
        stats = [cachestat(fd, page * PAGE, PAGE) for page in (1, 4)]
        if None in stats or all(stat[0] == 0 for stat in stats):
            break
    else:
        pytest.skip("pages 1 and 4 stayed cached after POSIX_FADV_DONTNEED")
    if is_cached(fd, 7 * PAGE):
        pytest.skip("this filesystem keeps the pages cached after POSIX_FADV_DONTNEED")
    # whole pages need no read, cached or not
    whole = backend.Operation.write(b"w" * PAGE, fd, 0)
    assert ctx.run_inline(whole) is True
    # a partly written page not in the cache would be read from the disk first (the probe
    # starts reading it in, and if that finishes within the probe the write does run
    # inline, rightly: so at least one of the two is declined, not necessarily both)
    head = backend.Operation.write(b"h" * 10, fd, PAGE + 100)
    tail = backend.Operation.write(b"t" * (PAGE + 10), fd, 3 * PAGE)  # its last page is partial
    declined = []
    for op, size in ((head, 10), (tail, PAGE + 10)):
        if ctx.run_inline(op):
            assert op.get_value() == size
            continue
        assert op.context is None and op.result == 0
        declined.append((op, size))
    assert declined, "both partial-page writes ran inline although their pages were evicted"
    assert run_ops(ctx, *(op for op, _ in declined)) == [[size] for _, size in declined]
    expected = bytearray(data)
    expected[:PAGE] = b"w" * PAGE
    expected[PAGE + 100:PAGE + 110] = b"h" * 10
    expected[3 * PAGE:4 * PAGE + 10] = b"t" * (PAGE + 10)
    assert os.pread(fd, 8 * PAGE, 0) == bytes(expected)
    # once cached (the ring's write read it in), the same kind of write runs inline
    again = backend.Operation.write(b"a" * 10, fd, PAGE + 200)
    assert ctx.run_inline(again) is True
    assert os.pread(fd, 10, PAGE + 200) == b"a" * 10


def test_writes_that_could_wait_or_are_not_to_files_go_to_the_ring(backend, files):
    fd = files.open(b"\0" * (2 * INLINE_WRITE_MAX))
    dsync_fd = files.open(b"\0" * PAGE, name="dsync", flags=os.O_RDWR | os.O_DSYNC)
    sync_fd = files.open(b"\0" * PAGE, name="sync", flags=os.O_RDWR | os.O_SYNC)
    ctx = backend.Context()
    r, w = os.pipe()
    read_only = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    files.fds.append(read_only)
    closed = os.open(os.devnull, os.O_RDONLY)  # after every descriptor the test opens
    os.close(closed)
    try:
        declined = [
            backend.Operation.write(b"L" * (INLINE_WRITE_MAX + 1), fd, 0),  # over the limit
            backend.Operation.write(b"d", fd, 0, flags=os.RWF_DSYNC),  # waits for the disk
            backend.Operation.write(b"s", fd, 0, flags=os.RWF_SYNC),
            backend.Operation.write(b"n", fd, 0, flags=os.RWF_NOWAIT),  # the kernel answers it
            backend.Operation.write(b"D", dsync_fd, 0),
            backend.Operation.write(b"S", sync_fd, 0),
            backend.Operation.write(b"pipe", w, 0),  # not a regular file
        ]
        bad = backend.Operation.write(b"x", closed, 0)  # errors are the backend's to report
        # a write that fails inline (not open for writing) is left to the backend too
        refused = backend.Operation.write(b"r", read_only, 0)
        for op in (*declined, bad, refused):
            assert ctx.run_inline(op) is False
            assert op.context is None and op.result == 0
        results = run_ops(ctx, *declined)
        assert results[:3] == [[INLINE_WRITE_MAX + 1], [1], [1]]
        assert results[4:7] == [[1], [1], [4]]
        for op in (bad, refused):
            if backend.name == "linux_aio":  # io_submit refuses a bad descriptor up front
                with pytest.raises(OSError) as failed:
                    ctx.submit(op)
                assert failed.value.errno == errno.EBADF
            else:  # the ring reports it in the completion
                assert run_ops(ctx, op) == [[-errno.EBADF]]
        assert os.read(r, 4) == b"pipe"
        assert os.pread(dsync_fd, 1, 0) == b"D" and os.pread(sync_fd, 1, 0) == b"S"
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_writes_to_a_filesystem_without_a_block_device_go_to_the_ring(backend):
    """Network, FUSE, overlay and tmpfs files have anonymous device numbers (major 0):
    a write there may wait for a server or a daemon, so it is never run inline."""
    fd = os.open(f"/dev/shm/caio-test-{os.getpid()}", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        assert os.major(os.fstat(fd).st_dev) == 0
        os.pwrite(fd, b"\0" * PAGE, 0)
        ctx = backend.Context()
        payload = os.urandom(PAGE)  # whole pages: no partly written page to look up
        op = backend.Operation.write(payload, fd, 0)
        assert ctx.run_inline(op) is False
        assert run_ops(ctx, op) == [[PAGE]]
        assert os.pread(fd, PAGE, 0) == payload
    finally:
        os.close(fd)
        os.unlink(f"/dev/shm/caio-test-{os.getpid()}")


class CountingSubmits:
    """Stands in for an adapter's Context, counting ``submit`` calls."""

    def __init__(self, inner):
        self.inner = inner
        self.submits = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def submit(self, *ops):
        self.submits += 1
        return self.inner.submit(*ops)


def test_the_adapter_writes_small_buffers_without_the_ring(backend, loop_runner, files):
    fd = files.open()
    parts = [bytes([i]) * (4 * KiB) for i in range(64)]

    async def body():
        ctx = backend.AsyncioContext()
        counting = ctx.context = CountingSubmits(ctx.context)
        try:
            written = await asyncio.gather(
                *(ctx.write(p, fd, i * 4 * KiB) for i, p in enumerate(parts)))
            assert written == [4 * KiB] * 64
            # (a vectored write too)
            assert await ctx.writev([b"ab", b"cd"], fd, 64 * 4 * KiB) == 4
            assert counting.submits == 0
        finally:
            ctx.context = counting.inner
            ctx.close()

    loop_runner.run(body)
    assert os.pread(fd, 64 * 4 * KiB + 4, 0) == b"".join(parts) + b"abcd"


def test_inline_writes_leave_the_loop_to_other_tasks(backend, loop_runner, files):
    """Writes that never suspend still yield within the adapter's inline budget."""
    fd = files.open(b"\0" * (64 * KiB))
    total = 20_000

    async def body():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                await asyncio.sleep(0)
                ticks += 1

        async with backend.AsyncioContext() as ctx:
            task = asyncio.ensure_future(ticker())
            payload = b"y" * 512
            for i in range(total):
                await ctx.write(payload, fd, (i % 128) * 512)
            done = True
            await task
        return ticks

    ticks = loop_runner.run(body)
    # the budget is a few hundred inline completions per loop iteration
    assert ticks >= total // backend.AsyncioContext.INLINE_CAP


def test_an_inline_write_counts_as_several_reads_against_the_inline_budget(backend, loop_runner, files):
    """One task writing in a loop yields after INLINE_BUDGET / INLINE_WRITE_COST writes
    (a write costs about three small cached reads), not after INLINE_BUDGET."""
    fd = files.open(b"\0" * (64 * KiB))

    async def body():
        async with backend.AsyncioContext() as ctx:
            runs: list[int] = []  # writes done before each turn of the other task
            written = 0
            finished = False

            async def other():
                while not finished:
                    runs.append(written)
                    await asyncio.sleep(0)

            task = asyncio.ensure_future(other())
            await asyncio.sleep(0)
            for i in range(4 * ctx.INLINE_BUDGET):
                await ctx.write(b"z" * 512, fd, (i % 64) * 512)
                written += 1
            finished = True
            await task
            stretches = [b - a for a, b in itertools.pairwise(runs)]
            return stretches, ctx.INLINE_BUDGET, ctx.INLINE_WRITE_COST

    stretches, budget, cost = loop_runner.run(body)
    assert cost > 1
    # (a write is charged once done, so the one over the limit yields at the next)
    assert stretches and max(stretches) <= budget // cost + 2, stretches


def test_a_write_to_a_file_not_open_for_writing_fails_as_without_the_inline_path(
        backend, loop_runner, files):
    """The inline attempt fails and leaves the write to the backend, which reports it its
    own way: linux_aio's io_submit refuses it up front with caio's ValueError (our
    SubmitError), io_uring in the completion."""
    fd = files.open(b"\0" * PAGE)
    read_only = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    files.fds.append(read_only)

    async def body():
        async with backend.AsyncioContext() as ctx:
            with pytest.raises(OSError) as failed:
                await ctx.write(b"x" * 10, read_only, 0)
            return failed.value

    error = loop_runner.run(body)
    assert error.errno == errno.EBADF
    if backend.name == "linux_aio":
        assert isinstance(error, ValueError) and type(error).__name__ == "SubmitError"
    assert os.pread(fd, 10, 0) == b"\0" * 10
