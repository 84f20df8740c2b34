"""Fixes from the review of issue 9's merged work.

- The GC never hands Python a read buffer the kernel or a worker may still write.
- A short read's ``payload`` costs neither the unused bound (no zero-fill, no committed
  memory) nor a new object per access.
- linux_uring: a cancel signals the eventfd on SQPOLL rings too.
- The adapters refuse a negative offset with the native backends' message.
- ``cancel()`` of thread_aio reports what the stub says.
"""

import asyncio
import contextlib
import gc
import os
import select
import weakref

import pytest
from conftest import ADAPTERS, Tracker, has_variant, module_by_short_name

needs_uring = pytest.mark.skipif(
    not has_variant("linux_uring"), reason="caio.linux_uring is not available"
)
needs_thread = pytest.mark.skipif(
    not has_variant("thread_aio"), reason="caio.thread_aio is not available"
)

MiB = 1 << 20


def _rss() -> int:
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------------------------
# the GC and the read buffer


def test_gc_does_not_hand_out_an_in_flight_read_buffer(native_backend):
    b = native_backend
    r, w = os.pipe()
    try:
        ctx = b.Context()
        op = b.read(16, r, 0)
        tracker = Tracker(1)
        op.set_callback(tracker.callback(0))
        assert ctx.submit(op) == 1
        if hasattr(ctx, "flush"):
            ctx.flush()
        # In flight (the pipe is empty): the buffer is the kernel's or a worker's.
        assert not any(type(o) is bytes for o in gc.get_referents(op))
        os.write(w, b"kernel-written")
        b.wait_done(ctx, tracker)
        assert op.get_value() == b"kernel-written"
        b.settle(ctx)
    finally:
        os.close(r)
        os.close(w)


def test_gc_still_collects_a_cycle_through_a_write_payload(native_backend, files):
    # A bytes subclass has a __dict__, so a write's payload can close a cycle to its op.
    class Payload(bytes):
        pass

    fd = files.open()
    payload = Payload(b"data")
    op = native_backend.write(payload, fd, 0)
    payload.op = op
    dead = weakref.ref(op)
    del op, payload
    gc.collect()
    assert dead() is None


# --------------------------------------------------------------------------------------------
# a short read's payload


def test_short_read_payload_is_cheap_and_stable(native_backend, files):
    b = native_backend
    bound = 256 * MiB
    fd = files.open()
    os.pwrite(fd, b"hi", 0)
    ctx = b.Context()
    op = b.read(bound, fd, 0)
    assert b.run(ctx, op) == [2]
    before = _rss()
    first = op.payload
    second = op.payload
    third = op.payload
    grown = _rss() - before
    assert grown < 32 * MiB, f"payload committed {grown >> 20} MiB of a 2-byte read"
    if b.short == "linux_uring":
        assert first is second is third
    else:
        assert first.obj is second.obj is third.obj
    assert len(first) == bound
    assert bytes(first[:4]) == b"hi\0\0"
    assert first[bound - 1] == 0
    del first, second, third
    b.settle(ctx)


def test_unsubmitted_read_value_commits_no_memory(native_backend, files):
    fd = files.open()
    op = native_backend.read(256 * MiB, fd, 0)
    before = _rss()
    value = op.get_value()
    grown = _rss() - before
    assert grown < 32 * MiB, f"get_value() committed {grown >> 20} MiB of zeros"
    assert len(value) == 256 * MiB
    assert value[:1] == b"\0"
    assert value[-1] == 0


# --------------------------------------------------------------------------------------------
# linux_uring: a cancel signals the eventfd


@needs_uring
@pytest.mark.parametrize("sqpoll", [False, True], ids=["plain", "sqpoll"])
def test_uring_cancel_signals_the_eventfd(sqpoll, files):
    uring = module_by_short_name("linux_uring")
    ctx = uring.Context(32, sqpoll)
    fd = files.open()
    op = uring.Operation.write(b"x", fd, 0)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    while not tracker.event.is_set():
        ctx.flush()
        ctx.process_events(1, 1, 1)
    with contextlib.suppress(BlockingIOError):
        ctx.poll()  # reset the counter the write's completion left
    with pytest.raises(BlockingIOError):
        ctx.poll()
    assert ctx.cancel(op) == 0
    readable, _, _ = select.select([ctx.fileno], [], [], 5)
    assert readable, f"sqpoll={ctx.sqpoll}: the cancel did not signal the eventfd"
    assert ctx.poll() > 0


# --------------------------------------------------------------------------------------------
# negative offsets: one message


@pytest.fixture
def native_offset_message():
    if not has_variant("thread_aio"):
        pytest.skip("caio.thread_aio is not available")
    thread_aio = module_by_short_name("thread_aio")
    with pytest.raises(ValueError) as native:
        thread_aio.Operation.read(1, 0, -1)
    return str(native.value)


@pytest.mark.parametrize("adapter_module", ADAPTERS)
@pytest.mark.parametrize("call", ["read", "write"])
def test_adapters_refuse_negative_offsets_with_the_native_message(
    adapter_module, call, native_offset_message, files,
):
    fd = files.open()

    async def main():
        async with adapter_module.AsyncioContext() as ctx:
            if call == "read":
                await ctx.read(1, fd, -1)
            else:
                await ctx.write(b"x", fd, -1)

    with pytest.raises(ValueError) as refused:
        asyncio.run(main())
    assert str(refused.value) == native_offset_message


# --------------------------------------------------------------------------------------------
# thread_aio: what cancel() returns


@needs_thread
@pytest.mark.parametrize("mode", ["Context", "EventfdContext"])
def test_thread_aio_cancel_returns_what_the_stub_says(mode, files):
    thread_aio = module_by_short_name("thread_aio")
    ctx = getattr(thread_aio, mode)(max_requests=4, pool_size=1)
    r, w = os.pipe()
    fd = files.open()
    try:
        blocker = thread_aio.Operation.read(1, r, 0)  # holds the only worker
        queued = thread_aio.Operation.write(b"x", fd, 0)
        assert ctx.submit(blocker, queued) == 2
        assert ctx.cancel(queued) == 1, "a queued op is taken back: 1"
        assert ctx.cancel(queued) == 0, "at most once"
        os.write(w, b"!")
    finally:
        ctx.close()
        os.close(r)
        os.close(w)
