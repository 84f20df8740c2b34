"""O_DIRECT on every native backend (linux_uring, linux_aio, thread_aio; raw API and asyncio
adapters): caio's alignment rule for direct I/O, and our improvement of it.

Constructing a read or write on a descriptor opened with ``O_DIRECT`` checks that offset and
size are multiples of the file's direct-I/O alignment (``statx`` ``STATX_DIOALIGN``, else
4096) and raises ValueError naming it otherwise; the kernel then transfers through aligned
memory, so aligned O_DIRECT round trips just work. Files live in ``workdir`` (a real
filesystem); the tests skip where the filesystem refuses ``O_DIRECT`` at open.
"""

import asyncio
import ctypes
import errno
import os
import platform
import struct

import pytest
from conftest import ADAPTERS, short_name

DIRECT_ADAPTERS = [p for p in ADAPTERS if short_name(p.values[0]) != "python_aio"]

KiB = 1024
SIZES = [4 * KiB, 64 * KiB, 256 * KiB]  # 256 KiB: above linux_aio's helper-thread limit

SYS_STATX = {"x86_64": 332, "aarch64": 291}.get(platform.machine())
STATX_DIOALIGN = 0x2000
AT_EMPTY_PATH = 0x1000


def direct_io_alignment(fd):
    """The offset/size alignment the implementation is expected to require for ``fd``."""
    if SYS_STATX is None:
        return None  # unknown architecture: we cannot ask the kernel
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statx
    ret = libc.syscall(SYS_STATX, fd, b"", AT_EMPTY_PATH, STATX_DIOALIGN, buf)
    if ret == 0:
        (mask,) = struct.unpack_from("I", buf.raw, 0)
        mem_align, offset_align = struct.unpack_from("II", buf.raw, 152)
        power_of_two = all(v and v & (v - 1) == 0 for v in (mem_align, offset_align))
        if mask & STATX_DIOALIGN and power_of_two:
            return offset_align
    return 4096


