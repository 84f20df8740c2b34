"""A caller's buffer in flight (issue 12, lifetimes): a write from a bytearray / mmap /
memoryview payload, and ``Operation.read_into`` into one, waiting on a pipe that only lets
it complete when the test says so. Whatever Python does meanwhile (drops every reference,
cancels, closes or drops the Context, exits), the buffer stays exported while the kernel
may still use it, is released once the completion is reaped (resizable again, reference
count back to its baseline), a read's bytes land in it, and nothing crashes.

The asyncio adapters have no ``read_into``; their ``write`` passes a bytearray through, so
they are covered for writes. The whole file also runs under ``PYTHONDEVMODE=1
PYTHONMALLOC=debug`` (.ci/run), and the exit tests always spawn their interpreter that way.
"""

import asyncio
import gc
import mmap
import os
import sys
import textwrap
import threading
import time

import pytest
from conftest import RAW_BACKENDS, run_python, short_name, wait_until

SIZE = 4096  # <= PIPE_BUF: a pipe write of it is atomic, a pipe read of it returns all of it
PATTERN = bytes(range(1, 256)) * 16 + b"\x01" * (SIZE - 255 * 16)
KINDS = ["bytearray", "mmap", "memoryview"]
OPS = ["read_into", "write"]
ERRORS = (ValueError, SystemError, OSError)  # what a backend's cancel may refuse with


class Target:
    """The caller's buffer, and a probe for whether anyone still holds an export of it."""

    def __init__(self, kind: str, op_kind: str):
        self.kind = kind
        fill = PATTERN if op_kind == "write" else b"\xee" * SIZE
        if kind == "bytearray":
            self.obj = bytearray(fill)
        elif kind == "mmap":
            self.obj = mmap.mmap(-1, SIZE)
            self.obj[:] = fill
        else:
            self.base = bytearray(SIZE + 8)
            self.base[4:-4] = fill
            self.obj = memoryview(self.base)[4:-4]

    def released(self) -> bool:
        """True once no export is left; each probe raises BufferError while one is. A
        memoryview: our view released (which only changes anything when it succeeds; a
        backend's own view of the same memory does not stop it) and its bytearray resizable."""
        try:
            if self.kind == "bytearray":
                self.obj.append(0)
                self.obj.pop()
            elif self.kind == "mmap":
                self.obj.resize(SIZE)
            else:
                self.obj.release()
                self.base.append(0)
                self.base.pop()
        except BufferError:
            return False
        return True

    def refcount(self) -> int:
        return sys.getrefcount(self.obj)

    def contents(self) -> bytes:
        if self.kind == "memoryview":
            return bytes(self.base[4:-4])
        return bytes(self.obj[:SIZE])

    def close(self):
        if self.kind == "mmap":
            self.obj.close()


class Gate:
    """A pipe on which the op waits: empty for a read, full for a write."""

    def __init__(self, op_kind: str):
        self.op_kind = op_kind
        self.r, self.w = os.pipe()
        if op_kind == "write":
            os.set_blocking(self.w, False)
            try:
                while True:
                    os.write(self.w, b"\0" * 65536)
            except BlockingIOError:
                pass
            os.set_blocking(self.w, True)

    def start(self, backend, ctx, target: Target):
        """Submits the op; returns it and the list its callback appends to."""
        if self.op_kind == "read_into":
            op = backend.Operation.read_into(target.obj, self.r, 0)
        else:
            op = backend.Operation.write(target.obj, self.w, 0)
        done: list = []
        op.set_callback(done.append)
        assert ctx.submit(op) == 1
        if hasattr(ctx, "flush"):
            ctx.flush()
        return op, done

    def open(self):
        """Lets the op complete: data for the read, room for the write."""
        if self.op_kind == "read_into":
            os.write(self.w, PATTERN)
        else:
            os.set_blocking(self.r, False)
            self.drained = b""
            try:
                while True:
                    self.drained += os.read(self.r, 1 << 20)
            except BlockingIOError:
                pass

    def check_landed(self, target: Target, may_be_cancelled=False):
        """The op's bytes went where they should (a cancelled write wrote none of them)."""
        if self.op_kind == "read_into":
            assert target.contents() == PATTERN
            return
        written = self.drained
        try:
            while not written.endswith(PATTERN):
                written += os.read(self.r, 1 << 20)
        except BlockingIOError:
            pass
        if may_be_cancelled and not written.strip(b"\0"):
            return
        assert written.endswith(PATTERN)
        assert not written[:-SIZE].strip(b"\0")

    def nothing_written(self) -> bool:
        """After open(): nothing but the fill came through (a write taken back)."""
        written = self.drained
        try:
            while True:
                written += os.read(self.r, 1 << 20)
        except BlockingIOError:
            pass
        return not written.strip(b"\0")

    def close(self):
        os.close(self.r)
        os.close(self.w)


