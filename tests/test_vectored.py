"""Vectored I/O (issue 12): ``Operation.readv(buffers, fd, offset)`` and ``writev``, one
request over a sequence of buffers at one offset, on every backend (io_uring READV/WRITEV,
kernel AIO PREADV/PWRITEV, preadv2/pwritev2 on the pools, os.preadv/pwritev on
python_aio), and ``ctx.readv``/``ctx.writev`` on the asyncio, trio and anyio adapters.

Round trips are checked against ``os.pread``/``os.pwrite``; a readv's data lands in the
caller's objects (``get_value()`` is a count, no bytes object); every buffer stays exported
while the op may be in flight (a bytearray cannot be resized: ``BufferError``), whatever
Python does meanwhile, and is released once the completion is reaped. This file also runs
under ``PYTHONDEVMODE=1 PYTHONMALLOC=debug`` (.ci/run).
"""

import array
import asyncio
import gc
import mmap
import os
import sys
import textwrap
import threading
import weakref

import pytest
from conftest import RAW_BACKENDS, run_python, short_name, wait_until

import caio

DATA = bytes(range(256)) * 64  # 16 KiB
IOV_MAX = os.sysconf("SC_IOV_MAX")
SIZE = 4096  # <= PIPE_BUF: atomic on a pipe, and a pipe read of it returns all of it
PATTERN = bytes(range(1, 256)) * 16 + b"\x01" * (SIZE - 255 * 16)
CANCEL_ERRORS = (ValueError, SystemError, OSError)  # what a backend's cancel may refuse with


def resizable(obj: bytearray) -> bool:
    try:
        obj.append(0)
    except BufferError:
        return False
    obj.pop()
    return True


def pieces(data: bytes, sizes):
    """``data`` cut into consecutive pieces of ``sizes`` bytes."""
    out, at = [], 0
    for size in sizes:
        out.append(data[at:at + size])
        at += size
    return out


# --------------------------------------------------------------------------------------------
# round trips, raw Operations on every backend


def test_writev_lands_in_order_at_the_offset(backend, files):
    fd = files.open()
    mapped = mmap.mmap(-1, 4096)
    mapped[:] = DATA[:4096]
    parts = pieces(DATA[4096:], [1000, 0, 3000, 5])
    buffers = [
        parts[0],                                # bytes
        bytearray(parts[1]),                     # empty
        memoryview(b"xx" + parts[2] + b"yy")[2:-2],  # a memoryview slice
        mapped,                                  # an mmap
        array.array("B", parts[3]),              # an array
    ]
    expected = parts[0] + parts[2] + DATA[:4096] + parts[3]
    ctx = backend.Context()
    op = backend.Operation.writev(buffers, fd, 100)
    assert op.nbytes == len(expected)
    assert backend.run(ctx, op) == [len(expected)]
    assert op.get_value() == len(expected)
    assert os.pread(fd, 100 + len(expected) + 10, 0) == bytes(100) + expected
    backend.settle(ctx)
    del op, buffers
    gc.collect()
    mapped.close()


def test_writev_counts_bytes_not_items(backend, files):
    fd = files.open()
    ints = array.array("I", range(100))
    ctx = backend.Context()
    op = backend.Operation.writev([ints, b"!"], fd)
    assert backend.run(ctx, op) == [401]
    assert os.pread(fd, 500, 0) == ints.tobytes() + b"!"
    backend.settle(ctx)


def test_readv_fills_the_callers_objects_in_order(backend, files):
    fd = files.open(DATA)
    mapped = mmap.mmap(-1, 3000)
    base = bytearray(b"\xee" * 120)
    targets = [bytearray(10), bytearray(), memoryview(base)[10:-10], mapped,
               array.array("B", bytes(7))]
    ctx = backend.Context()
    op = backend.Operation.readv(targets, fd, 33)
    total = 10 + 100 + 3000 + 7
    assert backend.run(ctx, op) == [total]
    value = op.get_value()
    assert type(value) is int and value == total
    got = os.pread(fd, total, 33)
    assert bytes(targets[0]) == got[:10]
    assert bytes(base) == b"\xee" * 10 + got[10:110] + b"\xee" * 10
    assert mapped[:] == got[110:3110]
    assert targets[4].tobytes() == got[3110:]
    if backend.native:
        # The payload is the buffers themselves (a tuple of them), not copies.
        assert all(a is b for a, b in zip(op.payload, targets))
    backend.settle(ctx)
    del op, targets
    gc.collect()
    mapped.close()


def test_readv_at_the_end_of_the_file_is_short_and_leaves_the_rest(backend, files):
    fd = files.open(DATA[:100])
    first, second = bytearray(b"\xee" * 64), bytearray(b"\xee" * 64)
    ctx = backend.Context()
    op = backend.Operation.readv([first, second], fd, 50)
    assert backend.run(ctx, op) == [50]
    assert op.get_value() == 50
    assert bytes(first[:50]) == DATA[50:100] and bytes(first[50:]) == b"\xee" * 14
    assert bytes(second) == b"\xee" * 64
    op = backend.Operation.readv([first], fd, 1000)
    assert backend.run(ctx, op) == [0]
    assert op.get_value() == 0
    backend.settle(ctx)


