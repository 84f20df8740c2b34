"""The kernel AIO backend: ``caio.linux_aio`` (raw Context/Operation) and
``caio.linux_aio_asyncio.AsyncioContext``.

Behaviour every backend shares lives in test_raw_common.py / test_adapters.py /
test_bad_input.py, and the Context contract of the native backends (poll, process_events
limits and waits, the parked waiter, callbacks, claims, cancel outcomes, references) in
test_context_contract.py; this file covers what is specific to linux_aio: eager refusals
at ``io_submit`` with rollback, the ``max_requests`` limit of process_events, cancel of
requests in flight, priority, and our own choices: negative errno in callbacks, large
buffered requests on helper threads (errors arrive at completion), ``Context.run_inline``,
the deferred batching adapter and RuntimeError after ``close()``.

aiofile on linux_aio_asyncio is covered by tests/test_aiofile.py (parametrised over
``caio.variants_asyncio``), so it is not repeated here. O_DIRECT is in test_direct_io.py.
"""

import asyncio
import errno
import fcntl
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    REPO_ROOT,
    Calls,
    FileFactory,
    LoopRunner,
    closed_fd,
    pump_until,
    run_ops,
    run_python,
)

from caio.errors import SubmitError

try:
    from caio.linux_aio import Context, Operation
    from caio.linux_aio_asyncio import AsyncioContext
except ImportError as exc:  # old kernel, seccomp, exhausted fs.aio-max-nr, ...
    pytest.skip(f"caio.linux_aio is not available: {exc}", allow_module_level=True)

KiB = 1024
MiB = 1024 * KiB
LARGE = 1 * MiB  # above the 64 KiB limit: runs on the helper threads
OFFLOAD_LIMIT = 64 * KiB


# --------------------------------------------------------------------------------------------
# helpers


def read_only_fd(files, data=b"read only data"):
    path = files.path()
    path.write_bytes(data)
    fd = os.open(str(path), os.O_RDONLY)
    files.fds.append(fd)
    return fd


def join_or_fail(thread, timeout=10.0):
    thread.join(timeout)  # hang guard only
    assert not thread.is_alive(), "thread did not finish"


# Syscalls a blocked process_events() may sleep in: io_getevents, or poll/ppoll on the
# eventfd (used while helper-thread completions may also arrive).
WAIT_SYSCALLS = {
    "x86_64": {"208", "7", "271"},
    "aarch64": {"4", "73"},
}.get(platform.machine(), set())
F_SETPIPE_SZ = 1031


def wait_until_parked(thread, timeout=10.0):
    """Wait until ``thread`` sleeps in process_events' wait (from /proc), or skip the test."""
    task = f"/proc/self/task/{thread.native_id}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"{task}/wchan") as fp:
                wchan = fp.read().strip()
            with open(f"{task}/syscall") as fp:
                nr = fp.read().split()[0]
        except (OSError, IndexError):
            pytest.skip("cannot observe the waiting thread through /proc")
        if wchan in ("read_events", "do_sys_poll", "poll_schedule_timeout") or nr in WAIT_SYSCALLS:
            return
        assert thread.is_alive(), "the waiter returned early"
        time.sleep(0.001)  # polling /proc; the wait itself has no event to signal
    pytest.skip("the waiting thread was never seen waiting in process_events")


@pytest.fixture
def tmpfs_files(tmp_path_factory):
    """Files whose small writes go to ``io_submit``: on tmpfs, which has no block device,
    so ``run_inline`` never completes them (on ext4 they would complete inline and never
    reach the submission policy these tests are about)."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    root = tempfile.mkdtemp(prefix="caio-test-", dir="/dev/shm")
    factory = FileFactory(Path(root))
    try:
        yield factory
    finally:
        factory.close_all()
        shutil.rmtree(root, ignore_errors=True)


class Coalescing(AsyncioContext):
    """The adapter coalescing above 4 operations in flight (by default above 64)."""

    EAGER_BELOW = 4


class SubmitSpy:
    """Stands in for the adapter's Context and records the size of every submit() call."""

    def __init__(self, inner):
        self._inner = inner
        self.batches = []

    def submit(self, *ops):
        self.batches.append(len(ops))
        return self._inner.submit(*ops)

    def __getattr__(self, name):
        return getattr(self._inner, name)