@pytest.fixture(params=OPS)
def gate(request):
    g = Gate(request.param)
    yield g
    g.close()


@pytest.fixture(params=KINDS)
def target(request, gate):
    t = Target(request.param, gate.op_kind)
    yield t
    t.close()


def exported_from_the_start(backend, op_kind) -> bool:
    """Whether the op holds an export from submission on. python_aio's write holds a
    reference to its payload and exports it only inside the worker's os.write (all the
    kernel ever sees), which starts when the worker gets to it."""
    return backend.native or op_kind == "read_into"


def deliver(backend, ctx, done):
    """Reaps on this thread where the backend needs it, until the callback ran."""

    def delivered():
        if backend.pumped and ctx is not None:
            backend.pump(ctx, timeout=0, min_requests=0)
        return bool(done)

    wait_until(delivered, message="the operation never completed")


def released_and_back_to(target: Target, baseline: int):
    wait_until(target.released, message="the export was never released")
    wait_until(lambda: target.refcount() == baseline,
               message=f"refcount {target.refcount()} != baseline {baseline}")


# --------------------------------------------------------------------------------------------
# raw Contexts, every backend


def test_dropping_every_reference_keeps_the_export_until_reaped(backend, gate, target):
    baseline = target.refcount()
    ctx = backend.Context()
    op, done = gate.start(backend, ctx, target)
    del op
    gc.collect()
    assert not done
    if exported_from_the_start(backend, gate.op_kind):
        assert not target.released()
    gate.open()
    deliver(backend, ctx, done)
    assert done == [SIZE]
    released_and_back_to(target, baseline)
    gate.check_landed(target)
    backend.settle(ctx)


def test_a_cancelled_op_keeps_the_export_until_its_completion_is_reaped(backend, gate, target):
    baseline = target.refcount()
    ctx = backend.Context()
    op, done = gate.start(backend, ctx, target)
    try:
        ctx.cancel(op)
    except ERRORS:  # kernel AIO: not cancellable; still in flight
        pass
    del op
    gc.collect()
    if not done and exported_from_the_start(backend, gate.op_kind):
        # (io_uring: the cancelled op's completion is still to be reaped)
        assert not target.released()
    gate.open()
    deliver(backend, ctx, done)
    assert len(done) == 1
    released_and_back_to(target, baseline)
    if done[0] == SIZE:  # the cancel came too late: the op ran
        gate.check_landed(target)
    elif gate.op_kind == "read_into":  # cancelled: the buffer is as it was
        assert target.contents() == b"\xee" * SIZE
    backend.settle(ctx)


