"""Writes from any contiguous buffer (bytearray, memoryview slices, mmap, array), on every
backend: the bytes on disk are the buffer's, and a native op holds the buffer's export
from construction until its completion is reaped, so the exporter cannot be resized under
the kernel."""

import array
import gc
import mmap
import os
import sys

import pytest
from conftest import wait_until


def payloads(size=4096):
    data = bytes(range(256)) * (size // 256)
    mapped = mmap.mmap(-1, size)
    mapped[:] = data
    return data, {
        "bytearray": bytearray(data),
        "memoryview-slice": memoryview(b"xx" + data + b"yy")[2:-2],
        "mmap": mapped,
        "array": array.array("B", data),
        # Items of 4 bytes: the size written is the buffer's bytes, not its item count.
        "array-of-ints": array.array("I", [
            int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, size, 4)
        ]),
    }


@pytest.mark.parametrize(
    "kind", ["bytearray", "memoryview-slice", "mmap", "array", "array-of-ints"]
)
def test_a_buffer_payload_lands_on_disk_as_it_is(backend, files, kind):
    data, objects = payloads()
    payload = objects[kind]
    fd = files.open()
    ctx = backend.Context()
    op = backend.write(payload, fd, 4096)
    assert op.nbytes == len(data)
    assert backend.run(ctx, op) == [len(data)]
    assert os.pread(fd, len(data), 4096) == data
    if hasattr(payload, "close"):
        del op
        gc.collect()
        payload.close()


def test_a_native_op_holds_the_export_until_its_completion_is_reaped(native_backend, files):
    fd = files.open()
    ctx = native_backend.Context()
    payload = bytearray(b"held" * 1024)
    op = native_backend.write(payload, fd, 0)
    # The op holds the export: the bytearray cannot change size under it.
    with pytest.raises(BufferError):
        payload.extend(b"more")
    assert native_backend.run(ctx, op) == [4096]
    # Reaped: the exporter is free again; the op still refers to the object.
    payload.extend(b"more")
    assert len(payload) == 4100
    assert os.pread(fd, 4096, 0) == b"held" * 1024


def test_an_export_held_by_a_write_waiting_on_a_full_pipe(native_backend):
    """A write that cannot finish (a pipe nobody reads, full) keeps its export for as long
    as it is in flight, even with every Python reference to it dropped."""
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        try:
            while True:
                os.write(w, b"\0" * 65536)
        except BlockingIOError:
            pass
        os.set_blocking(w, True)
        ctx = native_backend.Context()
        payload = bytearray(b"p" * 4096)
        done = []
        op = native_backend.write(payload, w, 0)
        op.set_callback(done.append)
        assert ctx.submit(op) == 1
        if hasattr(ctx, "flush"):
            ctx.flush()
        del op
        gc.collect()
        with pytest.raises(BufferError):
            payload.append(1)
        # Make room: the write completes, and once it is reaped the export is gone.
        drained = 0
        while drained < 4096:
            drained += len(os.read(r, 1 << 20))

        def delivered():
            if native_backend.pumped:
                native_backend.pump(ctx, timeout=0, min_requests=0)
            return bool(done)

        wait_until(delivered, message="the write to the pipe never completed")
        assert done == [4096]
        wait_until(lambda: _resizable(payload), message="the export was never released")
    finally:
        os.close(r)
        os.close(w)


def _resizable(payload: bytearray) -> bool:
    try:
        payload.append(1)
    except BufferError:
        return False
    payload.pop()
    return True


def test_a_never_submitted_op_releases_its_export_when_freed(native_backend, files):
    fd = files.open()
    payload = bytearray(100)
    op = native_backend.write(payload, fd, 0)
    with pytest.raises(BufferError):
        payload.append(1)
    del op
    gc.collect()
    payload.append(1)


@pytest.mark.parametrize("bad", ["text", ["a", "list"], 12, None])
def test_an_object_without_the_buffer_protocol_is_a_value_error(backend, files, bad):
    fd = files.open()
    before = sys.getrefcount(bad)
    with pytest.raises(ValueError, match="bytes-like"):
        backend.write(bad, fd, 0)
    assert sys.getrefcount(bad) == before


def test_memory_that_is_not_contiguous_is_a_buffer_error(backend, files):
    fd = files.open()
    strided = memoryview(b"abcdefgh")[::2]
    with pytest.raises(BufferError):
        backend.write(strided, fd, 0)


def test_the_payload_is_the_callers_object(backend, files):
    fd = files.open()
    payload = bytearray(b"mine")
    op = backend.write(payload, fd, 0)
    if backend.native:
        assert op.payload is payload
    ctx = backend.Context()
    assert backend.run(ctx, op) == [4]
    assert os.pread(fd, 4, 0) == b"mine"