# --------------------------------------------------------------------------------------------
# import-time kernel version probe


@pytest.mark.skipif(shutil.which("setarch") is None, reason="setarch is not installed")
def test_import_error_on_a_kernel_older_than_4_18():
    """Under the UNAME26 personality uname() reports 2.6.x: importing linux_aio must raise
    ImportError naming the release, and ``import caio`` must move on to another backend."""
    code = (
        "import caio\n"
        "names = [m.__name__ for m in caio.variants]\n"
        "assert 'caio.linux_aio' not in names, names\n"
        "try:\n"
        "    import caio.linux_aio\n"
        "except ImportError as e:\n"
        "    print('IMPORTERROR', e)\n"
        "else:\n"
        "    print('IMPORTED')\n"
    )
    proc = subprocess.run(
        ["setarch", platform.machine(), "--uname-2.6", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=str(REPO_ROOT.parent),
    )
    if proc.returncode != 0 and "setarch" in proc.stderr:
        pytest.skip(f"setarch --uname-2.6 does not work here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    release = subprocess.run(
        ["setarch", platform.machine(), "--uname-2.6", "uname", "-r"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()
    assert release.startswith("2.6.")
    assert (
        f"IMPORTERROR Linux kernel supported since 4.18 but current kernel is {release}."
        in proc.stdout
    ), proc.stdout


# --------------------------------------------------------------------------------------------
# construction


def test_max_requests_default_and_zero():
    assert Context().max_requests == 32
    assert Context(max_requests=0).max_requests == 32
    assert Context(0).max_requests == 32
    assert Context(max_requests=7).max_requests == 7


def test_io_setup_failure_is_system_error():
    # -1 is parsed as a masked unsigned int (4294967295): io_setup refuses it (EINVAL)
    with pytest.raises(SystemError):
        Context(-1)


@pytest.mark.parametrize(
    "args, kwargs",
    [((1, 2), {}), ((), {"max_requests": 1, "bogus": 2}), ((1,), {"max_requests": 1}),
     ((), {"sqpoll": True})],
    ids=["two-positional", "unknown-keyword", "positional-and-keyword", "sqpoll"],
)
def test_extra_constructor_arguments_are_type_errors(args, kwargs):
    with pytest.raises(TypeError):
        Context(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# submit: refusals and rollback


# (a negative offset, which io_submit refused too, is refused when the op is built now)
@pytest.mark.parametrize("case", ["bad-fd", "write-to-read-only-fd"])
def test_refused_at_submit_with_value_error_and_rolled_back(files, case):
    if case == "bad-fd":
        op = Operation.read(16, closed_fd(), 0)
    else:
        op = Operation.write(b"nope", read_only_fd(files), 0)
    calls = Calls()
    op.set_callback(calls)
    ctx = Context()
    before = sys.getrefcount(op)
    with pytest.raises(ValueError, match=r"\[(EBADF|EINVAL)\]"):
        ctx.submit(op)
    # rolled back: no context, no engine reference, not in flight, no callback
    assert op.context is None
    assert sys.getrefcount(op) == before
    op.get_value()  # must not raise "in flight"
    assert ctx.process_events() == 0
    assert calls.results == []
    # the claim was undone, so the op is tried again (a claimed op would give 0)
    with pytest.raises(ValueError):
        ctx.submit(op)


def test_partial_acceptance_returns_count_and_rolls_back_the_rest(files):
    fd = files.open(b"good data")
    ctx = Context()
    good = Operation.read(4, fd, 0)
    bad = Operation.read(4, closed_fd(), 0)
    calls = Calls()
    good.set_callback(calls)
    # io_submit stops at the first iocb it cannot queue: no exception, count 1
    assert ctx.submit(good, bad) == 1
    assert good.context is ctx
    assert bad.context is None
    pump_until(ctx, lambda: calls.results)
    assert good.get_value() == b"good"
    with pytest.raises(ValueError):
        ctx.submit(bad)


def test_first_iocb_refused_rolls_back_the_whole_call(files):
    fd = files.open(b"good data")
    ctx = Context()
    bad = Operation.read(4, closed_fd(), 0)
    good = Operation.read(4, fd, 0)
    with pytest.raises(ValueError, match="EBADF"):
        ctx.submit(bad, good)
    assert good.context is None and bad.context is None
    assert run_ops(ctx, good) == [[4]]
    assert good.get_value() == b"good"


# --------------------------------------------------------------------------------------------
# process_events


@pytest.mark.parametrize("max_requests", [-1, 2**32 - 1, 2**20 + 1])
def test_process_events_max_requests_over_limit_is_overflow_error(max_requests):
    ctx = Context()
    with pytest.raises(OverflowError, match="exceeds the maximum allowed"):
        ctx.process_events(max_requests=max_requests)
    # the limit comes before the min/max comparison
    with pytest.raises(OverflowError):
        ctx.process_events(max_requests=max_requests, min_requests=5)
    assert ctx.process_events(max_requests=2**20) == 0


# A signal during process_events: tests/test_aio_faults.py (caio raised SystemError(EINTR);
# now the handlers run and the wait goes on unless one raises).


def test_parked_waiter_receives_helper_thread_completion(files):
    fd = files.open(b"h" * LARGE)
    ctx = Context()
    got = []
    thread = threading.Thread(
        target=lambda: got.append(ctx.process_events(min_requests=1, timeout=-1)), daemon=True,
    )
    thread.start()
    wait_until_parked(thread)
    op = Operation.read(LARGE, fd, 0)
    calls = Calls()
    op.set_callback(calls)
    assert ctx.submit(op) == 1  # goes to a helper thread
    thread.join(2)  # hang guard only (a 1 MiB cached read takes milliseconds)
    parked_forever = thread.is_alive()
    if parked_forever:
        # wake the waiter with a kernel completion so that no thread is left behind
        assert ctx.submit(Operation.read(1, fd, 0)) == 1
        join_or_fail(thread)
        pump_until(ctx, lambda: op.context is None)
    assert not parked_forever, "the parked waiter was not woken by the completion"
    assert got == [1]
    assert calls.results == [LARGE]
    assert calls.threads == [thread.ident]


def test_large_requests_on_a_pipe_work_like_small_ones(files):
    r, w = os.pipe()
    files.fds.extend([r, w])
    fcntl.fcntl(w, F_SETPIPE_SZ, 256 * KiB)
    ctx = Context()
    os.write(w, b"small")
    small = Operation.read(16, r, 0)
    assert run_ops(ctx, small) == [[5]]  # the kernel path ignores the offset of a pipe
    assert small.get_value() == b"small"
    os.write(w, b"large")
    large = Operation.read(LARGE, r, 0)
    assert run_ops(ctx, large) == [[5]]
    assert large.get_value() == b"large"
    payload = os.urandom(100 * KiB)
    write = Operation.write(payload, w, 0)
    assert run_ops(ctx, write) == [[len(payload)]]
    assert os.read(r, 2 * len(payload)) == payload


# --------------------------------------------------------------------------------------------
# poll / eventfd


def test_eventfd_signals_helper_thread_completions(files):
    fd = files.open(b"z" * LARGE)
    ctx = Context()
    with pytest.raises(BlockingIOError):
        ctx.poll()
    op = Operation.read(LARGE, fd, 0)
    assert ctx.submit(op) == 1
    readable, _, _ = select.select([ctx.fileno], [], [], 10)  # hang guard
    assert readable == [ctx.fileno]
    assert ctx.poll() >= 1
    pump_until(ctx, lambda: op.context is None)
    assert op.get_value() == b"z" * LARGE


# --------------------------------------------------------------------------------------------
# cancel


def test_cancel_from_another_context_is_value_error(files):
    fd = files.open(b"abcd")
    mine, other = Context(), Context()
    for size in (4, LARGE):
        op = Operation.read(size, fd, 0)
        calls = Calls()
        op.set_callback(calls)
        assert mine.submit(op) == 1
        with pytest.raises(ValueError):
            other.cancel(op)
        assert op.context is mine
        pump_until(mine, lambda calls=calls: calls.results)
        assert calls.results == [4]
        assert op.get_value() == b"abcd"


def test_cancel_of_own_in_flight_request_fails_and_it_still_completes_once(files):
    fd = files.open(b"q" * LARGE)
    ctx = Context()
    for size in (16, LARGE):  # regular files are never cancellable, nor are helper requests
        op = Operation.read(size, fd, 0)
        calls = Calls()
        op.set_callback(calls)
        assert ctx.submit(op) == 1
        with pytest.raises(ValueError):
            ctx.cancel(op)
        pump_until(ctx, lambda calls=calls: calls.results)
        assert ctx.process_events() == 0
        assert calls.results == [size]


# --------------------------------------------------------------------------------------------
# operation values: priority, offsets, sync operations


def test_priority_is_kept_and_range_checked():
    assert Operation.read(10, 0, 0, 5).priority == 5
    assert Operation.read(10, 0, priority=-3).priority in (-3, 2**16 - 3)
    assert Operation.write(b"x", 0, 0, 32767).priority == 32767
    assert Operation.fsync(0, priority=7).priority == 7
    assert Operation.fdsync(0, 9).priority == 9
    assert Operation.read(10, 0).priority == 0
    for bad in (2**15, -(2**15) - 1, 2**40):
        with pytest.raises(OverflowError):
            Operation.read(10, 0, 0, bad)
        with pytest.raises(OverflowError):
            Operation.write(b"x", 0, 0, bad)
        with pytest.raises(OverflowError):
            Operation.fsync(0, bad)
    with pytest.raises(AttributeError):
        Operation.read(10, 0).priority = 1


def test_offset_is_an_loff_t():
    with pytest.raises(ValueError):
        Operation.read(1, 0, -1)  # caio: accepted, then refused by io_submit (EINVAL)
    assert Operation.write(b"x", 0, 2**63 - 1).offset == 2**63 - 1
    with pytest.raises(OverflowError):
        Operation.read(1, 0, 2**63)


def test_prioritised_ops_still_run(files):
    fd = files.open(b"prio")
    ctx = Context()
    op = Operation.read(4, fd, 0, 3)
    assert run_ops(ctx, op) == [[4]]
    assert op.get_value() == b"prio"
    assert op.priority == 3


def test_fsync_and_fdsync(files):
    fd = files.open(b"sync me")
    ctx = Context()
    ops = [Operation.fsync(fd), Operation.fdsync(fd)]
    assert run_ops(ctx, *ops) == [[0], [0]]
    assert [op.get_value() for op in ops] == [None, None]


# --------------------------------------------------------------------------------------------
# large buffered requests: helper threads


def test_large_buffered_write_and_read_round_trip(files):
    fd = files.open()
    ctx = Context()
    payload = os.urandom(LARGE)
    w = Operation.write(payload, fd, 0)
    assert run_ops(ctx, w) == [[LARGE]]
    assert w.get_value() == LARGE
    assert os.pread(fd, LARGE + 1, 0) == payload
    r = Operation.read(LARGE, fd, 0)
    assert run_ops(ctx, r) == [[LARGE]]
    assert r.get_value() == payload
    assert r.nbytes == LARGE


def test_mixed_kernel_and_helper_requests_in_one_submit(files):
    src = files.open(os.urandom(3 * MiB))
    expect = os.pread(src, 3 * MiB, 0)
    dst = files.open()
    ctx = Context()
    small = Operation.read(100, src, 5)
    big_read = Operation.read(2 * MiB, src, MiB)
    big_write = Operation.write(expect[:LARGE], dst, 0)
    edge = Operation.read(OFFLOAD_LIMIT, src, 7)  # exactly at the limit: stays in the kernel
    short = Operation.read(LARGE, src, 3 * MiB - 10)  # helper thread, short at EOF
    results = run_ops(ctx, small, big_read, big_write, edge, short)
    assert results == [[100], [2 * MiB], [LARGE], [OFFLOAD_LIMIT], [10]]
    assert small.get_value() == expect[5:105]
    assert big_read.get_value() == expect[MiB:]
    assert edge.get_value() == expect[7:7 + OFFLOAD_LIMIT]
    assert short.get_value() == expect[-10:]
    assert short.nbytes == 10
    assert os.pread(dst, 2 * LARGE, 0) == expect[:LARGE]


@pytest.mark.parametrize("case", ["bad-fd", "write-to-read-only-fd"])
def test_large_buffered_requests_are_refused_at_submit_like_small_ones(files, case):
    """What io_submit refuses up front is not handed to a helper thread: a large request
    raises ValueError at submit and is rolled back, exactly like a small one."""
    if case == "bad-fd":
        op = Operation.read(LARGE, closed_fd(), 0)
    else:
        op = Operation.write(b"w" * LARGE, read_only_fd(files), 0)
    ctx = Context()
    with pytest.raises(ValueError):
        ctx.submit(op)
    assert op.context is None
    with pytest.raises(ValueError):
        ctx.submit(op)  # rolled back: still submittable, and refused again


def test_submit_count_is_always_a_prefix_of_the_claimed_ops(files):
    """Helper-thread requests are dispatched only after io_submit: one placed after an
    iocb the kernel refused does not start, and the count names the ops that did."""
    src = files.open(os.urandom(2 * MiB))
    ctx = Context()
    ok = Operation.read(100, src, 0)
    refused = Operation.read(4, closed_fd(), 0)  # stays with the kernel, which refuses it
    big_before = Operation.read(LARGE, src, 0)
    big_after = Operation.read(LARGE, src, MiB)
    assert ctx.submit(ok, big_before, refused, big_after) == 2
    assert refused.context is None and big_after.context is None  # rolled back
    pump_until(ctx, lambda: ok.context is None and big_before.context is None)
    assert ok.get_value() == os.pread(src, 100, 0)
    assert big_before.get_value() == os.pread(src, LARGE, 0)
    assert ctx.process_events() == 0  # big_after never started
    # the refused op is at the head now: the whole call raises, nothing starts
    with pytest.raises(ValueError):
        ctx.submit(refused, big_after)
    assert big_after.context is None
    assert run_ops(ctx, big_after) == [[LARGE]]
    assert big_after.get_value() == os.pread(src, LARGE, MiB)


def test_helper_threads_failing_to_start_roll_back_the_whole_call(workdir):
    """The helper threads start before io_submit: if they cannot, nothing of the call has
    reached the kernel, every op is rolled back and the error is raised. (A kernel request
    placed after the helper one must not run while its op is marked unclaimed.)"""
    code = textwrap.dedent(f"""
        import os, resource
        from caio.linux_aio import Context, Operation
        MiB = 1 << 20
        fd = os.open({str(workdir / "spawn.dat")!r}, os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fd, b"r" * (2 * MiB))
        ctx = Context()
        big = Operation.read(MiB, fd, 0)
        small = Operation.write(b"W", fd, 0)  # buffered: done inside io_submit if submitted
        got = []
        small.set_callback(got.append)
        vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                  if l.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 512 * 1024, resource.RLIM_INFINITY))
        try:
            ctx.submit(big, small)
        except RuntimeError as exc:
            print("raised:", exc)
        else:
            print("no error: the address-space limit did not stop the threads")
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
        print("file:", os.pread(fd, 1, 0), "taken:", ctx.process_events())
        assert big.context is None and small.context is None
        assert ctx.submit(big, small) == 2
        while not got or big.context is not None:
            ctx.process_events(min_requests=1, timeout=5)
        assert got == [1] and os.pread(fd, 1, 0) == b"W"
        print("ok")
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if "no error" in proc.stdout:
        pytest.skip("could not make thread creation fail here")
    assert "raised: cannot start helper threads" in proc.stdout, proc.stdout
    assert "file: b'r' taken: 0" in proc.stdout, proc.stdout  # the write had not run
    assert proc.stdout.rstrip().endswith("ok"), proc.stdout


def test_kernel_request_failing_when_it_runs_gets_negative_errno(files):
    """io_submit accepts a small write far beyond the filesystem's maximum file size; it
    fails when it runs (EFBIG), so the error arrives at completion."""
    fd = files.open()
    ctx = Context()
    op = Operation.write(b"x", fd, 2**62)
    assert run_ops(ctx, op) == [[-errno.EFBIG]]
    with pytest.raises(SystemError) as excinfo:
        op.get_value()
    assert excinfo.value.errno == errno.EFBIG
    assert op.context is None
    assert ctx.submit(op) == 0
    assert os.fstat(fd).st_size == 0


# --------------------------------------------------------------------------------------------
# the asyncio adapter


def test_adapter_rejects_extra_kwargs(loop_runner):
    async def body():
        with pytest.raises(TypeError):
            AsyncioContext(pool_size=4)
        with pytest.raises(TypeError):
            AsyncioContext(max_requests=8, sqpoll=True)
        ctx = AsyncioContext(max_requests=8, deferred=True)
        try:
            assert ctx.deferred is True
            assert isinstance(ctx.context, Context)
        finally:
            ctx.close()

    loop_runner.run(body)


def test_adapter_deferred_batches_one_iteration_into_one_submit(loop_runner, tmpfs_files):
    fd = tmpfs_files.open()
    count = 64

    async def body(deferred, adapter=Coalescing):
        ctx = adapter(deferred=deferred)
        spy = ctx.context = SubmitSpy(ctx.context)
        try:
            chunks = [i.to_bytes(4, "big") for i in range(count)]
            results = await asyncio.gather(
                *[ctx.write(c, fd, 4 * i) for i, c in enumerate(chunks)]
            )
            assert results == [4] * count
            back = await ctx.read(4 * count + 10, fd, 0)
            assert back == b"".join(chunks)
            return spy.batches
        finally:
            ctx.close()

    batches = loop_runner.run(body, True)
    assert batches[0] == count, batches  # every write of the iteration in one io_submit
    assert batches[1:] in ([], [1]), batches  # the read-back (unless it ran inline)
    os.ftruncate(fd, 0)
    # without deferral the first few go alone, then they are coalesced in bounded batches
    eager, limit = Coalescing.EAGER_BELOW, Coalescing.BATCH_LIMIT
    rest = count - eager
    expected = [1] * eager + [limit] * (rest // limit) + ([rest % limit] if rest % limit else [])
    assert loop_runner.run(body, False)[: len(expected)] == expected
    os.ftruncate(fd, 0)
    # the default adapter submits every operation at once below EAGER_BELOW (64)
    assert count <= AsyncioContext.EAGER_BELOW
    assert loop_runner.run(body, False, AsyncioContext)[:count] == [1] * count


def test_adapter_one_refused_op_fails_alone_in_a_coalesced_batch(loop_runner, tmpfs_files):
    """Without deferral, coalescing must not widen an error: a refused op in the middle
    of a batch fails by itself and its neighbours complete."""
    fd = tmpfs_files.open()
    bad = closed_fd()
    count = 40

    async def body():
        ctx = Coalescing()
        spy = ctx.context = SubmitSpy(ctx.context)
        try:
            def op(i):
                if i == 10:
                    return ctx.write(b"x", bad, 0)  # inside the first coalesced batch
                if i == count - 1:
                    return ctx.write(b"y", bad, 0)  # the last, at the end of a smaller batch
                return ctx.write(i.to_bytes(4, "big"), fd, 4 * i)

            coros = [op(i) for i in range(count)]
            results = await asyncio.gather(*coros, return_exceptions=True)
            assert max(spy.batches) > 1, spy.batches  # the test exercises a batch
            assert ctx._in_flight == 0
            return results
        finally:
            ctx.close()

    results = loop_runner.run(body)
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [10, count - 1], results
    assert all(isinstance(results[i], ValueError) for i in failed)
    data = os.pread(fd, 4 * count, 0)
    for i in range(count - 1):
        if i != 10:
            assert data[4 * i:4 * i + 4] == i.to_bytes(4, "big")


def test_adapter_coalesced_batch_with_a_completed_op(loop_runner, files):
    """An op that already ran is skipped by submit() and not counted: in a coalesced batch
    it must get OSError by itself, and the op queued after it must run and resolve."""
    fd = files.open(b"x" * 16)

    async def body():
        ctx = Coalescing()
        try:
            done_op = Operation.write(b"a", fd, 0)
            assert await ctx.submit(done_op) == 1
            ctx._in_flight = Coalescing.EAGER_BELOW  # as if the device were busy
            fresh = Operation.write(b"b", fd, 1)
            results = await asyncio.wait_for(  # hang guard
                asyncio.gather(ctx.submit(done_op), ctx.submit(fresh), return_exceptions=True),
                10,
            )
            assert type(results[0]) is OSError, results
            assert results[1] == 1, results
            assert ctx._in_flight == Coalescing.EAGER_BELOW
        finally:
            ctx.close()

    loop_runner.run(body)
    assert os.pread(fd, 2, 0) == b"ab"


def test_adapter_close_while_a_task_waits_for_a_slot(loop_runner, tmpfs_files):
    fd = tmpfs_files.open()

    async def body():
        ctx = AsyncioContext(max_requests=1)
        first = asyncio.ensure_future(ctx.write(b"a", fd, 0))  # takes the only slot
        second = asyncio.ensure_future(ctx.write(b"b", fd, 1))  # waits for it
        await asyncio.sleep(0)
        ctx.close()  # delivers the first (a buffered write is done inside io_submit)
        assert await asyncio.wait_for(first, 10) == 1
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(second, 10)  # hang guard

    loop_runner.run(body)
    assert os.pread(fd, 10, 0) == b"a"  # the second never reached the kernel


def test_adapter_drains_in_batches_across_loop_iterations(loop_runner, tmpfs_files):
    """One eventfd wake-up delivers at most DRAIN_BATCH completions per loop iteration;
    the rest follow on later iterations without a new wake-up, and none is lost."""
    fd = tmpfs_files.open(bytes(range(256)) * 16)
    count = 40

    events = []

    class DrainSpy(SubmitSpy):
        def __init__(self, inner):
            super().__init__(inner)
            self.drained = []

        def process_events(self, *args):
            n = self._inner.process_events(*args)
            self.drained.append(n)
            events.append(f"drain {n}")
            return n

    async def write(ctx, chunk, offset):
        result = await ctx.write(chunk, fd, offset)
        events.append("resumed")
        return result

    async def body():
        ctx = AsyncioContext(deferred=True)  # one io_submit: the completions come together
        ctx.DRAIN_BATCH = 3
        spy = ctx.context = DrainSpy(ctx.context)
        try:
            chunks = [bytes([i]) * 100 for i in range(count)]
            results = await asyncio.wait_for(  # hang guard
                asyncio.gather(*[write(ctx, c, 100 * i) for i, c in enumerate(chunks)]),
                10,
            )
            assert results == [100] * count
            assert spy.batches == [count]
            assert max(spy.drained) == 3
            assert sum(spy.drained) == count
            # the tasks of one batch resume before the next batch is taken
            assert events[:5] == ["drain 3", "resumed", "resumed", "resumed", "drain 3"], events
            assert ctx._in_flight == 0
        finally:
            ctx.close()

    loop_runner.run(body)
    assert os.pread(fd, 100 * count, 0) == b"".join(bytes([i]) * 100 for i in range(count))


def test_adapter_close_fails_coalesced_ops_that_never_reached_the_kernel(loop_runner, tmpfs_files):
    fd = tmpfs_files.open(b"data")

    async def body():
        for deferred in (False, True):
            ctx = Coalescing(deferred=deferred)
            spy = ctx.context = SubmitSpy(ctx.context)
            ctx._in_flight = Coalescing.EAGER_BELOW  # as if the device were busy
            task = asyncio.ensure_future(ctx.write(b"late", fd, 0))
            await asyncio.sleep(0)  # queued, its batch not yet submitted
            assert spy.batches == []
            ctx.close()
            with pytest.raises(RuntimeError):
                await asyncio.wait_for(task, 10)  # hang guard
            assert spy.batches == []

    loop_runner.run(body)
    assert os.pread(fd, 10, 0) == b"data"


def test_adapter_deferred_cancel_before_batch_drops_the_op(loop_runner, tmpfs_files):
    fd = tmpfs_files.open()

    async def body():
        ctx = AsyncioContext(deferred=True)
        spy = ctx.context = SubmitSpy(ctx.context)
        try:
            dropped = Operation.write(b"AAAA", fd, 0)
            kept = Operation.write(b"BBBB", fd, 4)
            t_dropped = asyncio.ensure_future(ctx.submit(dropped))
            t_kept = asyncio.ensure_future(ctx.submit(kept))
            await asyncio.sleep(0)  # both queued; the batch is scheduled, not yet run
            assert spy.batches == []
            t_dropped.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t_dropped
            assert await t_kept == 4
            assert spy.batches == [1]
            assert dropped.context is None
            return dropped
        finally:
            ctx.close()

    dropped = loop_runner.run(body)
    assert os.pread(fd, 100, 0) == b"\0" * 4 + b"BBBB"
    # never claimed: another Context still accepts it
    raw = Context()
    assert raw.submit(dropped) == 1
    pump_until(raw, lambda: dropped.context is None)
    assert dropped.get_value() == 4
    assert os.pread(fd, 100, 0) == b"AAAABBBB"


def test_adapter_deferred_submit_errors_reach_the_batch(loop_runner, tmpfs_files):
    """An exception from the batch's submit() goes to every awaiter of the batch;
    ops past the accepted count get OSError("Operation was not submitted")."""
    fd = tmpfs_files.open(b"0123")
    bad = closed_fd()

    async def body():
        ctx = AsyncioContext(deferred=True)
        try:
            # the first iocb is refused: io_submit fails and the whole batch learns it
            results = await asyncio.gather(
                ctx.write(b"x", bad, 0), ctx.write(b"AB", fd, 0), return_exceptions=True,
            )
            assert [type(r) for r in results] == [SubmitError, SubmitError]
            assert isinstance(results[0], ValueError)
            assert results[0] is results[1]
            # a later iocb is refused: the first one is accepted, the rest is not submitted
            results = await asyncio.gather(
                ctx.write(b"ok", fd, 0), ctx.write(b"x", bad, 0), return_exceptions=True,
            )
            assert results[0] == 2
            assert type(results[1]) is OSError
            assert str(results[1]) == "Operation was not submitted"
            # the adapter keeps working afterwards
            assert await ctx.read(4, fd, 0) == b"ok23"
        finally:
            ctx.close()

    loop_runner.run(body)
    assert os.pread(fd, 10, 0) == b"ok23"


def test_adapter_read_of_a_bad_fd_raises(loop_runner):
    bad = closed_fd()

    async def body():
        for deferred in (False, True):
            async with AsyncioContext(deferred=deferred) as ctx:
                for size in (4, LARGE):
                    with pytest.raises((SystemError, ValueError)):
                        await asyncio.wait_for(ctx.read(size, bad, 0), 10)  # hang guard

    loop_runner.run(body)


def test_adapter_large_and_failing_requests(loop_runner, files):
    fd = files.open()
    payload = os.urandom(3 * MiB + 5)
    bad = closed_fd()

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.write(payload, fd, 0) == len(payload)
            assert await ctx.read(len(payload) + 100, fd, 0) == payload
            with pytest.raises(ValueError):
                await ctx.read(LARGE, bad, 0)  # refused at submit, large or not
            with pytest.raises(ValueError):
                await ctx.write(b"x", bad, 0)

    loop_runner.run(body)


def test_adapter_ops_after_close_raise_runtime_error(loop_runner, files):
    fd = files.open(b"abc")

    async def body():
        for deferred in (False, True):
            ctx = AsyncioContext(deferred=deferred)
            assert await ctx.read(3, fd, 0) == b"abc"
            ctx.close()
            ctx.close()
            for method, args in ((ctx.read, (3, fd, 0)), (ctx.read, (LARGE, fd, 0)),
                                 (ctx.write, (b"z", fd, 0)), (ctx.fsync, (fd,))):
                with pytest.raises(RuntimeError):
                    await asyncio.wait_for(method(*args), 10)  # hang guard

    loop_runner.run(body)
    assert os.pread(fd, 10, 0) == b"abc"


def test_adapter_256mib_read_with_a_ticker(files):
    """A 256 MiB read of a page-cached file runs on a helper thread: the data must be right;
    the largest gap seen by a 1 ms ticker is printed (not asserted)."""
    size = 256 * MiB
    chunk = os.urandom(MiB)
    fd = files.open()
    for i in range(size // MiB):
        os.pwrite(fd, chunk, i * MiB)

    async def body():
        stop = asyncio.Event()
        stats = {"worst": 0.0, "ticks": 0}

        async def ticker():
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.monotonic()
                stats["worst"] = max(stats["worst"], now - last)
                stats["ticks"] += 1
                last = now

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.01)  # let the ticker start (not synchronisation)
        ctx = AsyncioContext()
        try:
            start = time.monotonic()
            data = await ctx.read(size, fd, 0)
            elapsed = time.monotonic() - start
        finally:
            ctx.close()
            stop.set()
            await task
        return data, elapsed, stats

    data, elapsed, stats = LoopRunner(asyncio.new_event_loop).run(body)
    assert len(data) == size
    assert data[:MiB] == chunk and data[-MiB:] == chunk
    assert data == chunk * (size // MiB)
    print(
        f"\nlinux_aio 256 MiB read: {elapsed * 1000:.1f} ms, largest loop stall "
        f"{stats['worst'] * 1000:.1f} ms over {stats['ticks']} ticks"
    )

