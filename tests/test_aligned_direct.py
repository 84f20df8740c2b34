"""O_DIRECT through ``caio.aligned_buffer``: memory aligned for the device is transferred in
place (no bounce copy) on every native backend, and works on python_aio too; misaligned
memory is still copied through a bounce buffer, and misaligned offsets or sizes are still
refused at construction.

"No bounce copy" is proven two ways: ``caio._native._direct_bounces()`` (bounce buffers
allocated so far, a test hook) does not move, and a write built from an aligned buffer sees
a change made to the buffer after construction (a bounce would have copied it at
construction). Files live in ``workdir`` (a real filesystem); the tests skip where it
refuses O_DIRECT.
"""

import asyncio
import ctypes
import mmap
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ADAPTERS, short_name
from test_direct_io import DirectFile, payload_of

import caio

native = pytest.importorskip("caio._native")

KiB = 1024
SIZES = [4 * KiB, 64 * KiB, 256 * KiB]  # 256 KiB: above linux_aio's helper-thread limit
DIRECT_ADAPTERS = [p for p in ADAPTERS if short_name(p.values[0]) != "python_aio"]


@pytest.fixture
def direct(workdir):
    f = DirectFile(workdir)
    try:
        yield f
    finally:
        f.close()


def address(buffer) -> int:
    """The address of ``buffer``'s memory (its export released before returning)."""
    view = ctypes.c_char.from_buffer(buffer)
    try:
        return ctypes.addressof(view)
    finally:
        del view


def filled(data: bytes) -> mmap.mmap:
    buffer = caio.aligned_buffer(len(data))
    buffer[:] = data
    return buffer


# --------------------------------------------------------------------------------------------
# the helpers


@pytest.mark.parametrize("size", [1, 4 * KiB, 64 * KiB + 17])
def test_aligned_buffer_is_page_aligned_writable_and_zeroed(size):
    buffer = caio.aligned_buffer(size)
    assert len(buffer) == size
    assert address(buffer) % mmap.PAGESIZE == 0
    assert bytes(buffer) == bytes(size)
    memoryview(buffer)[-1:] = b"x"
    assert buffer[-1:] == b"x"
    buffer.close()


def test_aligned_buffer_takes_an_alignment_up_to_a_page():
    for alignment in (1, 512, mmap.PAGESIZE):
        assert address(caio.aligned_buffer(4 * KiB, alignment)) % alignment == 0
    for bad in (0, -512, 3, 768, 2 * mmap.PAGESIZE):
        with pytest.raises(ValueError, match="alignment"):
            caio.aligned_buffer(4 * KiB, bad)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="size"):
            caio.aligned_buffer(bad)
    with pytest.raises(TypeError):
        caio.aligned_buffer("4096")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        caio.aligned_buffer(4096, 512.0)  # type: ignore[arg-type]


def test_direct_alignment_is_what_statx_reports(direct):
    memory, block = caio.direct_alignment(direct.fd)
    assert block == (direct.alignment or 4096)
    assert memory > 0 and memory & (memory - 1) == 0
    with open(direct.path, "rb") as f:  # an object with fileno()
        assert caio.direct_alignment(f)[1] > 0
    with pytest.raises(OSError):
        caio.direct_alignment(direct.fd + 1000)


# --------------------------------------------------------------------------------------------
# raw API


def test_o_direct_round_trip_through_aligned_buffers(backend, direct):
    """Writes from aligned buffers and reads into aligned buffers, every backend; the
    native ones allocate no bounce buffer for any of them."""
    ctx = backend.Context()
    payloads = [payload_of(size, i) for i, size in enumerate(SIZES)]
    offsets = [sum(SIZES[:i]) for i in range(len(SIZES))]
    sources = [filled(p) for p in payloads]
    targets = [caio.aligned_buffer(len(p)) for p in payloads]
    bounces = native._direct_bounces()
    writes = [backend.Operation.write(s, direct.fd, o) for s, o in zip(sources, offsets)]
    assert backend.run(ctx, *writes) == [len(p) for p in payloads]
    expected = b"".join(payloads)
    assert os.pread(direct.plain, len(expected) + 1, 0) == expected
    reads = [backend.Operation.read_into(t, direct.fd, o) for t, o in zip(targets, offsets)]
    assert backend.run(ctx, *reads) == [len(p) for p in payloads]
    assert [r.get_value() for r in reads] == [len(p) for p in payloads]
    assert [bytes(t) for t in targets] == payloads
    assert native._direct_bounces() == bounces
    backend.settle(ctx)


def test_an_aligned_write_reads_the_callers_memory_not_a_copy(native_backend, direct):
    source = filled(b"a" * (8 * KiB))
    op = native_backend.Operation.write(source, direct.fd, 0)
    # A bounce buffer would have taken "a"s at construction; in place, the kernel reads
    # what the buffer holds when the write runs.
    source[:] = b"b" * (8 * KiB)
    ctx = native_backend.Context()
    assert native_backend.run(ctx, op) == [8 * KiB]
    assert os.pread(direct.plain, 8 * KiB, 0) == b"b" * (8 * KiB)
    native_backend.settle(ctx)


def test_read_into_an_aligned_buffer_past_and_across_eof(native_backend, direct):
    data = payload_of(8 * KiB, 5) + b"tail" * 25  # EOF inside a block
    os.pwrite(direct.plain, data, 0)
    os.fsync(direct.plain)
    ctx = native_backend.Context()
    across, past = caio.aligned_buffer(16 * KiB), caio.aligned_buffer(4 * KiB)
    past[:] = b"p" * (4 * KiB)
    bounces = native._direct_bounces()
    ops = [
        native_backend.Operation.read_into(across, direct.fd, 0),
        native_backend.Operation.read_into(past, direct.fd, 64 * KiB),
    ]
    assert native_backend.run(ctx, *ops) == [len(data), 0]
    assert across[:len(data)] == data
    assert past[:] == b"p" * (4 * KiB)  # nothing read: untouched
    assert native._direct_bounces() == bounces
    native_backend.settle(ctx)


