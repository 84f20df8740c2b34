"""Reads into the caller's writable buffer (`Operation.read_into`), on every backend: the
bytes land in the caller's object (no new bytes object), `get_value()` is the count, and a
native op holds the buffer's export until its completion is reaped."""

import array
import gc
import mmap
import os
import sys

import pytest

DATA = bytes(range(256)) * 64  # 16 KiB


def targets(size):
    return {
        "bytearray": lambda: bytearray(size),
        "memoryview-slice": lambda: memoryview(bytearray(size + 8))[4:-4],
        "mmap": lambda: mmap.mmap(-1, size),
        "array": lambda: array.array("B", bytes(size)),
    }


@pytest.mark.parametrize("kind", list(targets(1)))
@pytest.mark.parametrize("size", [4096, 16384])
def test_a_read_lands_in_the_callers_buffer(backend, files, kind, size):
    fd = files.open(DATA)
    buffer = targets(size)[kind]()
    op = backend.Operation.read_into(buffer, fd, 0)
    assert op.nbytes == size
    ctx = backend.Context()
    assert backend.run(ctx, op) == [size]
    assert op.get_value() == size
    assert bytes(buffer) == DATA[:size]
    if backend.native:
        assert op.payload is buffer
    if kind == "mmap":
        del op
        gc.collect()
        buffer.close()


def test_a_short_read_fills_the_front_and_leaves_the_rest(backend, files):
    fd = files.open(DATA[:100])
    buffer = bytearray(b"\xee" * 4096)
    op = backend.Operation.read_into(buffer, fd, 0)
    assert backend.run(backend.Context(), op) == [100]
    assert op.get_value() == 100
    assert bytes(buffer[:100]) == DATA[:100]
    assert bytes(buffer[100:]) == b"\xee" * 3996


def test_a_cached_read_into_completes_inline_without_a_new_bytes_object(files):
    """The inline path reads straight into the buffer too."""
    from conftest import NATIVE_BACKENDS

    fd = files.open(DATA)
    os.pread(fd, len(DATA), 0)  # in the page cache
    for param in NATIVE_BACKENDS:
        backend = param.values[0]
        ctx = backend.Context()
        if not hasattr(ctx, "run_inline"):
            continue
        buffer = bytearray(4096)
        op = backend.Operation.read_into(buffer, fd, 4096)
        gc.collect()
        before = sum(1 for o in gc.get_objects() if type(o) is bytes)
        assert ctx.run_inline(op) is True
        assert op.get_value() == 4096
        assert bytes(buffer) == DATA[4096:8192]
        assert sum(1 for o in gc.get_objects() if type(o) is bytes) <= before


def test_a_native_op_holds_the_export_until_reaped(native_backend, files):
    fd = files.open(DATA)
    buffer = bytearray(4096)
    op = native_backend.Operation.read_into(buffer, fd, 0)
    with pytest.raises(BufferError):
        buffer.append(1)
    assert native_backend.run(native_backend.Context(), op) == [4096]
    buffer.append(1)  # released once reaped
    assert len(buffer) == 4097


def test_a_read_into_waiting_on_a_pipe_keeps_its_buffer_until_it_completes(native_backend):
    r, w = os.pipe()
    try:
        ctx = native_backend.Context()
        buffer = bytearray(16)
        done = []
        op = native_backend.Operation.read_into(buffer, r, 0)
        op.set_callback(done.append)
        assert ctx.submit(op) == 1
        if hasattr(ctx, "flush"):
            ctx.flush()
        del op
        gc.collect()
        with pytest.raises(BufferError):
            buffer.append(1)
        os.write(w, b"through the pipe")
        from conftest import wait_until

        def delivered():
            if native_backend.pumped:
                native_backend.pump(ctx, timeout=0, min_requests=0)
            return bool(done)

        wait_until(delivered, message="the pipe read never completed")
        assert done == [16]
        assert bytes(buffer) == b"through the pipe"
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(
    "make", [lambda: b"read-only bytes", lambda: memoryview(bytearray(8)).toreadonly()],
    ids=["bytes", "readonly-view"],
)
def test_a_read_only_buffer_is_a_buffer_error(backend, files, make):
    fd = files.open(DATA)
    target = make()
    with pytest.raises(BufferError):
        backend.Operation.read_into(target, fd, 0)


@pytest.mark.parametrize("bad", ["text", [1, 2], 7])
def test_an_object_without_the_buffer_protocol_is_a_type_error(backend, files, bad):
    fd = files.open(DATA)
    before = sys.getrefcount(bad)
    with pytest.raises(TypeError, match="writable bytes-like"):
        backend.Operation.read_into(bad, fd, 0)
    assert sys.getrefcount(bad) == before


def test_a_failed_read_into_raises_and_leaves_the_buffer(backend, files):
    fd = files.open(DATA, flags=os.O_WRONLY)  # not open for reading: EBADF
    buffer = bytearray(b"\x11" * 64)
    op = backend.Operation.read_into(buffer, fd, 0)
    done = []
    op.set_callback(done.append)
    ctx = backend.Context()
    try:
        submitted = ctx.submit(op)
    except (OSError, ValueError):  # kernel AIO refuses it at submit
        assert bytes(buffer) == b"\x11" * 64
        return
    assert submitted == 1
    from conftest import wait_until

    def delivered():
        if backend.pumped:
            backend.pump(ctx, timeout=0, min_requests=0)
        return bool(done)

    wait_until(delivered, message="the failed read never completed")
    with pytest.raises(OSError):
        op.get_value()
    assert bytes(buffer) == b"\x11" * 64


@pytest.mark.parametrize("vectored", [False, True], ids=["read_into", "readv"])
def test_the_callers_buffer_is_released_before_its_callback(backend, files, vectored):
    """By the time the callback runs the op no longer exports the caller's buffer: a
    bytearray can be resized there, and an mmap closed right after (python_aio used to
    hold its view until the op itself was freed, which a pool worker could delay)."""
    from conftest import Tracker

    fd = files.open(DATA)
    buffer = bytearray(4096)
    op = (backend.Operation.readv([buffer], fd, 0) if vectored
          else backend.Operation.read_into(buffer, fd, 0))
    tracker = Tracker(1)
    record = tracker.callback(0)
    resized = []

    def callback(result):
        try:
            buffer.extend(b"+")
            resized.append(True)
        except BufferError as exc:
            resized.append(exc)
        record(result)

    op.set_callback(callback)
    ctx = backend.Context()
    assert ctx.submit(op) == 1
    backend.wait_done(ctx, tracker)
    assert resized == [True]
    assert bytes(buffer) == DATA[:4096] + b"+"