@pytest.mark.parametrize("sizes", [[1], [4096, 4096], [7, 0, 4089, 1, 8191]])
def test_a_writev_then_readv_round_trip_matches_pread_and_pwrite(backend, files, sizes):
    fd = files.open()
    data = DATA[:sum(sizes)]
    os.pwrite(fd, b"\x55" * 20000, 0)
    ctx = backend.Context()
    assert backend.run(ctx, backend.Operation.writev(pieces(data, sizes), fd, 777)) == [len(data)]
    assert os.pread(fd, len(data), 777) == data
    targets = [bytearray(size) for size in reversed(sizes)]
    assert backend.run(ctx, backend.Operation.readv(targets, fd, 777)) == [len(data)]
    assert b"".join(targets) == data
    backend.settle(ctx)


def test_exactly_iov_max_buffers_go_in_one_request(backend, files):
    fd = files.open()
    data = bytes(i % 251 for i in range(IOV_MAX))
    ctx = backend.Context()
    op = backend.Operation.writev([data[i:i + 1] for i in range(IOV_MAX)], fd, 0)
    assert backend.run(ctx, op) == [IOV_MAX]
    targets = [bytearray(1) for _ in range(IOV_MAX)]
    assert backend.run(ctx, backend.Operation.readv(targets, fd, 0)) == [IOV_MAX]
    assert b"".join(targets) == data == os.pread(fd, IOV_MAX, 0)
    backend.settle(ctx)


def test_flags_reach_a_vectored_request(backend, files):
    fd = files.open()
    ctx = backend.Context()
    op = backend.Operation.writev([b"dur", b"able"], fd, 3, flags=caio.RWF_DSYNC)
    assert backend.run(ctx, op) == [7]
    assert os.pread(fd, 10, 0) == b"\0\0\0durable"
    # Just written, so cached: a non-waiting readv has it.
    target = bytearray(7)
    op = backend.Operation.readv([target], fd, 3, flags=caio.RWF_NOWAIT)
    assert backend.run(ctx, op) == [7]
    assert bytes(target) == b"durable"
    with pytest.raises(ValueError, match="RWF_DSYNC"):
        backend.Operation.readv([target], fd, 0, flags=caio.RWF_DSYNC)
    with pytest.raises(ValueError, match="flags"):
        backend.Operation.writev([b"x"], fd, 0, flags=1 << 40)
    backend.settle(ctx)


def test_a_nowait_readv_of_an_empty_pipe_fails_at_once(backend):
    r, w = os.pipe()
    try:
        ctx = backend.Context()
        op = backend.Operation.readv([bytearray(8)], r, 0, flags=caio.RWF_NOWAIT)
        backend.run(ctx, op)
        with pytest.raises(OSError) as info:
            op.get_value()
        assert info.value.errno == 11  # EAGAIN
        backend.settle(ctx)
    finally:
        os.close(r)
        os.close(w)


def test_a_failed_vectored_op_raises_from_get_value(backend, files):
    fd = files.open(flags=os.O_RDONLY)
    ctx = backend.Context()
    op = backend.Operation.writev([b"abc"], fd, 0)
    with pytest.raises(OSError) as info:
        # (kernel AIO refuses it at submit already, as for a plain write)
        backend.run(ctx, op)
        op.get_value()
    assert info.value.errno == 9  # EBADF: not open for writing
    backend.settle(ctx)


def test_a_pipe_at_offset_zero_is_a_stream(backend):
    r, w = os.pipe()
    try:
        ctx = backend.Context()
        assert backend.run(ctx, backend.Operation.writev([b"through ", b"a pipe"], w, 0)) == [14]
        first, second = bytearray(5), bytearray(20)
        assert backend.run(ctx, backend.Operation.readv([first, second], r, 0)) == [14]
        assert bytes(first) + bytes(second[:9]) == b"through a pipe"
        backend.settle(ctx)
    finally:
        os.close(r)
        os.close(w)


def test_a_vectored_read_is_left_to_the_backend_by_run_inline(backend, files):
    fd = files.open(DATA)
    ctx = backend.Context()
    if not hasattr(ctx, "run_inline"):
        pytest.skip(f"{backend.name}: no inline path")
    os.pread(fd, 100, 0)  # cached
    target = bytearray(100)
    op = backend.Operation.readv([target], fd, 0)
    assert ctx.run_inline(op) is False
    assert target == bytearray(100)
    assert backend.run(ctx, op) == [100]
    assert bytes(target) == DATA[:100]
    backend.settle(ctx)


def test_the_repr_names_the_mode(native_backend, files):
    fd = files.open()
    assert 'mode="readv"' in repr(native_backend.Operation.readv([bytearray(3)], fd))
    assert 'mode="writev"' in repr(native_backend.Operation.writev([b"abc"], fd))


# --------------------------------------------------------------------------------------------
# bad input: the right exception, nothing kept


