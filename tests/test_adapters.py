"""asyncio adapter round trips (read, write, fsync, cancellation), for every adapter in caio.variants_asyncio,
on the default asyncio loop and on uvloop (when installed).

Every coroutine runs through ``loop_runner``, whose loop exception handler must never be
called (checked after each test).
"""

import asyncio
import errno
import fcntl
import hashlib
import os

import pytest
from conftest import BAD_FD_ERRORS, closed_fd, short_name

MiB = 1024 * 1024


def chunk(i: int, size: int) -> bytes:
    """Distinct, position-dependent content for chunk ``i``."""
    seed = hashlib.sha256(i.to_bytes(4, "little")).digest()
    return (seed * (size // len(seed) + 1))[:size]


def test_read_of_empty_file(loop_runner, AsyncioContext, files):
    fd = files.open()

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.read(32, fd, 0) == b""
            assert await ctx.read(1, fd, 1000) == b""

    loop_runner.run(body)


def test_write_returns_len_and_read_back(loop_runner, AsyncioContext, files):
    fd = files.open()

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.write(b"Hello world", fd, 0) == 11
            assert await ctx.read(32, fd, 0) == b"Hello world"
            assert await ctx.write(b"HELLO", fd, 0) == 5
            assert await ctx.read(32, fd, 0) == b"HELLO world"
            assert await ctx.write(b"!", fd, 11) == 1
            assert await ctx.read(32, fd, 0) == b"HELLO world!"

    loop_runner.run(body)
    assert os.pread(fd, 100, 0) == b"HELLO world!"


def test_zero_byte_read_and_write(loop_runner, AsyncioContext, files):
    fd = files.open(b"content")

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.read(0, fd, 0) == b""
            assert await ctx.write(b"", fd, 0) == 0
            assert await ctx.write(b"", fd, 100) == 0
            assert await ctx.read(100, fd, 0) == b"content"

    loop_runner.run(body)
    assert os.fstat(fd).st_size == len(b"content")


def test_eof_short_read(loop_runner, AsyncioContext, files):
    fd = files.open(b"hello")

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.read(100, fd, 0) == b"hello"
            assert await ctx.read(10, fd, 3) == b"lo"
            assert await ctx.read(10, fd, 5) == b""
            # a fresh op asks for the full size again
            assert await ctx.write(b" world", fd, 5) == 6
            assert await ctx.read(100, fd, 0) == b"hello world"

    loop_runner.run(body)


def test_4mib_write_read_sha256(loop_runner, AsyncioContext, files):
    fd = files.open()
    data = os.urandom(4 * MiB)

    async def body():
        async with AsyncioContext() as ctx:
            written = await ctx.write(data, fd, 0)
            assert written == len(data)
            result = await ctx.read(len(data), fd, 0)
            assert len(result) == len(data)
            assert hashlib.sha256(result).hexdigest() == hashlib.sha256(data).hexdigest()

    loop_runner.run(body)
    assert os.fstat(fd).st_size == 4 * MiB


def test_sparse_write_reads_zero_hole(loop_runner, AsyncioContext, files):
    fd = files.open()

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.write(b"tail", fd, 4 * MiB) == 4
            hole = await ctx.read(4 * MiB, fd, 0)
            assert len(hole) == 4 * MiB
            assert hole == bytes(4 * MiB)
            assert await ctx.read(100, fd, 4 * MiB - 2) == b"\0\0tail"

    loop_runner.run(body)
    assert os.fstat(fd).st_size == 4 * MiB + 4


def test_concurrent_small_writes_then_fdsync(loop_runner, AsyncioContext, files):
    fd = files.open()
    part = b"\x00\x01\x02\x03"

    async def body():
        async with AsyncioContext() as ctx:
            results = await asyncio.gather(
                *[ctx.write(bytes([i]) + part[1:], fd, 4 * i) for i in range(32)]
            )
            assert results == [4] * 32
            await ctx.fdsync(fd)
            data = await ctx.read(4 * 32, fd, 0)
            assert data == b"".join(bytes([i]) + part[1:] for i in range(32))

    loop_runner.run(body)


def test_concurrent_non_overlapping_8k_chunks(loop_runner, AsyncioContext, files):
    fd = files.open()
    size = 8 * 1024
    chunks = [chunk(i, size) for i in range(32)]

    async def body():
        async with AsyncioContext() as ctx:
            results = await asyncio.gather(
                *[ctx.write(c, fd, i * size) for i, c in enumerate(chunks)]
            )
            assert results == [size] * 32
            # read back concurrently: every result is its own chunk (no buffer aliasing)
            reads = await asyncio.gather(*[ctx.read(size, fd, i * size) for i in range(32)])
            for i, data in enumerate(reads):
                assert data == chunks[i], f"chunk {i} differs"
            whole = await ctx.read(32 * size, fd, 0)
            assert whole == b"".join(chunks)

    loop_runner.run(body)
    assert os.pread(fd, 32 * size, 0) == b"".join(chunks)


def test_fsync_fdsync(loop_runner, AsyncioContext, files):
    fd = files.open()

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.write(b"durable", fd, 0) == 7
            assert await ctx.fsync(fd) is None
            assert await ctx.fdsync(fd) is None
            for _ in range(20):
                assert await ctx.fdsync(fd) is None
            assert await ctx.read(7, fd, 0) == b"durable"

    loop_runner.run(body)


def test_closed_fd_raises(loop_runner, AsyncioContext, files):
    async def body():
        async with AsyncioContext() as ctx:
            fd = closed_fd()
            with pytest.raises(OSError) as exc_info:
                fcntl.fcntl(fd, fcntl.F_GETFD)
            assert exc_info.value.errno == errno.EBADF
            with pytest.raises(BAD_FD_ERRORS):
                await ctx.read(32, fd, 0)
            with pytest.raises(BAD_FD_ERRORS):
                await ctx.write(b"x", fd, 0)
            with pytest.raises(BAD_FD_ERRORS):
                await ctx.fsync(fd)

    loop_runner.run(body)


@pytest.mark.parametrize("size", [64 * 1024, 128 * 1024], ids=["64k", "128k"])
def test_cancellation_keep_first(loop_runner, AsyncioContext, files, size):
    # 64 KiB is the size caio's own tests cancel; 128 KiB reads cannot be completed inline by any backend's
    # small-read fast path, so they really are in flight when cancelled
    n = 16
    chunks = [chunk(i, size) for i in range(n)]
    fd = files.open(b"".join(chunks))

    async def body():
        async with AsyncioContext() as ctx:
            for _round in range(50):
                tasks = [asyncio.ensure_future(ctx.read(size, fd, i * size)) for i in range(n)]
                done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                first = done.pop()
                assert first.result() == chunks[tasks.index(first)]
                for t in tasks:
                    if t is not first:
                        t.cancel()
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                for i, outcome in enumerate(outcomes):
                    if isinstance(outcome, BaseException):
                        assert isinstance(outcome, asyncio.CancelledError), outcome
                    else:
                        assert outcome == chunks[i]
            # the context still works after all those cancellations
            assert await ctx.read(size, fd, 0) == chunks[0]

    loop_runner.run(body)


def test_cancellation_of_writes(loop_runner, AsyncioContext, files):
    size = 64 * 1024
    n = 16
    fd = files.open()

    async def body():
        async with AsyncioContext() as ctx:
            for round_ in range(20):
                tasks = [
                    asyncio.ensure_future(ctx.write(chunk(round_ * n + i, size), fd, i * size))
                    for i in range(n)
                ]
                _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in pending:
                    t.cancel()
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        assert isinstance(outcome, asyncio.CancelledError), outcome
                    else:
                        assert outcome == size
            assert await ctx.write(b"end", fd, 0) == 3

    loop_runner.run(body)


def test_cancel_right_after_first_step(loop_runner, AsyncioContext, adapter, files):
    size = 128 * 1024  # too big for an inline small-read fast path
    fd = files.open(b"x" * size)
    non_inline = short_name(adapter) in ("thread_aio", "python_aio")

    async def body():
        async with AsyncioContext() as ctx:
            for _ in range(20):
                task = asyncio.ensure_future(ctx.read(size, fd, 0))
                await asyncio.sleep(0)  # the task runs its first step (submits, awaits)
                was_done = task.done()
                task.cancel()
                if was_done:
                    # a backend that completes page-cache reads inside submit
                    assert not non_inline
                    assert task.result() == b"x" * size
                else:
                    with pytest.raises(asyncio.CancelledError):
                        await task
                    assert task.cancelled()
            assert await ctx.read(4, fd, 0) == b"xxxx"

    loop_runner.run(body)


def test_small_max_requests_never_reports_queue_full(loop_runner, AsyncioContext, files):
    size = 4096
    n = 40
    existing = [chunk(1000 + i, size) for i in range(n)]
    fd = files.open(b"".join(existing))
    new = [chunk(i, size) for i in range(n)]
    base = n * size

    async def body():
        async with AsyncioContext(max_requests=2) as ctx:
            writes = [ctx.write(new[i], fd, base + i * size) for i in range(n)]
            reads = [ctx.read(size, fd, i * size) for i in range(n)]
            results = await asyncio.gather(*writes, *reads)
            assert results[:n] == [size] * n
            assert results[n:] == existing
            # and again with reads of the freshly written region
            again = await asyncio.gather(*[ctx.read(size, fd, base + i * size)
                                           for i in range(n)])
            assert again == new

    loop_runner.run(body)


def test_op_after_close_raises_instead_of_hanging(loop_runner, AsyncioContext, files):
    fd = files.open(b"abc")

    async def body():
        ctx = AsyncioContext()
        assert await ctx.read(3, fd, 0) == b"abc"
        ctx.close()
        ctx.close()  # idempotent
        with pytest.raises(RuntimeError):
            # generous hang guard: a TimeoutError here means the op hung
            await asyncio.wait_for(ctx.read(3, fd, 0), 10)
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(ctx.write(b"z", fd, 0), 10)

    loop_runner.run(body)
    assert os.pread(fd, 10, 0) == b"abc"


def test_submit_rejects_foreign_objects(loop_runner, AsyncioContext):
    async def body():
        async with AsyncioContext() as ctx:
            with pytest.raises(ValueError):
                await ctx.submit(object())

    loop_runner.run(body)


def test_many_contexts_in_one_loop(loop_runner, AsyncioContext, files):
    fd = files.open(b"0123456789")

    async def body():
        contexts = [AsyncioContext(max_requests=4) for _ in range(4)]
        try:
            results = await asyncio.gather(
                *[c.read(5, fd, i) for i, c in enumerate(contexts)]
            )
            assert results == [b"01234", b"12345", b"23456", b"34567"]
        finally:
            for c in contexts:
                c.close()

    loop_runner.run(body)