class DirectFile:
    def __init__(self, workdir):
        self.path = workdir / "direct.bin"
        try:
            self.fd = os.open(str(self.path), os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                pytest.skip(f"the filesystem of {workdir} refuses O_DIRECT")
            raise
        # an ordinary descriptor of the same file, to check the data independently
        self.plain = os.open(str(self.path), os.O_RDWR)
        self.alignment = direct_io_alignment(self.fd)
        if self.alignment is not None and self.alignment > 4 * KiB:
            self.close()
            pytest.skip(f"direct-I/O alignment {self.alignment} is larger than these tests use")

    def close(self):
        for fd in (self.fd, self.plain):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def direct(workdir):
    f = DirectFile(workdir)
    try:
        yield f
    finally:
        f.close()


def payload_of(size, seed):
    return bytes((i * 7 + seed) % 251 for i in range(256)) * (size // 256)


def misaligned_requests(alignment):
    """(offset, size) pairs that break the alignment of O_DIRECT in offset or size."""
    a = alignment or 512
    return [(1, a), (a // 2, a), (a, 1), (0, a + 1), (0, a // 2), (3 * a + 8, 2 * a)]


def check_message(exc, alignment):
    text = str(exc)
    assert "O_DIRECT" in text, text
    if alignment is not None:
        assert str(alignment) in text, text


# --------------------------------------------------------------------------------------------
# raw API


def test_direct_write_then_direct_read_round_trip(native_backend, direct):
    ctx = native_backend.Context()
    offsets, payloads, offset = [], [], 0
    for i, size in enumerate(SIZES):
        offsets.append(offset)
        payloads.append(payload_of(size, i))
        offset += size
    writes = [native_backend.write(p, direct.fd, o) for p, o in zip(payloads, offsets)]
    assert native_backend.run(ctx, *writes) == [len(p) for p in payloads]
    assert [w.get_value() for w in writes] == [len(p) for p in payloads]
    expected = b"".join(payloads)
    # independently, through the page cache of an ordinary descriptor
    assert os.pread(direct.plain, len(expected) + 1, 0) == expected

    reads = [native_backend.read(len(p), direct.fd, o) for p, o in zip(payloads, offsets)]
    whole = native_backend.read(len(expected), direct.fd, 0)
    results = native_backend.run(ctx, *reads, whole)
    assert results == [len(p) for p in payloads] + [len(expected)]
    for r, p in zip(reads, payloads):
        assert r.get_value() == p
    assert whole.get_value() == expected
    native_backend.settle(ctx)


def test_block_aligned_requests_below_a_page_work_where_the_device_allows(
    native_backend, direct,
):
    """Page-aligned requests skip the alignment lookup; smaller ones ask the kernel, and
    one aligned to the device's own block size (512 bytes here) must still work."""
    block = direct.alignment or 4096
    if block >= 4096:
        pytest.skip(f"the device's O_DIRECT alignment is {block}: nothing below a page")
    ctx = native_backend.Context()
    data = payload_of(4096, 3)
    os.pwrite(direct.plain, data, 0)
    os.fsync(direct.plain)
    read = native_backend.read(block, direct.fd, block)
    write = native_backend.write(b"w" * block, direct.fd, 2 * block)
    assert native_backend.run(ctx, read, write) == [block, block]
    assert read.get_value() == data[block:2 * block]
    assert os.pread(direct.plain, block, 2 * block) == b"w" * block
    native_backend.settle(ctx)


def test_direct_read_sees_data_written_through_the_page_cache(native_backend, direct):
    data = payload_of(8 * KiB, 3)
    os.pwrite(direct.plain, data, 0)
    os.fsync(direct.plain)
    ctx = native_backend.Context()
    op = native_backend.read(8 * KiB, direct.fd, 0)
    assert native_backend.run(ctx, op) == [8 * KiB]
    assert op.get_value() == data
    native_backend.settle(ctx)


def test_direct_reads_at_and_across_eof(native_backend, direct):
    data = payload_of(8 * KiB, 5) + b"tail" * 25  # 8292 bytes: EOF inside a block
    os.pwrite(direct.plain, data, 0)
    os.fsync(direct.plain)
    ctx = native_backend.Context()
    past = native_backend.read(4 * KiB, direct.fd, 64 * KiB)  # aligned, past EOF
    at_eof = native_backend.read(4 * KiB, direct.fd, 12 * KiB)  # the first block after EOF
    across = native_backend.read(8 * KiB, direct.fd, 4 * KiB)  # short: ends at EOF
    whole = native_backend.read(16 * KiB, direct.fd, 0)
    results = native_backend.run(ctx, past, at_eof, across, whole)
    assert results == [0, 0, len(data) - 4 * KiB, len(data)]
    assert past.get_value() == b""
    assert at_eof.get_value() == b""
    assert across.get_value() == data[4 * KiB:]
    assert whole.get_value() == data
    native_backend.settle(ctx)


@pytest.mark.parametrize("kind", ["read", "write"])
def test_misaligned_request_is_refused_at_construction(native_backend, direct, kind):
    alignment = direct.alignment
    for offset, size in misaligned_requests(alignment):
        with pytest.raises(ValueError) as excinfo:
            if kind == "read":
                native_backend.read(size, direct.fd, offset)
            else:
                native_backend.write(b"m" * size, direct.fd, offset)
        check_message(excinfo.value, alignment)
    # a negative offset is refused before alignment matters (linux_uring: outside loff_t)
    with pytest.raises((ValueError, OverflowError), match="offset"):
        native_backend.read(alignment or 4096, direct.fd, -(alignment or 4096))
    # nothing reached the file
    assert os.fstat(direct.plain).st_size == 0


def test_misaligned_requests_are_fine_on_an_ordinary_descriptor(native_backend, direct):
    ctx = native_backend.Context()
    w = native_backend.write(b"unaligned", direct.plain, 3)
    assert native_backend.run(ctx, w) == [9]
    r = native_backend.read(5, direct.plain, 5)
    small = native_backend.read(1, direct.plain, 0)
    assert native_backend.run(ctx, r, small) == [5, 1]
    assert r.get_value() == b"align"
    assert small.get_value() == b"\0"
    native_backend.settle(ctx)
    # the O_DIRECT descriptor of the same file still refuses the same request
    with pytest.raises(ValueError, match="O_DIRECT"):
        native_backend.read(5, direct.fd, 5)


def test_sync_operations_on_a_direct_descriptor(native_backend, direct):
    ctx = native_backend.Context()
    write = native_backend.write(payload_of(4 * KiB, 9), direct.fd, 0)
    assert native_backend.run(ctx, write) == [4 * KiB]
    ops = [native_backend.Operation.fsync(direct.fd), native_backend.Operation.fdsync(direct.fd)]
    results = native_backend.run(ctx, *ops)
    assert all(r in (0, None) for r in results), results
    assert [op.get_value() for op in ops] == [None, None]
    native_backend.settle(ctx)


# --------------------------------------------------------------------------------------------
# asyncio adapters


@pytest.fixture(params=DIRECT_ADAPTERS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no native asyncio adapter available"))])
def direct_adapter(request):
    return request.param


@pytest.mark.parametrize("deferred", [False, True], ids=["immediate", "deferred"])
def test_adapter_direct_round_trip(loop_runner, direct_adapter, direct, deferred):
    payloads = [payload_of(size, i) for i, size in enumerate(SIZES)]
    offsets = [sum(SIZES[:i]) for i in range(len(SIZES))]
    expected = b"".join(payloads)

    async def body():
        async with direct_adapter.AsyncioContext(deferred=deferred) as ctx:
            written = await asyncio.gather(
                *[ctx.write(p, direct.fd, o) for p, o in zip(payloads, offsets)]
            )
            assert written == [len(p) for p in payloads]
            await ctx.fdsync(direct.fd)
            back = await asyncio.gather(
                *[ctx.read(len(p), direct.fd, o) for p, o in zip(payloads, offsets)]
            )
            assert back == payloads
            assert await ctx.read(len(expected), direct.fd, 0) == expected
            # aligned, past EOF: empty; across EOF: short
            assert await ctx.read(4 * KiB, direct.fd, 1024 * KiB) == b""
            tail = await ctx.read(16 * KiB, direct.fd, len(expected) - 4 * KiB)
            assert tail == expected[-4 * KiB:]

    loop_runner.run(body)
    assert os.pread(direct.plain, len(expected) + 1, 0) == expected


def test_adapter_misaligned_request_raises_value_error(loop_runner, direct_adapter, direct):
    alignment = direct.alignment

    async def body():
        async with direct_adapter.AsyncioContext() as ctx:
            for offset, size in misaligned_requests(alignment):
                with pytest.raises(ValueError) as excinfo:
                    await ctx.read(size, direct.fd, offset)
                check_message(excinfo.value, alignment)
                with pytest.raises(ValueError) as excinfo:
                    await ctx.write(b"m" * size, direct.fd, offset)
                check_message(excinfo.value, alignment)
            # the adapter still works, and an ordinary descriptor takes any request
            assert await ctx.write(b"plain", direct.plain, 1) == 5
            assert await ctx.read(3, direct.plain, 2) == b"lai"

    loop_runner.run(body)
