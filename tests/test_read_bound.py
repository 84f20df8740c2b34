"""A large read bound on a small file costs the data, not the bound (issue 9 item 12).

``read(1 << 30, fd, 0)`` on a 5-byte file must neither touch the unused GiB on the caller's
thread (caio's zero-fill took ~0.7 s) nor keep it committed: the result is exactly the bytes
read, and the process's memory grows by far less than the bound. Measured in a fresh
subprocess per backend, from its peak RSS (``ru_maxrss``) and its RSS after the reads.
"""

import json
import os
import textwrap

import pytest
from conftest import NATIVE_MODULES, run_python, short_name

GiB = 1 << 30
# Far below the bound: only the data, the interpreter and the allocator's slack.
MAX_GROWTH = 64 << 20

CHILD = textwrap.dedent("""
    import asyncio, importlib, json, os, resource, threading

    import uvloop

    backend = importlib.import_module("caio." + os.environ["READ_BOUND_BACKEND"])
    adapter = importlib.import_module("caio." + os.environ["READ_BOUND_BACKEND"] + "_asyncio")
    path, bound = os.environ["READ_BOUND_FILE"], int(os.environ["READ_BOUND"])
    fd = os.open(path, os.O_RDONLY)
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as fp:
            return int(fp.read().split()[1]) * page

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    pumped = os.environ["READ_BOUND_BACKEND"] in ("linux_uring", "linux_aio")

    def run_raw(bound):
        ctx = backend.Context()
        op = backend.Operation.read(bound, fd, 0)
        done = threading.Event()
        op.set_callback(lambda result: done.set())
        assert ctx.submit(op) == 1
        while not done.is_set():
            if hasattr(ctx, "flush"):
                ctx.flush()
            if pumped:
                ctx.process_events(max_requests=1, min_requests=1, timeout=1)
            else:
                done.wait(1)
        value = op.get_value()
        same = value is op.get_value()
        if hasattr(ctx, "close"):
            ctx.close()
        return value, same

    async def run_adapter(bound):
        async with adapter.AsyncioContext() as ctx:
            return await ctx.read(bound, fd, 0)

    # warm-up with a small bound: imports, loops, contexts, first allocations
    for factory in (asyncio.new_event_loop, uvloop.new_event_loop):
        loop = factory()
        loop.run_until_complete(run_adapter(4096))
        loop.close()
    run_raw(4096)
    start_rss, start_peak = rss(), peak()
    results = {}
    results["raw"], same = run_raw(bound)
    for name, factory in (("asyncio", asyncio.new_event_loop), ("uvloop", uvloop.new_event_loop)):
        loop = factory()
        results[name] = loop.run_until_complete(run_adapter(bound))
        loop.close()
    print(json.dumps({
        "results": {k: v.decode("latin-1") for k, v in results.items()},
        "same_object": same,
        "peak_growth": peak() - start_peak,
        "rss_growth": rss() - start_rss,
    }))
""")


@pytest.mark.parametrize("module", NATIVE_MODULES)
def test_large_bound_on_small_file_costs_only_the_data(module, files):
    pytest.importorskip("uvloop")
    files.open(b"hello", name="small.bin")
    env = {
        "READ_BOUND_BACKEND": short_name(module),
        "READ_BOUND_FILE": str(files.root / "small.bin"),
        "READ_BOUND": str(GiB),
    }
    # Python's debug allocator fills every new block, which is exactly what is measured here.
    proc = run_python(CHILD, env_updates=env, env_remove=("PYTHONMALLOC", "PYTHONDEVMODE"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["results"] == {"raw": "hello", "asyncio": "hello", "uvloop": "hello"}
    assert report["peak_growth"] < MAX_GROWTH, report
    assert report["rss_growth"] < MAX_GROWTH, report
    assert report["same_object"], "get_value() copied the data"


@pytest.mark.parametrize("module", NATIVE_MODULES)
def test_unreservable_bound_still_raises_at_construction(module, files):
    fd = files.open(b"hello")
    for nbytes in (2**62, 2**63 - 1):
        with pytest.raises((MemoryError, OverflowError)):
            module.Operation.read(nbytes, fd, 0)


def test_short_read_result_is_exact_and_not_copied(native_backend, files):
    fd = files.open(b"0123456789")
    ctx = native_backend.Context()
    op = native_backend.read(1 << 20, fd, 3)
    assert native_backend.run(ctx, op) == [7]
    value = op.get_value()
    assert value == b"3456789"
    assert op.get_value() is value
    assert op.nbytes == 7
    # the payload still shows the whole requested buffer, its unfilled tail zeroed (caio)
    assert bytes(op.payload) == b"3456789" + bytes((1 << 20) - 7)
    native_backend.settle(ctx)


def test_failed_read_and_eof_read(native_backend, files):
    fd = files.open(b"abc")
    wfd = files.open(flags=os.O_WRONLY)
    ctx = native_backend.Context()
    eof = native_backend.read(4096, fd, 100)
    assert native_backend.run(ctx, eof) == [0]
    assert eof.get_value() == b""
    assert bytes(eof.payload) == bytes(4096)
    if native_backend.short != "linux_aio":  # there io_submit refuses it up front
        failed = native_backend.read(4096, wfd, 0)
        native_backend.run(ctx, failed)
        with pytest.raises(OSError):
            failed.get_value()
        assert bytes(failed.payload) == bytes(4096)
    native_backend.settle(ctx)


def test_never_run_read_still_shows_zeros(native_backend, files):
    fd = files.open(b"abc")
    op = native_backend.read(10, fd, 0)
    assert op.get_value() == bytes(10)
    assert bytes(op.payload) == bytes(10)
