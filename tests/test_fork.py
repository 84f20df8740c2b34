"""fork() (issue 9, item 7): a Context inherited by a child of fork() raises a clear
error there and touches nothing it shares with the parent (a ring, an AIO context, worker
threads that do not exist in the child); a new Context in the child works; the parent is
unaffected. The child only does its checks and leaves with ``os._exit``."""

import asyncio
import os
import time

import pytest
from conftest import ADAPTERS, RAW_BACKENDS

CHILD_TIMEOUT = 30


def run_in_child(check) -> None:
    """Forks; the child runs ``check()`` and exits 0 if it returned, else 1 with the error
    on a pipe. The parent waits (bounded) and fails with what the child reported."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.close(r)
            check()
        except BaseException as exc:  # noqa: BLE001 (reported to the parent)
            os.write(w, f"{type(exc).__name__}: {exc}".encode()[:4000])
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(r)
            pytest.fail("the child hung")
        time.sleep(0.01)
    report = os.read(r, 4096).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0, report or f"child status {status}"


def pump_one(backend, ctx, op) -> None:
    """Submits ``op`` and waits for its completion."""
    results = []
    op.set_callback(results.append)
    assert ctx.submit(op) == 1
    deadline = time.monotonic() + 10
    while not results:
        assert time.monotonic() < deadline, "the operation did not complete"
        if backend.pumped:
            if hasattr(ctx, "flush") and ctx.flush():
                continue  # (flush delivers what completed at once)
            ctx.process_events(min_requests=1, timeout=1)
        else:
            time.sleep(0.001)


@pytest.mark.parametrize("backend", RAW_BACKENDS)
def test_inherited_context_raises_in_the_child(backend, files):
    fd = files.open(b"fork-safe data")
    ctx = backend.Context()
    first = backend.read(4, fd, 0)
    pump_one(backend, ctx, first)
    assert first.get_value() == b"fork"

    def child():
        with pytest.raises(RuntimeError, match="fork"):
            ctx.submit(backend.read(4, fd, 0))
        if backend.pumped:
            with pytest.raises(RuntimeError, match="fork"):
                ctx.process_events()
        fresh = backend.Context()
        op = backend.read(4, fd, 5)
        pump_one(backend, fresh, op)
        assert op.get_value() == b"safe"

    run_in_child(child)
    again = backend.read(4, fd, 10)
    pump_one(backend, ctx, again)
    assert again.get_value() == b"data"
    if hasattr(ctx, "close"):
        ctx.close()


@pytest.mark.parametrize("backend", [p for p in RAW_BACKENDS if p.values[0].native])
def test_inherited_context_is_left_alone_when_the_child_drops_it(backend, files):
    fd = files.open(b"x" * 4096)
    ctx = backend.Context()

    def child():
        nonlocal ctx
        del ctx  # no teardown of the parent's kernel objects, no join of absent threads
        import gc
        gc.collect()

    run_in_child(child)
    op = backend.read(4096, fd, 0)
    pump_one(backend, ctx, op)
    assert op.get_value() == b"x" * 4096


def test_child_cannot_reap_the_parents_uring_completion(files):
    uring = pytest.importorskip("caio.linux_uring")
    r, w = os.pipe()
    try:
        ctx = uring.Context()
        results = []
        op = uring.Operation.read(8, r, 2**64 - 1)
        op.set_callback(results.append)
        assert ctx.submit(op) == 1
        ctx.flush()

        def child():
            os.write(w, b"for you")  # completes the parent's read
            with pytest.raises(RuntimeError, match="fork"):
                ctx.process_events(min_requests=1, timeout=1)
            with pytest.raises(RuntimeError, match="fork"):
                ctx.flush()

        run_in_child(child)
        deadline = time.monotonic() + 10
        while not results:
            assert time.monotonic() < deadline, "the parent's op never completed"
            ctx.process_events(min_requests=1, timeout=1)
        assert results == [7]
        assert op.get_value() == b"for you"
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_inherited_adapter_raises_in_the_child(adapter, files):
    fd = files.open(b"adapter data")
    loop = asyncio.new_event_loop()
    try:
        ctx = adapter.AsyncioContext(loop=loop)
        assert loop.run_until_complete(ctx.read(7, fd, 0)) == b"adapter"

        def child():
            # The inherited adapter is bound to the parent's loop; its Context raises.
            with pytest.raises(RuntimeError, match="fork"):
                ctx.context.submit(adapter.Operation.read(4, fd, 8))
            child_loop = asyncio.new_event_loop()
            fresh = adapter.AsyncioContext(loop=child_loop)
            assert child_loop.run_until_complete(
                asyncio.wait_for(fresh.read(4, fd, 8), 10)) == b"data"

        run_in_child(child)
        assert loop.run_until_complete(ctx.read(4, fd, 8)) == b"data"
        ctx.close()
    finally:
        loop.close()

