"""aiofile on top of every available caio asyncio adapter (a real client of the API)."""

import asyncio
import hashlib
import os

import pytest

aiofile = pytest.importorskip("aiofile")

LINES = [f"line {i}: {'x' * (i % 37)} ünïcode ✓\n" for i in range(200)]


def test_text_lines_round_trip(loop_runner, AsyncioContext, files):
    path = files.path("lines.txt")

    async def body():
        ctx = AsyncioContext()
        try:
            async with aiofile.async_open(path, "w+", context=ctx) as afp:
                for line in LINES:
                    await afp.write(line)
                await afp.flush(sync_metadata=True)  # fsync
                await afp.flush()  # fdsync
                seen = [line async for line in afp]
            assert seen == LINES
        finally:
            ctx.close()

    loop_runner.run(body)
    with open(path, encoding="utf-8") as fp:
        assert fp.read() == "".join(LINES)


def test_binary_chunks_and_readline(loop_runner, AsyncioContext, files):
    path = files.path("data.bin")
    blob = os.urandom(300 * 1024) + b"\nlast line\n"

    async def body():
        ctx = AsyncioContext()
        try:
            async with aiofile.async_open(path, "wb+", context=ctx) as afp:
                assert await afp.write(blob) == len(blob)
                await afp.file.fsync()
                afp.seek(0)
                assert await afp.read() == blob
                digest = hashlib.sha256()
                afp.seek(0)
                async for chunk in afp.iter_chunked(64 * 1024):
                    digest.update(chunk)
                assert digest.hexdigest() == hashlib.sha256(blob).hexdigest()

            async with aiofile.async_open(path, "rb", context=ctx) as afp:
                afp.seek(len(blob) - len(b"last line\n"))
                assert await afp.readline() == b"last line\n"
                assert await afp.readline() == b""
        finally:
            ctx.close()

    loop_runner.run(body)


def test_aiofile_concurrent_writers(loop_runner, AsyncioContext, files):
    path = files.path("concurrent.bin")
    size = 16 * 1024
    parts = [bytes([i]) * size for i in range(32)]

    async def body():
        ctx = AsyncioContext(max_requests=4)
        try:
            async with aiofile.AIOFile(path, "wb+", context=ctx) as afp:
                await asyncio.gather(
                    *[afp.write_bytes(p, i * size) for i, p in enumerate(parts)]
                )
                await afp.fdsync()
                assert await afp.read_bytes(32 * size, 0) == b"".join(parts)
        finally:
            ctx.close()

    loop_runner.run(body)
