"""Property-based tests: random sequences of operations against a model of the file.

Every backend gets random sequences of read / write / fsync submissions (single and
batched), cancellations, resubmissions, process / drain steps and a close at the end,
with sizes around the backends' thresholds (page size, the 64 KiB inline / helper /
IOSQE_ASYNC limit) and offsets past EOF. The model is a ``bytearray`` kept in step with
``os.pwrite`` semantics. Invariants checked:

- every operation completes exactly once: one callback call, ``submit`` of it again
  returns 0, and nothing is delivered twice, even after close;
- a read returns the model's bytes (its length clipped at EOF), except for the bytes of
  writes that may have run concurrently with it, which are not determined;
- a cancelled op completes normally or with ``ECANCELED``; only a cancelled one may end
  with ``ECANCELED``, one the thread pools' ``cancel()`` reported taken back must, and a
  write that did changed nothing;
- after everything completed, the file equals the model;
- ``sys.getrefcount(op)`` is back where it started once the backend is done with the op
  (after ``close()`` with work in flight, the drainer delivers the rest later): the
  engine kept no reference.

Overlapping writes are never in flight together (the driver drains first), so the
final contents are determined. The asyncio adapters run rounds of ``asyncio.gather``
over random reads / writes, some cancelled (``task.cancel()`` after a few loop steps, or
``asyncio.wait_for`` with a tiny timeout). A cancelled write the kernel had already
started may still land, even after a later write to the same range (README,
"Cancellation and timeouts: what they undo"), so its bytes are only checked to be one of
the values written there, unless its op ended with ``ECANCELED``. The adapters are also
closed with a random burst in flight: every awaiting task must end, with its result or an
error.

The default run is small; ``CAIO_HYPOTHESIS_EXAMPLES=N`` runs N examples per test
(e.g. 500 for a long run).
"""

from __future__ import annotations

import asyncio
import errno
import faulthandler
import gc
import os
import random
import sys
import tempfile
import threading
import time

import pytest
from conftest import ADAPTERS, RAW_BACKENDS, short_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FILE_SIZE = 192 * 1024
# In flight at once on one Context (raw drivers). linux_uring's rings are sized from
# max_requests (SQ 64, CQ 128): in flight plus cancel requests stay below both, so the
# CQ never overflows (issue 9 item 11 is tested on its own).
MAX_IN_FLIGHT = 24
MAX_CANCELS_PER_DRAIN = 16
WAIT_SECONDS = 10.0

EXAMPLES = int(os.environ.get("CAIO_HYPOTHESIS_EXAMPLES", "0"))


def examples(default: int) -> int:
    return EXAMPLES or default