@pytest.mark.parametrize("bad", [12, None, object(), {"a": b"b"}, b"a buffer", bytearray(4)])
@pytest.mark.parametrize("method", ["readv", "writev"])
def test_a_non_sequence_or_a_single_buffer_is_a_type_error(backend, files, method, bad):
    fd = files.open()
    before = sys.getrefcount(bad)
    with pytest.raises(TypeError, match="sequence"):
        getattr(backend.Operation, method)(bad, fd, 0)
    assert sys.getrefcount(bad) == before


@pytest.mark.parametrize("method", ["readv", "writev"])
def test_an_element_without_the_buffer_protocol_is_a_type_error(backend, files, method):
    fd = files.open()
    held = bytearray(16)
    for bad in ("text", 3, None, [b"nested"]):
        buffers = [held, bad]
        before = (sys.getrefcount(held), sys.getrefcount(bad), sys.getrefcount(buffers))
        with pytest.raises(TypeError, match="index 1"):
            getattr(backend.Operation, method)(buffers, fd, 0)
        assert (sys.getrefcount(held), sys.getrefcount(bad), sys.getrefcount(buffers)) == before
        # The export taken of the element before the bad one was released.
        assert resizable(held)


@pytest.mark.parametrize("method", ["readv", "writev"])
def test_a_non_contiguous_element_is_a_buffer_error(backend, files, method):
    fd = files.open()
    held = bytearray(16)
    strided = memoryview(bytearray(b"abcdefgh"))[::2]
    with pytest.raises(BufferError):
        getattr(backend.Operation, method)([held, strided], fd, 0)
    assert resizable(held)


def test_a_read_only_buffer_to_readv_is_refused_as_read_into_refuses_it(backend, files):
    fd = files.open(DATA)
    with pytest.raises(BufferError) as single:
        backend.Operation.read_into(b"read-only", fd, 0)
    held = bytearray(16)
    for read_only in (b"read-only", memoryview(bytearray(8)).toreadonly()):
        before = sys.getrefcount(read_only)
        with pytest.raises(type(single.value)):
            backend.Operation.readv([held, read_only], fd, 0)
        assert sys.getrefcount(read_only) == before
        assert resizable(held)


@pytest.mark.parametrize("method", ["readv", "writev"])
@pytest.mark.parametrize("empty", [[], ()])
def test_an_empty_sequence_is_a_value_error(backend, files, method, empty):
    fd = files.open()
    with pytest.raises(ValueError, match="at least one"):
        getattr(backend.Operation, method)(empty, fd, 0)


@pytest.mark.parametrize("method", ["readv", "writev"])
def test_more_than_iov_max_buffers_is_a_value_error_naming_the_limit(backend, files, method):
    fd = files.open()
    held = bytearray(1)
    buffers = [held] * (IOV_MAX + 1)
    before = sys.getrefcount(held)
    with pytest.raises(ValueError, match=rf"at most {IOV_MAX} buffers \(IOV_MAX\)"):
        getattr(backend.Operation, method)(buffers, fd, 0)
    del buffers
    assert sys.getrefcount(held) == before - (IOV_MAX + 1)
    assert resizable(held)


@pytest.mark.parametrize("method", ["readv", "writev"])
def test_more_bytes_than_one_request_moves_is_a_value_error(backend, files, method):
    fd = files.open()
    # Reserved, never touched: no memory is used.
    huge = mmap.mmap(-1, 1 << 30)
    try:
        with pytest.raises(ValueError, match="more than one request moves"):
            getattr(backend.Operation, method)([huge, huge], fd, 0)
        gc.collect()
        huge.resize(4096)  # no export left (resize refuses while one is)
    finally:
        huge.close()


def test_bad_offsets_and_descriptors_are_refused_as_for_a_single_buffer(backend, files):
    fd = files.open()
    held = bytearray(4)
    with pytest.raises(TypeError):
        backend.Operation.writev([held], "fd")
    if backend.native:  # (python_aio's plain read takes any offset too)
        with pytest.raises((ValueError, OverflowError)):
            backend.Operation.readv([held], fd, -5)
        with pytest.raises(OverflowError):
            backend.Operation.readv([held], fd, 2 ** 70)
    with pytest.raises(TypeError):
        backend.Operation.readv([held], fd, 0, nope=1)
    assert resizable(held)


# --------------------------------------------------------------------------------------------
# exports held while in flight, and their lifetimes


def test_every_buffer_stays_exported_from_construction_until_reaped(backend, files):
    fd = files.open(DATA)
    ctx = backend.Context()
    targets = [bytearray(100), bytearray(0), bytearray(200)]
    op = backend.Operation.readv(targets, fd, 0)
    for target in targets:
        with pytest.raises(BufferError):
            target.append(1)
    assert backend.run(ctx, op) == [300]
    wait_until(lambda: all(resizable(t) for t in targets), message="an export was kept")
    payload = [bytearray(b"w" * 10), bytearray(b"v" * 10)]
    op = backend.Operation.writev(payload, fd, 0)
    with pytest.raises(BufferError):
        payload[1].extend(b"more")
    assert backend.run(ctx, op) == [20]
    wait_until(lambda: all(resizable(t) for t in payload), message="an export was kept")
    backend.settle(ctx)


