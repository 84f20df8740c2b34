"""Per-operation flags (``flags=caio.RWF_*`` on read, read_into and write), on every
backend: they reach the kernel (observed through what only the flag explains: a durable
write's pages are clean when it completes, a non-blocking request fails with EAGAIN where it
would wait), what no backend passes on is refused up front, and no flags changes nothing."""

import ctypes
import errno
import fcntl
import os

import pytest

import caio

DATA = bytes(range(256)) * 32  # 8 KiB

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_CACHESTAT = 451  # the same number on x86_64 and the generic table (arm64...)


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


def cachestat(fd, offset, length):
    """(pages cached, pages dirty) of a file range (``cachestat``, Linux 6.5+), else None."""
    stat = _CacheStat()
    rng = _Range(offset, length)
    if _libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(stat), 0) != 0:
        return None
    return stat.nr_cache, stat.nr_dirty + stat.nr_writeback


def evicted(files, data):
    """A file holding ``data`` on disk and (as far as the kernel lets us) not cached."""
    fd = files.open(data)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return fd


def expect_eagain(op):
    with pytest.raises(BlockingIOError) as raised:
        op.get_value()
    assert raised.value.errno == errno.EAGAIN
    assert isinstance(raised.value, caio.OperationError)


def test_the_constants_are_the_kernels():
    assert (caio.RWF_DSYNC, caio.RWF_SYNC, caio.RWF_NOWAIT) == (
        os.RWF_DSYNC, os.RWF_SYNC, os.RWF_NOWAIT)


@pytest.mark.parametrize("flag", ["RWF_DSYNC", "RWF_SYNC"])
def test_a_synced_write_is_on_disk_when_it_completes(backend, files, flag):
    fd = files.open()
    ctx = backend.Context()
    # The control: a plain write's pages stay dirty until writeback (seconds away).
    assert backend.run(ctx, backend.Operation.write(DATA, fd, 0)) in ([len(DATA)], [None])
    before = cachestat(fd, 0, len(DATA))
    if before is None or before[1] == 0:
        pytest.skip("no cachestat here, or writeback cleaned a plain write at once")
    payload = bytearray(DATA[::-1])
    op = backend.Operation.write(payload, fd, len(DATA), flags=getattr(caio, flag))
    result = backend.run(ctx, op)
    assert result in ([len(DATA)], [None])  # python_aio: the count comes from get_value()
    assert op.get_value() == len(DATA)
    cached, dirty = cachestat(fd, len(DATA), len(DATA))
    assert cached > 0
    assert dirty == 0, "the flagged write's pages are still dirty: the flag was dropped"
    assert os.pread(fd, 2 * len(DATA), 0) == DATA + DATA[::-1]
    backend.settle(ctx)


@pytest.mark.parametrize("size", [4096, 256 * 1024])  # 256 KiB: above every offload limit
@pytest.mark.parametrize("how", ["read", "read_into"])
def test_a_nowait_read_of_cached_data_returns_it(backend, files, how, size):
    data = os.urandom(size)
    fd = files.open(data)
    os.pread(fd, size, 0)
    ctx = backend.Context()
    if how == "read":
        op = backend.Operation.read(size, fd, 0, flags=caio.RWF_NOWAIT)
        backend.run(ctx, op)
        assert bytes(op.get_value()) == data
    else:
        buffer = bytearray(size)
        op = backend.Operation.read_into(buffer, fd, 0, flags=caio.RWF_NOWAIT)
        backend.run(ctx, op)
        assert op.get_value() == size
        assert buffer == data
    backend.settle(ctx)


@pytest.mark.parametrize("how", ["read", "read_into"])
def test_a_nowait_read_of_uncached_data_fails_with_eagain(backend, files, how):
    """Refused with EAGAIN when nothing of it is cached. The kernel starts reading the pages
    in before it refuses, and if that finishes within the call (a fast disk, a busy CPU)
    the read returns the data instead; so it is tried a few times, re-evicted each time,
    and must be refused at least once, and right whenever it is not."""
    fd = evicted(files, DATA)
    ctx = backend.Context()
    refused = uncached_tries = 0
    for _ in range(5):
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        stat = cachestat(fd, 0, len(DATA))
        buffer = bytearray(len(DATA))
        if how == "read":
            op = backend.Operation.read(len(DATA), fd, 0, flags=caio.RWF_NOWAIT)
        else:
            op = backend.Operation.read_into(buffer, fd, 0, flags=caio.RWF_NOWAIT)
        backend.run(ctx, op)  # completes: never waits for the disk
        uncached_tries += stat is not None and stat[0] == 0
        try:
            value = op.get_value()
        except BlockingIOError as exc:
            assert exc.errno == errno.EAGAIN
            assert isinstance(exc, caio.OperationError)
            refused += 1
            break
        got = value if how == "read" else bytes(buffer[:value])
        assert 0 < len(got) and DATA.startswith(bytes(got))
    if uncached_tries:
        # Nothing of it cached: only the flag explains a refusal, and it must refuse.
        assert refused, f"{uncached_tries} reads of uncached data were never refused"
    # The same read without the flag waits for the disk and gets everything.
    plain = backend.Operation.read(len(DATA), fd, 0)
    backend.run(ctx, plain)
    assert bytes(plain.get_value()) == DATA
    backend.settle(ctx)


