"""The adapters (asyncio on every backend and loop, trio, anyio) write from any contiguous
buffer and read into the caller's buffer (`read_into`), counting bytes, not items."""

import array
import os
import sys

import pytest

DATA = bytes(range(256)) * 32  # 8 KiB


def ints(data):
    return array.array("I", [int.from_bytes(data[i:i + 4], sys.byteorder)
                             for i in range(0, len(data), 4)])


def test_asyncio_writes_from_buffers_and_reads_into_one(loop_runner, AsyncioContext, files):
    fd = files.open()

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.write(bytearray(DATA[:4096]), fd, 0) == 4096
            # An array of 4-byte items: the count is bytes, not items.
            assert await ctx.write(ints(DATA[4096:]), fd, 4096) == 4096
            target = bytearray(len(DATA))
            assert await ctx.read_into(target, fd, 0) == len(DATA)
            assert bytes(target) == DATA
            short = bytearray(b"\xee" * 100)
            assert await ctx.read_into(short, fd, len(DATA) - 10) == 10
            assert bytes(short[:10]) == DATA[-10:] and bytes(short[10:]) == b"\xee" * 90

    loop_runner.run(body)


def test_asyncio_read_into_refuses_a_read_only_buffer(loop_runner, AsyncioContext, files):
    fd = files.open(DATA)

    async def body():
        async with AsyncioContext() as ctx:
            with pytest.raises(BufferError):
                await ctx.read_into(b"read-only", fd, 0)

    loop_runner.run(body)


def test_a_short_write_of_a_buffer_is_continued_from_the_right_byte(loop_runner, AsyncioContext):
    """A pipe takes a large write in pieces: the rest must start at the next byte of the
    buffer, whatever its item size."""
    r, w = os.pipe()
    payload = ints(DATA * 16)  # 128 KiB, more than a pipe buffer holds
    received = bytearray()

    async def body():
        import asyncio

        loop = asyncio.get_running_loop()

        def drain():
            while len(received) < len(payload) * payload.itemsize:
                received.extend(os.read(r, 1 << 16))

        reader = loop.run_in_executor(None, drain)
        async with AsyncioContext() as ctx:
            assert await ctx.write(payload, w, 0) == len(payload) * payload.itemsize
        await reader

    try:
        loop_runner.run(body)
    finally:
        os.close(r)
        os.close(w)
    assert bytes(received) == payload.tobytes()


def test_trio_and_anyio_read_into(files):
    trio = pytest.importorskip("trio")
    anyio = pytest.importorskip("anyio")
    from caio.anyio_adapter import AnyioContext
    from caio.trio_adapter import TRIO_CONTEXTS

    fd = files.open(DATA)

    async def with_trio():
        for cls in TRIO_CONTEXTS.values():
            async with cls() as ctx:
                target = bytearray(4096)
                assert await ctx.read_into(target, fd, 4096) == 4096
                assert bytes(target) == DATA[4096:8192]

    trio.run(with_trio)

    async def with_anyio():
        async with AnyioContext() as ctx:
            target = memoryview(bytearray(100))
            assert await ctx.read_into(target, fd, 0) == 100
            assert bytes(target) == DATA[:100]

    for backend in ("asyncio", "trio"):
        anyio.run(with_anyio, backend=backend)


def test_asyncio_adapters_pass_flags_through(loop_runner, AsyncioContext, files):
    import caio

    fd = files.open()

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.write(DATA, fd, 0, flags=caio.RWF_DSYNC) == len(DATA)
            # Just written, so cached: a non-waiting read returns it.
            assert await ctx.read(4096, fd, 0, flags=caio.RWF_NOWAIT) == DATA[:4096]
            target = bytearray(100)
            assert await ctx.read_into(target, fd, 100, flags=caio.RWF_NOWAIT) == 100
            assert bytes(target) == DATA[100:200]
            with pytest.raises(ValueError, match="RWF_DSYNC"):
                await ctx.read(10, fd, 0, flags=caio.RWF_DSYNC)

    loop_runner.run(body)
