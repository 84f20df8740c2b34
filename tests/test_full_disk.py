"""A full filesystem: the adapters never report a short write as done (issue 9 item 10).

Each test mounts its own 1 MiB tmpfs (we run as root; skipped with the reason where mounting
is not permitted) and unmounts it at teardown. On it a write larger than the free space is
short for real: the kernel writes what fits and returns that count. The raw Operation keeps
that count (as in caio); the adapters' ``write`` either finishes the payload or raises the
error that stopped it (``ENOSPC``, as ``caio.OperationError``).
"""

import errno
import os
import shutil
import subprocess

import pytest

from caio.errors import OperationError

FS_SIZE = 1 << 20
PAGE = 4096


@pytest.fixture
def small_fs(workdir):
    """A fresh 1 MiB tmpfs mounted in the work directory."""
    mount_point = workdir / "small-fs"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {proc.stderr.strip()}")
    opened = []

    def open_file(name):
        fd = os.open(str(mount_point / name), os.O_CREAT | os.O_RDWR, 0o600)
        opened.append(fd)
        return fd

    try:
        yield mount_point, open_file
    finally:
        for fd in opened:
            try:
                os.close(fd)
            except OSError:
                pass
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def free_bytes(path):
    st = os.statvfs(str(path))
    return st.f_bavail * st.f_frsize


def payload_of(size):
    return bytes(range(256)) * (size // 256)


# --------------------------------------------------------------------------------------------
# raw: the kernel's count, unchanged


def test_raw_write_reports_the_kernels_short_count(backend, small_fs):
    _, open_file = small_fs
    fd = open_file("data")
    payload = payload_of(2 * FS_SIZE)
    ctx = backend.Context()
    op = backend.write(payload, fd, 0)
    backend.run(ctx, op)
    written = op.get_value()
    assert 0 < written < len(payload)
    assert written == os.fstat(fd).st_size
    assert os.pread(fd, written, 0) == payload[:written]
    backend.settle(ctx)


# --------------------------------------------------------------------------------------------
# adapters: all or an error


def test_adapter_write_on_a_full_filesystem_raises_enospc(loop_runner, AsyncioContext, small_fs):
    mount_point, open_file = small_fs
    fd = open_file("data")
    payload = payload_of(2 * FS_SIZE)

    async def body():
        async with AsyncioContext() as ctx:
            with pytest.raises(OSError) as info:
                await ctx.write(payload, fd, 0)
            return info.value

    exc = loop_runner.run(body)
    assert exc.errno == errno.ENOSPC, repr(exc)
    assert isinstance(exc, OperationError) and isinstance(exc, SystemError)
    # what did fit is there, in place
    size = os.fstat(fd).st_size
    assert 0 < size < len(payload)
    assert os.pread(fd, size, 0) == payload[:size]
    assert free_bytes(mount_point) < PAGE


def test_adapter_write_continues_a_short_write(loop_runner, AsyncioContext, small_fs):
    """The first write is short (the filesystem is full); space is freed before the rest is
    written, so the adapter's continuation completes the payload at the right offset."""
    mount_point, open_file = small_fs
    filler = mount_point / "filler"
    filler.write_bytes(b"\xff" * (FS_SIZE // 2))
    fd = open_file("data")
    base = 3 * PAGE
    os.pwrite(fd, b"H" * base, 0)
    payload = payload_of(FS_SIZE // 2 + 64 * PAGE)
    counts = []

    async def body():
        async with AsyncioContext() as ctx:
            submit = ctx.submit

            async def submit_then_free(op):
                result = await submit(op)
                counts.append(result)
                if filler.exists():
                    filler.unlink()  # the disk gets space between the two parts
                return result

            ctx.submit = submit_then_free
            return await ctx.write(payload, fd, base)

    assert loop_runner.run(body) == len(payload)
    assert len(counts) >= 2, counts  # it really was short, and continued
    assert 0 < counts[0] < len(payload)
    assert sum(counts) == len(payload)
    assert os.fstat(fd).st_size == base + len(payload)
    assert os.pread(fd, base + len(payload), 0) == b"H" * base + payload


def test_adapter_write_of_what_fits_is_unchanged(loop_runner, AsyncioContext, small_fs):
    _, open_file = small_fs
    fd = open_file("data")
    payload = payload_of(FS_SIZE // 4)

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.write(payload, fd, 0) == len(payload)
            assert await ctx.write(b"", fd, 0) == 0
            assert await ctx.read(len(payload), fd, 0) == payload

    loop_runner.run(body)