def test_a_never_submitted_op_releases_its_exports_when_freed(backend, files):
    fd = files.open()
    targets = [bytearray(10), bytearray(10)]
    before = [sys.getrefcount(t) for t in targets]
    op = backend.Operation.readv(targets, fd, 0)
    assert not resizable(targets[0])
    del op
    gc.collect()
    assert all(resizable(t) for t in targets)
    assert [sys.getrefcount(t) for t in targets] == before


class Gate:
    """A pipe on which a vectored op waits: empty for a readv, full for a writev; its
    buffers are two bytearrays and an mmap of SIZE bytes in all."""

    def __init__(self, method: str):
        self.method = method
        self.r, self.w = os.pipe()
        fill = PATTERN if method == "writev" else b"\xee" * SIZE
        self.mapped = mmap.mmap(-1, SIZE // 2)
        self.mapped[:] = fill[SIZE // 2:]
        self.arrays = [bytearray(fill[:1000]), bytearray(fill[1000:SIZE // 2])]
        if method == "writev":
            os.set_blocking(self.w, False)
            try:
                while True:
                    os.write(self.w, b"\0" * 65536)
            except BlockingIOError:
                pass
            os.set_blocking(self.w, True)

    def buffers(self):
        return [self.arrays[0], self.arrays[1], self.mapped]

    def start(self, backend, ctx):
        if self.method == "readv":
            op = backend.Operation.readv(self.buffers(), self.r, 0)
        else:
            op = backend.Operation.writev(self.buffers(), self.w, 0)
        done: list = []
        op.set_callback(done.append)
        assert ctx.submit(op) == 1
        if hasattr(ctx, "flush"):
            ctx.flush()
        return op, done

    def refcounts(self):
        return [sys.getrefcount(b) for b in self.buffers()]

    def released(self) -> bool:
        if not all(resizable(a) for a in self.arrays):
            return False
        try:
            self.mapped.resize(SIZE // 2)
        except BufferError:
            return False
        return True

    def open(self):
        """Lets the op complete: data for the readv, room for the writev."""
        if self.method == "readv":
            os.write(self.w, PATTERN)
            return
        os.set_blocking(self.r, False)
        self.drained = b""
        try:
            while True:
                self.drained += os.read(self.r, 1 << 20)
        except BlockingIOError:
            pass

    def contents(self) -> bytes:
        return bytes(self.arrays[0]) + bytes(self.arrays[1]) + self.mapped[:]

    def check_landed(self, result, may_be_cancelled=False):
        """The op's bytes went where they should: all of them if ``result`` is SIZE, else
        none (``may_be_cancelled``: either)."""
        if self.method == "readv":
            assert self.contents() == (PATTERN if result == SIZE else b"\xee" * SIZE)
            return
        written = self.drained
        try:
            while not written.endswith(PATTERN):
                written += os.read(self.r, 1 << 20)
        except BlockingIOError:
            pass
        if may_be_cancelled and not written.strip(b"\0"):
            return
        if result == SIZE:
            assert written.endswith(PATTERN) and not written[:-SIZE].strip(b"\0")
        else:
            assert not written.strip(b"\0")

    def close(self):
        os.close(self.r)
        os.close(self.w)
        gc.collect()
        self.mapped.close()


@pytest.fixture(params=["readv", "writev"])
def gate(request):
    g = Gate(request.param)
    yield g
    g.close()


def deliver(backend, ctx, done):
    def delivered():
        if backend.pumped and ctx is not None:
            backend.pump(ctx, timeout=0, min_requests=0)
        return bool(done)

    wait_until(delivered, message="the operation never completed")


def test_dropping_every_reference_keeps_the_exports_until_reaped(backend, gate):
    baseline = gate.refcounts()
    ctx = backend.Context()
    op, done = gate.start(backend, ctx)
    del op
    gc.collect()
    assert not done
    assert not gate.released()
    gate.open()
    deliver(backend, ctx, done)
    assert done == [SIZE]
    wait_until(gate.released, message="an export was never released")
    wait_until(lambda: gate.refcounts() == baseline, message="a reference was kept")
    gate.check_landed(SIZE)
    backend.settle(ctx)


def test_a_cancelled_vectored_op_keeps_the_exports_until_reaped(backend, gate):
    baseline = gate.refcounts()
    ctx = backend.Context()
    op, done = gate.start(backend, ctx)
    try:
        ctx.cancel(op)
    except CANCEL_ERRORS:  # kernel AIO: not cancellable; still in flight
        pass
    del op
    gc.collect()
    if not done:
        assert not gate.released()
    gate.open()
    deliver(backend, ctx, done)
    assert len(done) == 1
    wait_until(gate.released, message="an export was never released")
    wait_until(lambda: gate.refcounts() == baseline, message="a reference was kept")
    gate.check_landed(done[0])
    backend.settle(ctx)


@pytest.mark.parametrize("how", ["close", "drop"])
def test_a_closed_or_dropped_context_keeps_the_exports_until_the_kernel_is_done(
        backend, gate, how):
    if how == "close" and not hasattr(backend.module.Context, "close"):
        pytest.skip(f"{backend.name}: a raw Context has no close() (dropping it is the case)")
    baseline = gate.refcounts()
    ctx = backend.Context()
    op, done = gate.start(backend, ctx)
    del op
    closer = None
    if how == "close":
        # thread_aio's close() joins its workers, which waits for the op
        closer = threading.Thread(target=ctx.close)
        closer.start()
    del ctx
    for _ in range(3):
        gc.collect()
    assert not gate.released()
    gate.open()
    if closer is not None:
        closer.join(10)
        assert not closer.is_alive(), "close() never returned"
        del closer
    if how == "drop":
        wait_until(lambda: done, message="the drainer never delivered the completion")
    wait_until(gate.released, message="an export was never released")
    wait_until(lambda: gate.refcounts() == baseline, message="a reference was kept")
    assert done in ([], [SIZE])
    gate.check_landed(SIZE)


EXIT_SCRIPT = textwrap.dedent(
    """
    import gc, importlib, mmap, os
    mod = importlib.import_module({module!r})
    r, w = os.pipe()
    if {write!r}:
        os.set_blocking(w, False)
        try:
            while True:
                os.write(w, b"\\0" * 65536)
        except BlockingIOError:
            pass
        os.set_blocking(w, True)
    ctx = getattr(mod, {context_type!r})()
    buffers = [bytearray(1000), mmap.mmap(-1, 2048), memoryview(bytearray(1056))[4:-4]]
    if {write!r}:
        op = mod.Operation.writev(buffers, w, 0)
    else:
        op = mod.Operation.readv(buffers, r, 0)
    op.set_callback(print)
    assert ctx.submit(op) == 1
    if hasattr(ctx, "flush"):
        ctx.flush()
    if {drop!r}:
        del op, buffers
        del ctx
        gc.collect()
    print("exiting", flush=True)
    """
)


@pytest.mark.parametrize("method", ["readv", "writev"])
@pytest.mark.parametrize("drop", ["keep", "drop-all"])
@pytest.mark.parametrize("backend_param", RAW_BACKENDS)
def test_exit_with_a_vectored_op_in_flight(backend_param, method, drop, workdir):
    backend = backend_param
    code = EXIT_SCRIPT.format(
        module=backend.module.__name__,
        context_type="EventfdContext" if backend.eventfd else "Context",
        write=method == "writev",
        drop=drop != "keep",
    )
    proc = run_python(code, env_updates={"PYTHONMALLOC": "debug", "PYTHONDEVMODE": "1"},
                      timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "exiting" in proc.stdout
    assert "Fatal" not in proc.stderr and "panicked" not in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------
# O_DIRECT: each buffer in place, or refused (no bounce buffer)


@pytest.fixture
def direct(workdir):
    from test_direct_io import DirectFile

    f = DirectFile(workdir)
    try:
        yield f
    finally:
        f.close()


def test_o_direct_vectored_io_uses_aligned_buffers_in_place(native_backend, direct):
    native = pytest.importorskip("caio._native")
    first, second = caio.aligned_buffer(4096), caio.aligned_buffer(8192)
    first[:] = DATA[:4096]
    second[:] = DATA[4096:12288]
    bounces = native._direct_bounces()
    ctx = native_backend.Context()
    op = native_backend.Operation.writev([first, bytearray(), second], direct.fd, 4096)
    assert native_backend.run(ctx, op) == [12288]
    assert os.pread(direct.plain, 12288, 4096) == DATA[:12288]
    targets = [caio.aligned_buffer(8192), caio.aligned_buffer(4096)]
    op = native_backend.Operation.readv(targets, direct.fd, 4096)
    assert native_backend.run(ctx, op) == [12288]
    assert targets[0][:] + targets[1][:] == DATA[:12288]
    assert native._direct_bounces() == bounces, "a bounce buffer was allocated"
    native_backend.settle(ctx)
    del op
    gc.collect()
    for buffer in (first, second, *targets):
        buffer.close()


def test_o_direct_vectored_io_refuses_misaligned_buffers_offsets_and_sizes(
        native_backend, direct):
    aligned = caio.aligned_buffer(8192)
    try:
        misaligned = memoryview(aligned)[8:4104]  # a whole block long, at a bad address
        with pytest.raises(ValueError, match="O_DIRECT"):
            native_backend.Operation.readv([misaligned], direct.fd, 0)
        with pytest.raises(ValueError, match="O_DIRECT"):
            native_backend.Operation.writev([memoryview(aligned)[:4096], b"x" * 100],
                                            direct.fd, 0)
        with pytest.raises(ValueError, match="O_DIRECT"):
            native_backend.Operation.writev([memoryview(aligned)[:4096]], direct.fd, 100)
        misaligned.release()
    finally:
        gc.collect()
        aligned.close()


# --------------------------------------------------------------------------------------------
# adapters: asyncio on every backend and loop, trio, anyio


def test_asyncio_readv_and_writev(loop_runner, AsyncioContext, files):
    fd = files.open()

    async def body():
        async with AsyncioContext() as ctx:
            parts = pieces(DATA, [100, 0, 8000, 8284])
            buffers = [parts[0], bytearray(parts[1]), memoryview(parts[2]),
                       array.array("B", parts[3])]
            assert await ctx.writev(buffers, fd, 10) == len(DATA)
            assert os.pread(fd, len(DATA), 10) == DATA
            targets = [bytearray(5000), bytearray(20000)]
            assert await ctx.readv(targets, fd, 10) == len(DATA)  # short: end of file
            assert bytes(targets[0]) + bytes(targets[1][:len(DATA) - 5000]) == DATA
            await ctx.writev([b"dsync"], fd, 0, flags=caio.RWF_DSYNC)
            assert os.pread(fd, 5, 0) == b"dsync"
            with pytest.raises(TypeError):
                await ctx.readv([bytearray(1), "y"], fd, 0)
            with pytest.raises(ValueError, match="negative"):
                await ctx.readv([bytearray(1)], fd, -1)

    loop_runner.run(body)


def test_an_adapter_writev_continues_a_short_write_from_the_right_byte(
        loop_runner, AsyncioContext):
    """A pipe takes a large writev in pieces: the rest starts at the next byte, buffers
    already written left out, the one cut sliced."""
    r, w = os.pipe()
    ints = array.array("I", range(20000))  # 80000 bytes
    buffers = [DATA * 3, ints, bytearray(b"z" * 7), DATA]
    expected = b"".join(bytes(b) for b in buffers)
    received = bytearray()

    async def body():
        loop = asyncio.get_running_loop()

        def drain():
            while len(received) < len(expected):
                received.extend(os.read(r, 1 << 16))

        reader = loop.run_in_executor(None, drain)
        async with AsyncioContext() as ctx:
            assert await ctx.writev(buffers, w, 0) == len(expected)
        await reader

    try:
        loop_runner.run(body)
    finally:
        os.close(r)
        os.close(w)
    assert bytes(received) == expected


@pytest.mark.parametrize("how", ["cancel", "close"])
def test_an_adapter_writev_keeps_the_exports_until_reaped(loop_runner, adapter, how):
    runs_to_completion = how == "close" and short_name(adapter) == "python_aio"
    gate = Gate("writev")
    baseline = gate.refcounts()

    async def body():
        ctx = adapter.AsyncioContext()
        task = asyncio.ensure_future(ctx.writev(gate.buffers(), gate.w, 0))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not task.done()
        assert not gate.released()
        if how == "cancel":
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        elif runs_to_completion:
            ctx.close()
        else:
            ctx.close()
            with pytest.raises(RuntimeError, match="closed"):
                await asyncio.wait_for(task, 0.5)
        if runs_to_completion:
            gate.open()
            assert await task == SIZE
        del task
        gc.collect()
        taken_back = short_name(adapter) != "python_aio" and gate.released()
        if not runs_to_completion:
            gate.open()
        deadline = asyncio.get_running_loop().time() + 10
        while not (gate.released() and gate.refcounts() == baseline):
            assert asyncio.get_running_loop().time() < deadline, "an export was kept"
            gc.collect()
            await asyncio.sleep(0.001)
        # Taken back by the kernel (io_uring's cancel, reaped already): nothing of it may
        # land; else all of it or (reaped since) nothing.
        gate.check_landed(0 if taken_back else SIZE, may_be_cancelled=not taken_back)
        if how == "cancel":
            ctx.close()

    try:
        loop_runner.run(body)
    finally:
        gate.close()


def test_trio_and_anyio_readv_and_writev(files):
    trio = pytest.importorskip("trio")
    anyio = pytest.importorskip("anyio")
    from caio.anyio_adapter import AnyioContext
    from caio.trio_adapter import TRIO_CONTEXTS

    fd = files.open()

    async def round_trip(ctx, offset):
        assert await ctx.writev([DATA[:3000], bytearray(DATA[3000:4096])], fd, offset) == 4096
        targets = [bytearray(1000), memoryview(bytearray(3096))]
        assert await ctx.readv(targets, fd, offset) == 4096
        assert bytes(targets[0]) + bytes(targets[1]) == DATA[:4096]

    async def with_trio():
        for i, cls in enumerate(TRIO_CONTEXTS.values()):
            async with cls() as ctx:
                await round_trip(ctx, i * 4096)

    trio.run(with_trio)

    async def with_anyio():
        async with AnyioContext() as ctx:
            await round_trip(ctx, 1 << 20)

    for library in ("asyncio", "trio"):
        anyio.run(with_anyio, backend=library)
    assert os.pread(fd, 4096, 1 << 20) == DATA[:4096]


def test_the_readme_example_runs_as_written(workdir):
    from test_readme import python_blocks, run_block

    code = next(b for b in python_blocks() if "Operation.readv([head, rest]" in b)
    run_block(code, workdir)
    assert (workdir / "test.file").read_bytes() == b"HEAD" + b"body" * 1024


# --------------------------------------------------------------------------------------------
# review fixes


def test_a_subclass_written_against_caio_0_12_still_instantiates():
    """``readv``/``writev`` are not abstract: an ``AbstractOperation`` subclass implementing
    only caio 0.12's abstract set works, and calling the new methods names the class."""
    from caio.abstract import AbstractOperation

    class Old(AbstractOperation):
        @classmethod
        def read(cls, nbytes, fd, offset, priority=0):
            return cls()

        @classmethod
        def write(cls, payload_bytes, fd, offset, priority=0):
            return cls()

        @classmethod
        def fsync(cls, fd, priority=0):
            return cls()

        @classmethod
        def fdsync(cls, fd, priority=0):
            return cls()

        def get_value(self):
            return None

        fileno = property(lambda self: 0)
        offset = property(lambda self: 0)
        payload = property(lambda self: None)
        nbytes = property(lambda self: 0)

        def set_callback(self, callback):
            return True

    assert isinstance(Old.read(1, 0, 0), Old)
    for method in ("readv", "writev"):
        with pytest.raises(NotImplementedError, match=f"Old.*{method}|{method}.*Old"):
            getattr(Old, method)([bytearray(1)], 0, 0)


OPEN_FD = object()  # stands for the test's open descriptor


@pytest.mark.parametrize(("method", "args", "kwargs", "error"), [
    ("readv", ([], "fd"), {}, TypeError),                   # the fd before the buffers
    ("writev", ([], OPEN_FD, "x"), {}, TypeError),          # the offset before them
    ("readv", (42, OPEN_FD, 0), {"flags": caio.RWF_DSYNC}, ValueError),  # the flags
    ("writev", (b"one buffer", OPEN_FD, 0), {"flags": 1 << 40}, ValueError),
    ("readv", ([bytearray(1)], OPEN_FD, 0), {"flags": 1 << 70}, OverflowError),
])
def test_bad_arguments_are_checked_in_the_same_order_on_every_backend(
        backend, files, method, args, kwargs, error):
    """fd, offset and flags are checked before the buffers, as the native backends parse
    them: one bad call raises the same exception type everywhere."""
    fd = files.open()
    args = tuple(fd if a is OPEN_FD else a for a in args)
    with pytest.raises(error):
        getattr(backend.Operation, method)(*args, **kwargs)


@pytest.mark.parametrize("opcode", ["READV", "WRITEV"])
def test_python_aio_constructor_refuses_the_vectored_opcodes(files, opcode):
    from caio import python_aio

    fd = files.open(DATA)
    with pytest.raises(ValueError, match=r"Operation\.(readv|writev)"):
        python_aio.Operation(fd, 10, 0, getattr(python_aio.OpCode, opcode))
    # ... which its own readv/writev still build
    ctx = python_aio.Context()
    target = bytearray(10)
    op = python_aio.Operation.readv([target], fd, 0)
    op.set_callback(lambda _: None)
    ctx.submit(op)
    wait_until(lambda: op.get_value() == 10 and bytes(target) == DATA[:10])
    ctx.close()


class Buffer(bytearray):
    """A bytearray that can refer back to the op holding it (a ``__dict__``)."""


@pytest.mark.parametrize("make", ["readv", "writev", "write", "write-memoryview", "read_into"])
def test_a_cycle_through_a_held_buffer_is_collected(backend, files, make):
    """An op refers to each buffer it holds (the object, and the export of it): a cycle
    back from the buffer to the op is garbage the collector frees."""
    fd = files.open(DATA)
    buffer = Buffer(DATA[:10])
    Operation = backend.Operation
    op = {
        "readv": lambda b: Operation.readv([b], fd, 0),
        "writev": lambda b: Operation.writev([b], fd, 0),
        "write": lambda b: Operation.write(b, fd, 0),
        "write-memoryview": lambda b: Operation.write(memoryview(b)[1:], fd, 0),
        "read_into": lambda b: Operation.read_into(b, fd, 0),
    }[make](buffer)
    buffer.op = op
    dead = weakref.ref(buffer)
    del buffer, op
    gc.collect()
    assert dead() is None, "the cycle through the buffer was not collected"


def test_a_cycle_through_an_in_flight_buffer_is_kept_until_reaped(backend):
    """The collector sees the cycle but cannot free it while the op is in flight: the
    Context holds the op, the op its buffer (op_clear releases neither)."""
    r, w = os.pipe()
    try:
        ctx = backend.Context()
        buffer = Buffer(b"\xee" * SIZE)
        op = backend.Operation.readv([buffer], r, 0)
        buffer.op = op
        done: list = []
        op.set_callback(done.append)
        assert ctx.submit(op) == 1
        if hasattr(ctx, "flush"):
            ctx.flush()
        alive = weakref.ref(buffer)
        del buffer, op
        gc.collect()
        assert alive() is not None and not done
        os.write(w, PATTERN)
        deliver(backend, ctx, done)
        assert done == [SIZE]
        assert bytes(alive()) == PATTERN
        wait_until(lambda: gc.collect() is not None and alive() is None,
                   message="the cycle was not collected once reaped")
        backend.settle(ctx)
    finally:
        os.close(r)
        os.close(w)


class Endless:
    """A sequence (no ``__len__``) whose ``__getitem__`` never raises IndexError; counts
    the items taken."""

    def __init__(self):
        self.taken = 0

    def __getitem__(self, index):
        self.taken += 1
        if self.taken > IOV_MAX + 100:
            raise RuntimeError("the whole sequence was taken")
        return bytearray(1)


@pytest.mark.parametrize("method", ["readv", "writev"])
def test_a_huge_or_endless_sequence_is_refused_without_taking_it_all(backend, files, method):
    fd = files.open()
    call = getattr(backend.Operation, method)
    # (not 10**9, which the unbounded code would try to hold in memory)
    too_many = rf"at most {IOV_MAX} buffers \(IOV_MAX\), got {IOV_MAX * 1000}\b"
    with pytest.raises(ValueError, match=too_many):
        call(range(IOV_MAX * 1000), fd, 0)
    claims_too_many = type("ClaimsTooMany", (Endless,), {"__len__": lambda _self: 10 ** 9})()
    with pytest.raises(ValueError, match=r"at most \d+ buffers \(IOV_MAX\)"):
        call(claims_too_many, fd, 0)
    assert claims_too_many.taken == 0
    for endless in (Endless(), type("LiesShort", (Endless,), {"__len__": lambda _self: 1})()):
        with pytest.raises(ValueError, match=r"at most \d+ buffers \(IOV_MAX\)"):
            call(endless, fd, 0)
        assert endless.taken == IOV_MAX + 1


def test_python_aio_takes_the_native_io_limits_computed_from_the_page_size():
    from caio import python_aio

    expected = (IOV_MAX, 0x7FFFFFFF & ~(mmap.PAGESIZE - 1))  # the kernel's MAX_RW_COUNT
    native = pytest.importorskip("caio._native")
    assert native.io_limits() == expected
    assert (python_aio._IOV_MAX, python_aio._MAX_RW_COUNT) == expected


@pytest.mark.parametrize("answer", [-1, ValueError("unknown name"), 2048])
def test_python_aio_io_limits_without_the_native_module(monkeypatch, answer):
    """A pure-Python install computes the same limits; an unknown or unlimited IOV_MAX is
    1024, as on the native backends (not an import error, nor every readv refused)."""
    from caio import python_aio

    real_sysconf = os.sysconf

    def sysconf(name):
        if name != "SC_IOV_MAX":
            return real_sysconf(name)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setitem(sys.modules, "caio._native", None)  # import fails
    monkeypatch.setattr(os, "sysconf", sysconf)
    iov_max = answer if answer == 2048 else 1024
    assert python_aio._io_limits() == (iov_max, 0x7FFFFFFF & ~(mmap.PAGESIZE - 1))


def test_an_adapter_writev_continuation_starts_at_each_short_writes_next_byte(files):
    """``_write_all`` over ``_tails`` with chosen short counts (a fake submit): each
    continuation holds exactly the bytes not yet written, at the offset they belong at,
    the buffer a count cuts sliced without a copy and the ones after it passed as given."""
    from caio.adapter_base import AdapterBase

    ints = array.array("I", [0x01020304, 0x05060708])  # 8 bytes: [3, 11)
    tail = bytearray(b"xyz")                             # [11, 14)
    buffers = (b"abc", ints, b"", tail, bytearray(), b"Q")
    whole = b"".join(bytes(b) for b in buffers)          # 15 bytes
    # 1 byte into an array element, exactly at an element's end, at the end of the array
    # just before an empty buffer, before an empty buffer again, then the last byte.
    counts = iter([4, 3, 4, 3, 1])
    calls = []

    class FakeOp:
        def __init__(self, parts, offset):
            self.parts, self.offset = list(parts), offset
            self.nbytes = sum(memoryview(p).nbytes for p in parts)

    class FakeOperation:
        @classmethod
        def writev(cls, parts, fd, offset, priority=0, *, flags=0):
            calls.append(FakeOp(parts, offset))
            return calls[-1]

    class FakeAdapter:
        OPERATION_CLASS = FakeOperation
        # the inline-budget hooks _write_all calls (no-ops in the base)
        _inline_mark = AdapterBase._inline_mark
        _charge_inline_write = AdapterBase._charge_inline_write

        async def submit(self, op):
            return next(counts)

    fd = files.open()
    first = FakeOperation.writev(buffers, fd, 100)
    assert asyncio.run(AdapterBase._write_all(
        FakeAdapter(), first, buffers, fd, 100, 0, 0, vectored=True)) == len(whole)
    assert next(counts, None) is None
    done = [0, 4, 7, 11, 14]
    assert [call.offset for call in calls] == [100 + d for d in done]
    for call, at in zip(calls, done):
        assert b"".join(bytes(memoryview(p).cast("B")) for p in call.parts) == whole[at:]
        if at:  # a continuation: no empty buffer left in it
            assert all(memoryview(p).nbytes for p in call.parts)
    cut = calls[1].parts[0]
    assert isinstance(cut, memoryview) and cut.obj is ints and bytes(cut) == whole[4:11]
    assert calls[1].parts[1] is tail and calls[1].parts[2] is buffers[5]
    assert calls[3].parts[0] is tail
    assert calls[4].parts == [buffers[5]]