def test_a_nowait_read_of_an_empty_pipe_does_not_wait(backend):
    r, w = os.pipe()
    try:
        ctx = backend.Context()
        op = backend.Operation.read(16, r, 0, flags=caio.RWF_NOWAIT)
        backend.run(ctx, op)
        expect_eagain(op)
        os.write(w, b"now there is")
        op = backend.Operation.read(16, r, 0, flags=caio.RWF_NOWAIT)
        backend.run(ctx, op)
        assert bytes(op.get_value()) == b"now there is"
        backend.settle(ctx)
    finally:
        os.close(r)
        os.close(w)


def test_a_nowait_write_to_a_full_pipe_does_not_wait(backend):
    r, w = os.pipe()
    try:
        status = fcntl.fcntl(w, fcntl.F_GETFL)
        fcntl.fcntl(w, fcntl.F_SETFL, status | os.O_NONBLOCK)
        with pytest.raises(BlockingIOError):
            while True:
                os.write(w, b"\0" * 65536)
        fcntl.fcntl(w, fcntl.F_SETFL, status)  # the flag alone must keep it from waiting
        ctx = backend.Context()
        op = backend.Operation.write(b"no room", w, 0, flags=caio.RWF_NOWAIT)
        backend.run(ctx, op)
        expect_eagain(op)
        backend.settle(ctx)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(("make", "flags", "error", "named"), [
    ("read", caio.RWF_DSYNC, ValueError, "RWF_DSYNC applies to writes only"),
    ("read_into", caio.RWF_SYNC, ValueError, "RWF_SYNC applies to writes only"),
    ("read", caio.RWF_NOWAIT | caio.RWF_DSYNC, ValueError, "RWF_DSYNC"),
    ("write", os.RWF_APPEND, ValueError, "RWF_APPEND is not supported"),
    ("write", os.RWF_HIPRI | caio.RWF_DSYNC, ValueError, "RWF_HIPRI"),
    ("read", 1 << 20, ValueError, "unknown flag 0x100000"),
    ("write", 1 << 40, ValueError, "unknown flag 0x10000000000"),
    ("write", -1, ValueError, "combination of RWF_"),
    ("read", 1 << 64, OverflowError, None),
    ("write", 1.0, TypeError, None),
    ("read", "RWF_NOWAIT", TypeError, None),
])
def test_what_no_backend_passes_on_is_refused_up_front(backend, files, make, flags, error, named):
    fd = files.open(DATA)
    build = {
        "read": lambda: backend.Operation.read(16, fd, 0, flags=flags),
        "read_into": lambda: backend.Operation.read_into(bytearray(16), fd, 0, flags=flags),
        "write": lambda: backend.Operation.write(b"x", fd, 0, flags=flags),
    }[make]
    with pytest.raises(error, match=named):
        build()


def test_flags_are_keyword_only(backend, files):
    fd = files.open(DATA)
    with pytest.raises(TypeError):
        backend.Operation.read(16, fd, 0, 0, caio.RWF_NOWAIT)
    with pytest.raises(TypeError):
        backend.Operation.write(b"x", fd, 0, 0, caio.RWF_DSYNC)
    with pytest.raises(TypeError):
        backend.Operation.fsync(fd, flags=caio.RWF_DSYNC)


def test_no_flags_and_flags_0_are_todays_operations(backend, files):
    fd = files.open()
    ctx = backend.Context()
    for op in (backend.Operation.write(DATA, fd, 0, flags=0), backend.Operation.write(DATA, fd, 0)):
        backend.run(ctx, op)
        assert op.get_value() == len(DATA)
    # A plain read of an empty pipe waits (no EAGAIN) until there is data.
    r, w = os.pipe()
    try:
        waiting = backend.Operation.read(4, r, 0, flags=0)
        calls = []
        waiting.set_callback(calls.append)
        assert ctx.submit(waiting) == 1
        if backend.pumped:
            backend.pump(ctx, timeout=0, min_requests=0)
        assert calls == []
        os.write(w, b"data")
        from conftest import wait_until

        def delivered():
            if backend.pumped:
                backend.pump(ctx, timeout=0, min_requests=0)
            return bool(calls)

        wait_until(delivered, message="the plain pipe read never completed")
        assert bytes(waiting.get_value()) == b"data"
    finally:
        os.close(r)
        os.close(w)
    backend.settle(ctx)


def test_a_cached_nowait_read_still_completes_inline(native_backend, files):
    fd = files.open(DATA)
    os.pread(fd, len(DATA), 0)
    ctx = native_backend.Context()
    if not hasattr(ctx, "run_inline"):
        pytest.skip("this Context has no inline path")
    op = native_backend.Operation.read(4096, fd, 4096, flags=caio.RWF_NOWAIT)
    assert ctx.run_inline(op) is True
    assert bytes(op.get_value()) == DATA[4096:8192]