def test_a_block_aligned_slice_of_an_aligned_buffer_is_used_in_place(native_backend, direct):
    _memory, block = caio.direct_alignment(direct.fd)
    buffer = caio.aligned_buffer(4 * block)
    data = payload_of(4 * KiB, 7)[:block]
    os.pwrite(direct.plain, data, block)
    os.fsync(direct.plain)
    ctx = native_backend.Context()
    bounces = native._direct_bounces()
    op = native_backend.Operation.read_into(memoryview(buffer)[block:2 * block], direct.fd, block)
    assert native_backend.run(ctx, op) == [block]
    assert buffer[block:2 * block] == data
    assert native._direct_bounces() == bounces
    native_backend.settle(ctx)


def test_misaligned_memory_is_bounced_and_still_correct(native_backend, direct):
    memory, _block = caio.direct_alignment(direct.fd)
    if memory == 1:
        pytest.skip("the device takes memory at any address")
    ctx = native_backend.Context()
    data = payload_of(8 * KiB, 11)
    # one byte off the device's memory alignment, in the middle of an aligned buffer
    source = caio.aligned_buffer(len(data) + 1)
    source[1:] = data
    misaligned_source = memoryview(source)[1:]
    target = caio.aligned_buffer(len(data) + 1)
    misaligned_target = memoryview(target)[1:]
    bounces = native._direct_bounces()
    write = native_backend.Operation.write(misaligned_source, direct.fd, 0)
    source[1:] = b"z" * len(data)  # bounced: the write has its copy already
    assert native_backend.run(ctx, write) == [len(data)]
    assert os.pread(direct.plain, len(data), 0) == data
    bytes_write = native_backend.Operation.write(data, direct.fd, len(data))  # bytes: bounced
    read = native_backend.Operation.read_into(misaligned_target, direct.fd, 0)
    assert native_backend.run(ctx, bytes_write, read) == [len(data), len(data)]
    assert bytes(misaligned_target) == data
    assert native._direct_bounces() == bounces + 3
    native_backend.settle(ctx)


def test_plain_reads_still_bounce(native_backend, direct):
    os.pwrite(direct.plain, b"r" * (4 * KiB), 0)
    ctx = native_backend.Context()
    bounces = native._direct_bounces()
    op = native_backend.read(4 * KiB, direct.fd, 0)
    assert native_backend.run(ctx, op) == [4 * KiB]
    assert op.get_value() == b"r" * (4 * KiB)
    assert native._direct_bounces() == bounces + 1
    native_backend.settle(ctx)


@pytest.mark.parametrize("kind", ["write", "read_into"])
def test_misaligned_offset_or_size_is_still_refused_from_an_aligned_buffer(
    native_backend, direct, kind,
):
    _memory, block = caio.direct_alignment(direct.fd)
    buffer = caio.aligned_buffer(4 * block)
    make = getattr(native_backend.Operation, kind)
    for view, offset in [(buffer, 1), (memoryview(buffer)[:block + 1], 0),
                         (memoryview(buffer)[:block // 2], block)]:
        with pytest.raises(ValueError, match="O_DIRECT") as excinfo:
            make(view, direct.fd, offset)
        assert str(block) in str(excinfo.value)
    assert os.fstat(direct.plain).st_size == 0


def test_the_aligned_buffer_cannot_be_closed_while_an_op_holds_it(native_backend, direct):
    buffer = caio.aligned_buffer(4 * KiB)
    op = native_backend.Operation.read_into(buffer, direct.fd, 0)
    with pytest.raises(BufferError):
        buffer.close()
    ctx = native_backend.Context()
    assert native_backend.run(ctx, op) == [0]
    native_backend.settle(ctx)
    del op
    buffer.close()  # the export is released once the completion is reaped


# --------------------------------------------------------------------------------------------
# asyncio adapters


@pytest.fixture(params=DIRECT_ADAPTERS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no native asyncio adapter available"))])
def direct_adapter(request):
    return request.param


def test_adapter_writes_an_aligned_buffer_in_place(loop_runner, direct_adapter, direct):
    payloads = [payload_of(size, i) for i, size in enumerate(SIZES)]
    offsets = [sum(SIZES[:i]) for i in range(len(SIZES))]
    sources = [filled(p) for p in payloads]
    bounces = native._direct_bounces()

    async def body():
        async with direct_adapter.AsyncioContext() as ctx:
            written = await asyncio.gather(
                *[ctx.write(s, direct.fd, o) for s, o in zip(sources, offsets)]
            )
            assert written == [len(p) for p in payloads]

    loop_runner.run(body)
    assert native._direct_bounces() == bounces
    expected = b"".join(payloads)
    assert os.pread(direct.plain, len(expected) + 1, 0) == expected


# --------------------------------------------------------------------------------------------
# the README


def test_readme_aligned_buffer_example_runs_as_written(workdir, direct):
    """``direct`` only to skip where the filesystem refuses O_DIRECT."""
    readme = Path(__file__).resolve().parent.parent / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.DOTALL)
    code = next(b for b in blocks if "caio.aligned_buffer(" in b)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "direct.file").read_bytes()[:5] == b"hello"