@pytest.mark.parametrize("how", ["close", "drop"])
def test_a_closed_or_dropped_context_keeps_the_export_until_the_kernel_is_done(
        backend, gate, target, how):
    if how == "close" and not hasattr(backend.module.Context, "close"):
        pytest.skip(f"{backend.name}: a raw Context has no close() (dropping it is the case)")
    baseline = target.refcount()
    ctx = backend.Context()
    op, done = gate.start(backend, ctx, target)
    del op
    closer = None
    if how == "close":
        # on a thread of its own: thread_aio's close() joins its workers, which waits for
        # the op (as caio's did); the op is in flight before and while it runs
        closer = threading.Thread(target=ctx.close)
        closer.start()
    del ctx  # dropped: the GC finds it, the drainer takes over its operations
    for _ in range(3):
        gc.collect()
    if exported_from_the_start(backend, gate.op_kind):
        assert not target.released()
    gate.open()
    if closer is not None:
        closer.join(10)
        assert not closer.is_alive(), "close() never returned"
        del closer
    if how == "drop":
        wait_until(lambda: done, message="the drainer never delivered the completion")
        assert done == [SIZE]
    released_and_back_to(target, baseline)
    assert done in ([], [SIZE])
    gate.check_landed(target)


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
    buffers = [bytearray(4096), mmap.mmap(-1, 4096), memoryview(bytearray(4104))[4:-4]]
    calls = []
    for buffer in buffers:
        if {write!r}:
            op = mod.Operation.write(buffer, w, 0)
        else:
            op = mod.Operation.read_into(buffer, r, 0)
        op.set_callback(calls.append)
        assert ctx.submit(op) == 1
    if hasattr(ctx, "flush"):
        ctx.flush()
    if {drop!r}:
        del op, buffer, buffers
        if {drop_context!r}:
            del ctx
        gc.collect()
    print("exiting", flush=True)
    """
)


@pytest.mark.parametrize("op_kind", OPS)
@pytest.mark.parametrize("drop", ["keep", "drop-buffers", "drop-context"])
@pytest.mark.parametrize("backend_param", RAW_BACKENDS)
def test_exit_with_a_callers_buffer_in_flight(backend_param, op_kind, drop, workdir):
    backend = backend_param
    code = EXIT_SCRIPT.format(
        module=backend.module.__name__,
        context_type="EventfdContext" if backend.eventfd else "Context",
        write=op_kind == "write",
        drop=drop != "keep",
        drop_context=drop == "drop-context",
    )
    proc = run_python(code, env_updates={"PYTHONMALLOC": "debug", "PYTHONDEVMODE": "1"},
                      timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "exiting" in proc.stdout
    assert "Fatal" not in proc.stderr and "panicked" not in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------
# asyncio adapters: write from a bytearray / mmap / memoryview (they have no read_into)


async def until(predicate, timeout=10.0, message="condition not reached"):
    """Lets the loop run (it reaps the adapters' completions) until ``predicate()``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        gc.collect()
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("how", ["cancel", "close", "drop"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_adapter_write_keeps_the_export_until_reaped(loop_runner, adapter, kind, how,
                                                         request):
    # python_aio's adapter runs what it has to completion in close(), as caio does (see
    # the README): its task gets the write's result once the pipe drains.
    runs_to_completion = how == "close" and short_name(adapter) == "python_aio"
    gate = Gate("write")
    target = Target(kind, "write")
    baseline = target.refcount()

    async def body():
        ctx = adapter.AsyncioContext()
        task = asyncio.ensure_future(ctx.write(target.obj, gate.w, 0))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not task.done()
        if how == "cancel":
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        elif runs_to_completion:
            ctx.close()
            assert not task.done()
        elif how == "close":
            ctx.close()
            with pytest.raises(RuntimeError, match="closed"):
                await asyncio.wait_for(task, 0.5)  # (a hang guard: the others end at once)
        else:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            del ctx
        if runs_to_completion:
            gate.open()
            assert await task == SIZE
        del task  # its exception's traceback holds the payload (the write's frame)
        gc.collect()
        # Released already only if the kernel took the write back (close() and a task's
        # cancellation ask it to: io_uring does, and the drainer may have reaped that);
        # then nothing of it may land. (python_aio: see exported_from_the_start.)
        taken_back = short_name(adapter) != "python_aio" and target.released()
        if not runs_to_completion:
            gate.open()
        await until(target.released, message="the export was never released")
        await until(lambda: target.refcount() == baseline,
                    message=f"refcount {target.refcount()} != baseline {baseline}")
        if taken_back:
            assert gate.nothing_written()
        else:
            gate.check_landed(target, may_be_cancelled=True)
        if how == "cancel":
            ctx.close()

    try:
        loop_runner.run(body)
    finally:
        target.close()
        gate.close()