@pytest.fixture(autouse=True)
def _hang_guard():
    """conftest's per-test hang guard, stretched for long runs (it kills the process)."""
    faulthandler.dump_traceback_later(120 + 2 * EXAMPLES, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def prop_settings(default_examples: int):
    return settings(
        max_examples=examples(default_examples),
        deadline=None,
        database=None,  # no .hypothesis/ folder in the checkout; failures print a blob
        print_blob=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# --------------------------------------------------------------------------------------------
# strategies

sizes = st.one_of(
    st.integers(1, 4096),
    st.integers(4097, 70_000),
    st.sampled_from([4096, 65_535, 65_536, 65_537, 131_072]),
    st.integers(65_537, 150_000),
)
offsets = st.one_of(
    st.integers(0, FILE_SIZE + 8192),
    st.integers(0, (FILE_SIZE + 8192) // 4096).map(lambda page: page * 4096),
)
read_sizes = st.one_of(st.just(0), sizes)
seeds = st.integers(0, 2**32 - 1)

raw_actions = st.one_of(
    st.tuples(st.just("read"), offsets, read_sizes),
    st.tuples(st.just("write"), offsets, sizes, seeds),
    st.tuples(st.just("fsync")),
    st.tuples(st.just("submit")),  # submit the staged ops in one call
    st.tuples(st.just("cancel"), st.integers(0, 1000)),
    st.tuples(st.just("resubmit"), st.integers(0, 1000)),
    st.tuples(st.just("process")),  # deliver what is ready, without waiting
    st.tuples(st.just("wait")),  # wait for at least one completion
    st.tuples(st.just("drain")),  # wait for every completion
)


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write_range(offset: int, size: int) -> tuple[int, int]:
    """A write of ``size`` at ``offset`` folded inside the file (the file never grows,
    so its length, and every read's length, is determined)."""
    size = min(size, FILE_SIZE)
    return offset % (FILE_SIZE - size + 1), size


def overlaps(a_off: int, a_len: int, b_off: int, b_len: int) -> bool:
    return a_off < b_off + b_len and b_off < a_off + a_len


def expected_read_length(offset: int, size: int) -> int:
    return max(0, min(size, FILE_SIZE - offset))


def check_read(data, offset, snapshot, skip, maybe=(), label=""):
    """``data`` read at ``offset`` must equal ``snapshot`` there, except bytes inside
    the ``skip`` ranges (concurrent writes) and bytes one of the ``maybe`` writes
    (``(offset, bytes)``) may have put there."""
    expected = snapshot[offset:offset + len(data)]
    if data == expected:
        return
    for i in range(len(data)):
        if data[i] == expected[i]:
            continue
        pos = offset + i
        if any(s <= pos < s + n for s, n in skip):
            continue
        if any(s <= pos < s + len(b) and b[pos - s] == data[i] for s, b in maybe):
            continue
        raise AssertionError(
            f"{label}: byte at file offset {pos} is {data[i]}, model says {expected[i]}"
        )


# What a callback receives for an op that ended with ECANCELED: the negative errno
# (io_uring's CQE), pread's -1 (thread_aio, as caio), None for any failure (python_aio).
CANCELLED_CALLBACK_RESULT = {
    "linux_uring": -errno.ECANCELED,
    "thread_aio": -1,
    "python_aio": None,
}


def new_file(workdir, initial: bytes) -> int:
    fd, path = tempfile.mkstemp(dir=str(workdir), suffix=".bin")
    os.unlink(path)  # the descriptor keeps it; nothing left behind per example
    assert os.pwrite(fd, initial, 0) == len(initial)
    return fd


# --------------------------------------------------------------------------------------------
# raw Contexts


class Record:
    """One operation of the random sequence and what the test knows about it."""

    def __init__(self, index, kind, op, offset=0, size=0, data=b""):
        self.index = index
        self.kind = kind
        self.op = op
        self.offset = offset
        self.size = size
        self.data = data
        self.calls: list[int] = []
        self.submitted = False
        self.observed = False
        self.cancelled = False  # cancel() was called while it was in flight
        self.taken_back = False  # cancel() reported it taken back before it ran
        self.snapshot: bytes | None = None  # reads: the model when submitted
        self.concurrent: list[Record] = []  # reads: writes that may have overlapped
        self.refcount = 0


class RawDriver:
    def __init__(self, backend, fd, model, **context_kwargs):
        self.backend = backend
        self.fd = fd
        self.model = model
        self.ctx = backend.Context(max_requests=64, **context_kwargs)
        self.records: list[Record] = []
        self.staged: list[Record] = []
        self.in_flight: list[Record] = []  # submitted, completion not observed yet
        self.cancels_since_drain = 0
        self.cond = threading.Condition()

    # callbacks may run on worker threads (thread_aio, python_aio)
    def callback_for(self, rec):
        def callback(result):
            with self.cond:
                rec.calls.append(result)
                self.cond.notify_all()

        return callback

    def new(self, kind, make_op, **fields):
        # the op is only referenced from its Record, so the counts compare like for like
        rec = Record(len(self.records), kind, make_op(), **fields)
        rec.op.set_callback(self.callback_for(rec))
        rec.refcount = sys.getrefcount(rec.op)
        self.records.append(rec)
        return rec

    # --- actions -------------------------------------------------------------------

    def action(self, step):
        getattr(self, "do_" + step[0])(*step[1:])

    def do_read(self, offset, size):
        self.make_room()
        rec = self.new("read", lambda: self.backend.read(size, self.fd, offset),
                       offset=offset, size=size)
        self.staged.append(rec)

    def do_write(self, offset, size, seed):
        offset, size = write_range(offset, size)
        if any(overlaps(offset, size, r.offset, r.size)
               for r in self.staged + self.in_flight if r.kind == "write"):
            self.do_drain()  # overlapping writes in flight together: order undetermined
        self.make_room()
        data = payload(seed, size)
        rec = self.new("write", lambda: self.backend.write(data, self.fd, offset),
                       offset=offset, size=size, data=data)
        self.staged.append(rec)

    def do_fsync(self):
        self.make_room()
        self.staged.append(self.new("fsync", lambda: self.backend.Operation.fsync(self.fd)))

    def make_room(self):
        if len(self.staged) + len(self.in_flight) >= MAX_IN_FLIGHT:
            self.do_drain()

    def do_submit(self):
        batch, self.staged = self.staged, []
        if not batch:
            return
        snapshot = bytes(self.model)
        for rec in batch:
            if rec.kind == "read":
                rec.snapshot = snapshot
                rec.concurrent = [r for r in self.in_flight if r.kind == "write"]
        # the ops of one submit may run in any order: each write may overlap every read
        # in flight or in this batch
        for rec in batch:
            if rec.kind == "write":
                for other in self.in_flight + batch:
                    if other.kind == "read":
                        other.concurrent.append(rec)
        assert self.ctx.submit(*(r.op for r in batch)) == len(batch)
        for rec in batch:
            rec.submitted = True
        self.in_flight.extend(batch)

    def do_cancel(self, pick):
        if not self.records or self.cancels_since_drain >= MAX_CANCELS_PER_DRAIN:
            return
        rec = self.records[pick % len(self.records)]
        self.cancels_since_drain += 1
        with self.cond:
            completed = bool(rec.calls)
        if self.backend.short == "linux_aio":
            # io_cancel refuses regular-file requests (and anything not in flight)
            with pytest.raises(ValueError):
                self.ctx.cancel(rec.op)
        elif self.backend.short == "linux_uring":
            # asynchronous: the op may still complete normally
            assert self.ctx.cancel(rec.op) == 0
        else:
            # the thread pools take back an op no worker has started (it then completes
            # with ECANCELED), and report how many they took
            taken = self.ctx.cancel(rec.op)
            assert taken in (0, 1), taken
            if taken:
                assert rec.submitted and not completed, (
                    f"{rec.kind} #{rec.index} taken back, but it was "
                    f"{'completed' if completed else 'never submitted'}"
                )
                rec.taken_back = True
        rec.cancelled = rec.cancelled or (rec.submitted and not completed)

    def do_resubmit(self, pick):
        submitted = [r for r in self.records if r.submitted]
        if submitted:
            rec = submitted[pick % len(submitted)]
            assert self.ctx.submit(rec.op) == 0, f"{rec.kind} #{rec.index} accepted twice"

    def do_process(self):
        self.do_submit()
        if self.backend.pumped:
            if hasattr(self.ctx, "flush"):
                self.ctx.flush()
            self.ctx.process_events(max_requests=512, min_requests=0, timeout=0)
        self.observe()

    def do_wait(self):
        self.do_submit()
        if not self.in_flight:
            return
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.observe():
            assert time.monotonic() < deadline, f"{self.backend.name}: no completion arrived"
            self.pump_once()

    def do_drain(self):
        self.do_submit()
        deadline = time.monotonic() + WAIT_SECONDS
        while self.in_flight:
            self.observe()
            if not self.in_flight:
                break
            assert time.monotonic() < deadline, (
                f"{self.backend.name}: {len(self.in_flight)} completions did not arrive: "
                f"{[(r.kind, r.offset, r.size) for r in self.in_flight]}"
            )
            self.pump_once()
        self.cancels_since_drain = 0

    def pump_once(self):
        if self.backend.pumped:
            if hasattr(self.ctx, "flush"):
                self.ctx.flush()  # may deliver: then there is nothing to wait for
                if any(r.calls for r in self.in_flight):
                    return
            self.ctx.process_events(max_requests=512, min_requests=1, timeout=1)
        else:
            with self.cond:
                self.cond.wait_for(lambda: any(r.calls for r in self.in_flight), 1.0)

    # --- completions ---------------------------------------------------------------

    def observe(self) -> int:
        """Checks and retires every in-flight op whose callback ran; returns how many."""
        with self.cond:
            done = [r for r in self.in_flight if r.calls]
        for rec in done:
            self.in_flight.remove(rec)
            self.check_completion(rec)
        return len(done)

    def check_completion(self, rec):
        assert len(rec.calls) == 1, f"{rec.kind} #{rec.index}: callback ran {rec.calls}"
        rec.observed = True
        result = rec.calls[0]
        label = f"{self.backend.name} {rec.kind} #{rec.index} at {rec.offset}+{rec.size}"
        try:
            value = rec.op.get_value()
        except OSError as exc:
            # only a cancelled op may end with ECANCELED: it never ran, so it changed
            # nothing (the model keeps the old bytes where a write would have gone)
            assert exc.errno == errno.ECANCELED and rec.cancelled, f"{label}: {exc!r}"
            assert isinstance(exc, SystemError), f"{label}: {exc!r} (caio's type)"
            assert result == CANCELLED_CALLBACK_RESULT[self.backend.short], (
                f"{label}: callback got {result!r}")
            return
        assert not rec.taken_back, f"{label}: taken back by cancel(), but it ran"
        if rec.kind == "read":
            assert isinstance(value, bytes), label
            assert len(value) == expected_read_length(rec.offset, rec.size), label
            assert result == len(value), label
            check_read(value, rec.offset, rec.snapshot,
                       [(w.offset, w.size) for w in rec.concurrent], label=label)
        elif rec.kind == "write":
            assert value == rec.size, f"{label}: wrote {value}"
            assert result == rec.size, label
            self.model[rec.offset:rec.offset + rec.size] = rec.data
        else:
            assert value is None, label

    # --- the end -------------------------------------------------------------------

    def finish(self, close_in_flight):
        closable = hasattr(self.ctx, "close")
        if close_in_flight and closable:
            # close() with queued work: every op still runs and completes once
            self.do_submit()
            self.ctx.close()
        self.do_drain()
        if closable:
            self.ctx.close()
        self.backend.settle(self.ctx)  # joins python_aio's pool: no worker holds an op
        for rec in self.records:
            assert len(rec.calls) == (1 if rec.submitted else 0), (
                f"{rec.kind} #{rec.index}: callback ran {len(rec.calls)} times"
            )
            if self.backend.native:
                assert rec.op.context is None, f"{rec.kind} #{rec.index} still on a Context"
        del self.ctx
        gc.collect()
        for rec in self.records:
            now = sys.getrefcount(rec.op)  # not inside assert: its rewriting holds the op
            assert now == rec.refcount, (
                f"{self.backend.name} {rec.kind} #{rec.index}: refcount {now}, "
                f"was {rec.refcount} before submit"
            )
        assert os.pread(self.fd, FILE_SIZE + 1, 0) == bytes(self.model)


def raw_params():
    params = []
    for param in RAW_BACKENDS:
        # two workers: concurrency still, and queued ops for cancel() to take back
        kwargs = {"pool_size": 2} if param.values[0].short in ("thread_aio", "python_aio") else {}
        params.append(pytest.param(param.values[0], kwargs, id=param.id))
        if param.id == "linux_uring" and param.values[0].module.SQPOLL_ALLOWED:
            # the kernel's polling thread takes the SQEs, not io_uring_enter
            params.append(pytest.param(param.values[0], {"sqpoll": True},
                                       id="linux_uring-sqpoll"))
    return params


@pytest.mark.parametrize(("backend", "context_kwargs"), raw_params())
def test_random_operations_match_the_model(backend, context_kwargs, workdir):
    @prop_settings(default_examples=15)
    @given(st.lists(raw_actions, min_size=1, max_size=40), st.booleans(), seeds)
    def run(steps, close_in_flight, initial_seed):
        initial = payload(initial_seed, FILE_SIZE)
        fd = new_file(workdir, initial)
        try:
            driver = RawDriver(backend, fd, bytearray(initial), **context_kwargs)
            for step in steps:
                driver.action(step)
            driver.finish(close_in_flight)
        finally:
            os.close(fd)

    run()


# --------------------------------------------------------------------------------------------
# asyncio adapters

NO_CANCEL, CANCEL_AFTER_STEPS, WAIT_FOR = 0, 1, 2

cancel_modes = st.one_of(
    st.tuples(st.just(NO_CANCEL), st.just(0)),
    st.tuples(st.just(CANCEL_AFTER_STEPS), st.integers(0, 3)),
    st.tuples(st.just(WAIT_FOR), st.sampled_from([0.0001, 0.001])),
)
# (kind, offset, size, cancel mode, payload seed)
adapter_ops = st.one_of(
    st.tuples(st.just("read"), offsets, read_sizes, cancel_modes, st.just(0)),
    st.tuples(st.just("write"), offsets, sizes, cancel_modes, seeds),
    st.tuples(st.just("fsync"), st.just(0), st.just(0), cancel_modes, st.just(0)),
)
rounds = st.lists(st.lists(adapter_ops, min_size=1, max_size=12), min_size=1, max_size=5)


def ended_cancelled(op) -> bool:
    """Whether ``op`` (done) ended with ECANCELED: taken back before it ran."""
    try:
        op.get_value()
    except OSError as exc:
        return exc.errno == errno.ECANCELED
    return False


class Tracked:
    """An op created here and awaited through ``ctx.submit(op)``, so that the test can
    see when the backend is done with it, how it ended, and its refcount."""

    def __init__(self, op, write=None):
        self.op = op
        self.write = write  # (offset, bytes) for a write
        self.task_error = False  # its task ended with an error other than cancellation
        self.refcount = 0


class AdapterRun:
    def __init__(self, adapter, fd, model):
        self.adapter = adapter
        self.name = short_name(adapter)
        self.fd = fd
        self.model = model
        # writes whose task did not see them complete (cancelled, timed out, or closed):
        # they may have landed, or may land later, unless their op ended with ECANCELED
        self.maybe: list[Tracked] = []
        self.tracked: list[Tracked] = []

    def maybe_writes(self) -> list[tuple[int, bytes]]:
        return [t.write for t in self.maybe]

    def coroutine(self, spec, tracked):
        """The awaitable for one op, and its Tracked record (None when not ``tracked``)."""
        kind, offset, size, _, seed = spec
        if kind == "read":
            args, plain = (size, self.fd, offset), self.ctx.read
        elif kind == "write":
            args, plain = (payload(seed, size), self.fd, offset), self.ctx.write
        else:
            args, plain = (self.fd,), self.ctx.fsync
        if not tracked:
            return plain(*args), None
        record = Tracked(getattr(self.ctx.OPERATION_CLASS, kind)(*args),
                         (offset, args[0]) if kind == "write" else None)
        # the op is referenced from its record only, so the counts compare like for like
        record.refcount = sys.getrefcount(record.op)
        self.tracked.append(record)
        return self.ctx.submit(record.op), record

    async def run_round(self, specs):
        # writes of one round run concurrently: keep them disjoint
        kept, writes = [], []
        for spec in specs:
            if spec[0] == "write":
                offset, size = write_range(spec[1], spec[2])
                if any(overlaps(offset, size, o, n) for o, n in writes):
                    continue
                writes.append((offset, size))
                spec = ("write", offset, size, spec[3], spec[4])
            kept.append(spec)
        snapshot = bytes(self.model)
        maybe_before = self.maybe_writes()

        tasks, records = [], []
        for spec in kept:
            mode, param = spec[3]
            coro, record = self.coroutine(spec, tracked=mode != NO_CANCEL)
            if mode == WAIT_FOR:
                coro = asyncio.wait_for(coro, param)
            tasks.append(asyncio.ensure_future(coro))
            records.append(record)
        for step in range(4):
            await asyncio.sleep(0)
            for spec, task in zip(kept, tasks):
                if spec[3] == (CANCEL_AFTER_STEPS, step):
                    task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        del tasks

        for spec, record, result in zip(kept, records, results):
            kind, offset, size, _, seed = spec
            label = f"{self.name} {kind} at {offset}+{size}"
            if isinstance(result, (asyncio.CancelledError, asyncio.TimeoutError)):
                assert spec[3][0] != NO_CANCEL, f"{label}: {result!r}"
                if kind == "write":
                    self.maybe.append(record)
                continue
            if isinstance(result, BaseException):
                raise result
            if kind == "read":
                assert isinstance(result, bytes), label
                assert len(result) == expected_read_length(offset, size), label
                check_read(result, offset, snapshot, writes, maybe_before, label)
            elif kind == "write":
                assert result == size, label
                self.model[offset:offset + size] = payload(seed, size)
            else:
                assert result is None, label

    async def run(self, all_rounds, close_in_flight=None):
        self.ctx = self.adapter.AsyncioContext()
        for specs in all_rounds:
            await self.run_round(specs)
        if close_in_flight is not None:
            await self.close_with_operations_in_flight(*close_in_flight)
        self.ctx.close()
        if self.name == "python_aio":
            # its pool's threads may still hold a done op in their frames: join them
            self.ctx.context.pool.join()
        # Ops of cancelled tasks (and after a close() with work in flight, the ops still
        # running then) may still be in the backend, which holds a reference to each
        # until it delivers the completion (native: on the drainer thread). No event
        # tells the test when: wait, bounded, until each one has left its Context.
        deadline = time.monotonic() + WAIT_SECONDS
        while any(t.op.context is not None for t in self.tracked):
            assert time.monotonic() < deadline, f"{self.name}: cancelled ops never ended"
            await asyncio.sleep(0.001)
        del self.ctx

    async def close_with_operations_in_flight(self, specs, steps):
        """close() while the ops of ``specs`` are in flight: every awaiting task must end,
        with its result or an error, and a write that did not report success may or may
        not have landed."""
        specs = [("write", *write_range(o, n), c, seed) if kind == "write" else
                 (kind, o, n, c, seed) for kind, o, n, c, seed in specs]
        coros, records = zip(*(self.coroutine(spec, tracked=True) for spec in specs))
        tasks = [asyncio.ensure_future(coro) for coro in coros]
        del coros
        for _ in range(steps):
            await asyncio.sleep(0)
        self.ctx.close()
        done, pending = await asyncio.wait(tasks, timeout=WAIT_SECONDS)
        assert not pending, (
            f"{self.name}: {len(pending)} of {len(tasks)} tasks still waiting "
            f"{WAIT_SECONDS:.0f} s after close()"
        )
        for spec, record, task in zip(specs, records, tasks):
            kind, _, size, _, _ = spec
            error = task.exception()
            if error is not None:
                assert isinstance(error, (RuntimeError, OSError)), f"{self.name}: {error!r}"
                record.task_error = True
            elif kind == "write":
                assert task.result() == size, f"{self.name}: wrote {task.result()!r}"
            if kind == "write":
                # landed or not, and in no known order with the burst's other writes
                self.maybe.append(record)
        del done, tasks, error

    def check_end(self):
        for t in self.tracked:
            assert t.op.context is None
            if t.task_error:
                # caio keeps an op's callback after completion; the adapter's holds its
                # future, whose exception's traceback holds the submit() frame, which
                # holds the op: a cycle through the op, which the GC frees once the op
                # is dropped. Replacing the callback breaks it (nothing else refers to it).
                t.op.set_callback(len)
            if t.write is not None and ended_cancelled(t.op):
                # taken back before it ran: it must not have landed
                self.maybe.remove(t)
        gc.collect()
        for t in self.tracked:
            now = sys.getrefcount(t.op)  # not inside assert (see RawDriver)
            assert now == t.refcount, f"{self.name}: refcount of an op {now}, was {t.refcount}"
        actual = os.pread(self.fd, FILE_SIZE + 1, 0)
        assert len(actual) == FILE_SIZE
        check_read(actual, 0, self.model, (), self.maybe_writes(),
                   f"{self.name} final contents")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapter_random_gather_matches_the_model(adapter, loop_factory, workdir):
    @prop_settings(default_examples=8)
    @given(rounds, seeds)
    def run(all_rounds, initial_seed):
        initial = payload(initial_seed, FILE_SIZE)
        fd = new_file(workdir, initial)
        try:
            harness = AdapterRun(adapter, fd, bytearray(initial))
            loop = loop_factory()
            try:
                loop.run_until_complete(harness.run(all_rounds))
            finally:
                loop.close()
            harness.check_end()
        finally:
            os.close(fd)

    run()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapter_close_with_operations_in_flight(adapter, loop_factory, workdir):
    @prop_settings(default_examples=5)
    @given(rounds, st.lists(adapter_ops, min_size=1, max_size=24), st.integers(0, 3), seeds)
    def run(all_rounds, last, steps, initial_seed):
        initial = payload(initial_seed, FILE_SIZE)
        fd = new_file(workdir, initial)
        try:
            harness = AdapterRun(adapter, fd, bytearray(initial))
            loop = loop_factory()
            try:
                loop.run_until_complete(harness.run(all_rounds, (last, steps)))
            finally:
                loop.close()
            harness.check_end()
        finally:
            os.close(fd)

    run()


# --------------------------------------------------------------------------------------------
# what the properties found (each fixed; kept as a regression test)


def test_python_aio_failed_op_holds_no_engine_frames(workdir):
    from caio import python_aio

    ctx = python_aio.Context(max_requests=4, pool_size=1)
    fd = new_file(workdir, b"x" * 16)
    try:
        done = threading.Event()
        # a bad descriptor, and a cancelled op (ECANCELED): both end with an exception
        failed = python_aio.Operation.read(4, 2**30, 0)
        blocker = python_aio.Operation.fsync(fd)
        cancelled = python_aio.Operation.read(4, fd, 0)
        for op in (failed, blocker, cancelled):
            op.set_callback(lambda result, op=op: op is cancelled and done.set())
        before = [sys.getrefcount(op) for op in (failed, cancelled)]
        assert ctx.submit(failed, blocker, cancelled) == 3
        ctx.cancel(cancelled)  # 1 if the single worker is still busy, else it ran
        assert done.wait(WAIT_SECONDS)
        ctx.close()
        ctx.pool.join()
        assert failed.exception is not None
        gc.collect()
        after = [sys.getrefcount(op) for op in (failed, cancelled)]
        assert after == before
    finally:
        os.close(fd)
