"""Soak: many mixed operations with random cancellations, then leak and data checks.

    python benchmarks/soak.py --ops 1000000          # the full run (see README, Reliability)
    python benchmarks/soak.py --ops 20000            # a few seconds (CI: tests/test_soak.py)

Several threads, each with its own event loop (asyncio, and uvloop on every other thread
when it is installed), each loop with one ``AsyncioContext`` of every available backend.
Every Context gets a few worker tasks; each worker owns two blocks of its thread's file
and runs a random mix of reads (checked against what it wrote), writes of random ranges,
fsync / fdatasync, with some operations cancelled (``asyncio.wait_for`` with a tiny
timeout, or ``task.cancel()`` after a few loop steps).

A cancelled write may still land (README, "Cancellation and timeouts: what they undo"),
so its block is left alone until the operation is over; then the block must hold either
the old contents or the new ones, nothing else, and that becomes what the worker expects.
A write that thread_aio or python_aio took back before it ran ends with ``ECANCELED``:
then its block must hold the old contents.

Checks (each failure is listed and makes the exit status 1):

- every read returns exactly the bytes its worker expects; at the end every block reads
  back as written;
- no unexpected exception, no task left hanging;
- RSS growth (anonymous memory, RssAnon) between the end of the warm-up and the end of
  the run < 1 MiB (``--rss-limit-kib``), measured after ``gc.collect()`` and glibc's
  ``malloc_trim(0)``, so that free heap the allocator keeps does not count. Runs of
  20,000 ops vary by about ±0.8 MiB (pymalloc's arenas, thread stacks, the python_aio
  pool still warming up), so the short CI run checks 4 MiB; 1,000,000 ops check 1 MiB;
- once every Context is closed and collected: as many open fds and threads as before.

At the end each adapter is closed while a burst of its operations is still in flight:
every awaiting task must end within the hang guard, with its result (a read's bytes are
checked) or ``RuntimeError("AsyncioContext is closed")`` (``--no-close-in-flight`` skips
this).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    REPO_ROOT,
    KiB,
    MiB,
    available_loops,
    fd_count,
    new_loop,
    settled_anon_rss_bytes,
    thread_count,
)

BLOCK = 128 * KiB
BLOCKS_PER_WORKER = 2
CANCEL_RATE = 0.05
SYNC_RATE = 0.004
# hang guard for cancelled operations, closing, and for the counts to settle
WAIT_SECONDS = float(os.environ.get("CAIO_SOAK_WAIT", "30"))


# --------------------------------------------------------------------------------------------
# one worker: two blocks of a file, a random mix of operations on them


def op_finished(op) -> bool:
    """True once the backend is done with ``op`` (or never started it): every backend's
    Operation names the Context it is in flight on, and leaves it on completion."""
    return op.context is None


def ended_cancelled(op) -> bool:
    """Whether ``op`` (finished) ended with ECANCELED: taken back before it ran."""
    try:
        op.get_value()
    except OSError as exc:
        return exc.errno == errno.ECANCELED
    return False


@dataclass
class Stats:
    ops: int = 0
    cancelled: int = 0
    cancelled_writes: int = 0
    cancelled_writes_landed: int = 0
    cancelled_writes_taken_back: int = 0
    verified_bytes: int = 0
    violations: list[str] = field(default_factory=list)


class Block:
    def __init__(self, offset: int, content: bytes):
        self.offset = offset
        self.expected = bytearray(content)
        # a cancelled write that may still land: (op, the contents if it did)
        self.pending = None


class Worker:
    def __init__(self, name, ctx, fd, offset, rng, stats):
        self.name = name
        self.ctx = ctx
        self.fd = fd
        self.rng = rng
        self.stats = stats
        self.done = 0  # operations this worker awaited
        self.blocks = []
        for i in range(BLOCKS_PER_WORKER):
            content = rng.randbytes(BLOCK)
            assert os.pwrite(fd, content, offset + i * BLOCK) == BLOCK
            self.blocks.append(Block(offset + i * BLOCK, content))

    def count(self):
        self.done += 1
        self.stats.ops += 1

    def violation(self, message):
        self.stats.violations.append(f"{self.name}: {message}")

    def size(self) -> int:
        r = self.rng.random()
        if r < 0.75:
            return self.rng.randint(1, 4096)
        if r < 0.97:
            return self.rng.randint(4097, 64 * KiB)
        return self.rng.randint(64 * KiB + 1, BLOCK)

    def sub_range(self):
        n = self.size()
        return self.rng.randint(0, BLOCK - n), n

    async def cancellable(self, coro):
        """Runs ``coro``, sometimes cancelled. Returns (cancelled, result)."""
        self.count()
        if self.rng.random() >= CANCEL_RATE:
            return False, await coro
        if self.rng.random() < 0.5:
            try:
                return False, await asyncio.wait_for(coro, self.rng.choice([0, 1e-5, 1e-4]))
            except asyncio.TimeoutError:
                self.stats.cancelled += 1
                return True, None
        task = asyncio.ensure_future(coro)
        for _ in range(self.rng.randint(0, 2)):
            await asyncio.sleep(0)
        task.cancel()
        try:
            return False, await task
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            return True, None

    async def resolve(self, block) -> bool:
        """Settles a block a cancelled write may have touched; False while it runs."""
        op, landed = block.pending
        if not op_finished(op):
            return False
        block.pending = None
        self.count()
        content = await self.ctx.read(BLOCK, self.fd, block.offset)
        if ended_cancelled(op):
            self.stats.cancelled_writes_taken_back += 1
            if content != bytes(block.expected):
                self.violation(f"block at {block.offset} changed by a write that ended "
                               "with ECANCELED (taken back before it ran)")
                block.expected = bytearray(content)
        elif content == bytes(landed):
            self.stats.cancelled_writes_landed += 1
            block.expected = landed
        elif content != bytes(block.expected):
            self.violation(f"block at {block.offset} after a cancelled write holds neither "
                           "the old nor the new contents")
            block.expected = bytearray(content)
        return True

    async def step(self):
        block = self.rng.choice(self.blocks)
        if block.pending is not None and not await self.resolve(block):
            await asyncio.sleep(0)
            return
        r = self.rng.random()
        if r < SYNC_RATE:
            sync = self.ctx.fsync if self.rng.random() < 0.5 else self.ctx.fdsync
            cancelled, result = await self.cancellable(sync(self.fd))
            if not cancelled and result is not None:
                self.violation(f"sync returned {result!r}")
        elif r < 0.5:
            start, n = self.sub_range()
            cancelled, data = await self.cancellable(
                self.ctx.read(n, self.fd, block.offset + start))
            if not cancelled:
                if data != block.expected[start:start + n]:
                    self.violation(f"read of {n} at {block.offset + start} returned wrong "
                                   f"bytes ({len(data)} bytes)")
                self.stats.verified_bytes += n
        else:
            start, n = self.sub_range()
            payload = self.rng.randbytes(n)
            op = self.ctx.OPERATION_CLASS.write(payload, self.fd, block.offset + start)
            cancelled, written = await self.cancellable(self.ctx.submit(op))
            landed = bytearray(block.expected)
            landed[start:start + n] = payload
            if cancelled:
                self.stats.cancelled_writes += 1
                block.pending = (op, landed)
            elif written != n:
                self.violation(f"write of {n} returned {written!r}")
            else:
                block.expected = landed

    async def run(self, n_ops):
        target = self.done + n_ops
        while self.done < target:
            await self.step()

    async def finish(self):
        """Waits for cancelled writes, then checks every block (through the adapter and
        with os.pread)."""
        deadline = time.monotonic() + WAIT_SECONDS
        for block in self.blocks:
            while block.pending is not None and not await self.resolve(block):
                if time.monotonic() > deadline:
                    self.violation(f"a cancelled write at {block.offset} never ended")
                    return
                await asyncio.sleep(0.001)
            data = await self.ctx.read(BLOCK, self.fd, block.offset)
            self.count()
            if data != bytes(block.expected):
                self.violation(f"block at {block.offset} does not read back as written")
            # and without caio: a read and a write misplaced the same way would agree
            if os.pread(self.fd, BLOCK, block.offset) != bytes(block.expected):
                self.violation(f"block at {block.offset}: the file does not hold what was "
                               "written")
            self.stats.verified_bytes += BLOCK


# --------------------------------------------------------------------------------------------
# one thread: its own loop, one adapter per backend, a few workers per adapter


def loop_name(thread_index):
    """asyncio, and uvloop on every other thread when it is installed."""
    loops = available_loops()
    return loops[thread_index % len(loops)]


class SoakThread(threading.Thread):
    def __init__(self, index, options, path, barrier, adapters):
        super().__init__(name=f"soak-{index}", daemon=True)
        self.index = index
        self.options = options
        self.path = path
        self.barrier = barrier
        self.adapters = adapters
        self.stats = Stats()
        self.rng = random.Random(options.seed * 1000 + index)
        self.loop_name = ""

    def run(self):
        self.loop_name = loop_name(self.index)
        loop = new_loop(self.loop_name)
        try:
            loop.run_until_complete(self.main())
        except BaseException as exc:  # noqa: BLE001 (reported, and the barrier released)
            self.stats.violations.append(f"thread {self.index}: {exc!r}")
            self.barrier.abort()
        finally:
            loop.close()

    def sync_point(self):
        # the main thread measures between two sync points; workers are idle there
        self.barrier.wait(timeout=600)

    async def main(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            contexts, workers = [], []
            for module in self.adapters:
                ctx = module.AsyncioContext()
                contexts.append(ctx)
                for w in range(self.options.workers):
                    offset = len(workers) * BLOCKS_PER_WORKER * BLOCK
                    name = f"thread {self.index} {module.__name__} worker {w}"
                    workers.append(Worker(name, ctx, fd, offset, self.rng, self.stats))
            per_worker = self.options.ops // (self.options.threads * len(workers))
            warmup = max(1, int(per_worker * self.options.warmup))
            await asyncio.gather(*(w.run(warmup) for w in workers))
            self.sync_point()  # warm-up done
            self.sync_point()  # main thread measured
            await asyncio.gather(*(w.run(per_worker - warmup) for w in workers))
            await asyncio.gather(*(w.finish() for w in workers))
            self.sync_point()  # run done
            self.sync_point()  # main thread measured
            if self.options.close_in_flight:
                await self.close_in_flight(contexts, fd)
            for context in contexts:
                context.close()
            del contexts, workers
        finally:
            os.close(fd)

    async def close_in_flight(self, contexts, fd):
        """Closes each adapter with a burst of operations in flight: each must end, with
        its result or the adapter's "closed" error. Every write is over by now, so the
        file's blocks are what the reads that completed must return."""
        reads = 32
        for ctx in contexts:
            name = f"thread {self.index} {type(ctx).__module__}"
            tasks = [asyncio.ensure_future(ctx.read(BLOCK, fd, i * BLOCK))
                     for i in range(reads)]
            tasks += [asyncio.ensure_future(ctx.fsync(fd)) for _ in range(4)]
            await asyncio.sleep(0)
            ctx.close()
            done, hanging = await asyncio.wait(tasks, timeout=WAIT_SECONDS)
            self.stats.ops += len(tasks)
            if hanging:
                self.stats.violations.append(
                    f"{name}: {len(hanging)} of {len(tasks)} tasks still waiting "
                    f"{WAIT_SECONDS:.0f} s after close()")
                for task in hanging:
                    task.cancel()
            for i, task in enumerate(tasks):
                if task not in done:
                    continue
                error = task.exception()
                if error is not None:
                    if not (isinstance(error, RuntimeError)
                            and str(error) == "AsyncioContext is closed"):
                        self.stats.violations.append(f"{name}: {error!r} after close()")
                elif i < reads and task.result() != os.pread(fd, BLOCK, i * BLOCK):
                    self.stats.violations.append(
                        f"{name}: a read completed across close() returned wrong bytes")


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class Report:
    ops: int
    seconds: float
    threads: int
    backends: list[str]
    loops: list[str]
    stats: Stats
    rss_warm: int
    rss_end: int
    fds: tuple[int, int, int]  # before, while running, after close
    tasks: tuple[int, int, int]
    rss_limit: int

    @property
    def violations(self) -> list[str]:
        return self.stats.violations

    def text(self) -> str:
        s = self.stats
        growth = self.rss_end - self.rss_warm
        lines = [
            (f"soak: {self.ops} ops in {self.seconds:.1f} s "
             f"({self.ops / self.seconds:,.0f} ops/s), {self.threads} threads "
             f"({', '.join(self.loops)}) x {len(self.backends)} contexts "
             f"({', '.join(self.backends)})"),
            (f"  cancelled {s.cancelled} ops, {s.cancelled_writes} of them writes "
             f"({s.cancelled_writes_taken_back} taken back, "
             f"{s.cancelled_writes_landed} landed anyway); "
             f"{s.verified_bytes / MiB:,.0f} MiB read back and verified"),
            (f"  RSS after warm-up {self.rss_warm / MiB:.1f} MiB, at the end "
             f"{self.rss_end / MiB:.1f} MiB: growth {growth / KiB:+.0f} KiB "
             f"(limit {self.rss_limit // KiB} KiB)"),
            (f"  fds: {self.fds[0]} before, {self.fds[1]} while running, {self.fds[2]} "
             f"after close (growth {self.fds[2] - self.fds[0]:+d})"),
            (f"  threads: {self.tasks[0]} before, {self.tasks[1]} while running, "
             f"{self.tasks[2]} after close (growth {self.tasks[2] - self.tasks[0]:+d})"),
        ]
        if self.violations:
            lines.append(f"FAILED: {len(self.violations)} violation(s)")
            lines += [f"  - {v}" for v in self.violations[:20]]
        else:
            lines.append("OK")
        return "\n".join(lines)


def settle_counts(fds0, tasks0):
    """Fd and thread counts once closing is over: the kernel ends io_uring's threads
    asynchronously, so wait (bounded) for them to reach the starting counts."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        gc.collect()
        fds, tasks = fd_count(), thread_count()
        if (fds <= fds0 and tasks <= tasks0) or time.monotonic() > deadline:
            return fds, tasks
        time.sleep(0.01)


def run_soak(ops=20_000, threads=3, workers=4, directory=None, seed=1, warmup=0.2,
             close_in_flight=True, backends=None, rss_limit=1 * MiB) -> Report:
    import caio

    adapters = [m for m in caio.variants_asyncio
                if backends is None or m.__name__.split(".")[-1].removesuffix("_asyncio")
                in backends]
    options = argparse.Namespace(ops=ops, threads=threads, workers=workers, seed=seed,
                                 warmup=warmup, close_in_flight=close_in_flight)
    base = Path(directory or os.environ.get("CAIO_TEST_DIR") or REPO_ROOT / ".pytest-tmp")
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="caio-soak-", dir=str(base)))
    for i in range(min(threads, 2)):
        # libuv opens a process-wide signal pipe with its first loop, and keeps it
        new_loop(loop_name(i)).close()
    fds0, tasks0 = fd_count(), thread_count()
    barrier = threading.Barrier(threads + 1)
    pool = [SoakThread(i, options, str(folder / f"soak-{i}.bin"), barrier, adapters)
            for i in range(threads)]
    stats = Stats()
    rss_warm = rss_end = 0
    fds_running = tasks_running = 0
    start = time.monotonic()
    try:
        for t in pool:
            t.start()
        try:
            barrier.wait(timeout=600)  # warm-up done
            rss_warm = settled_anon_rss_bytes()
            barrier.wait(timeout=600)
            barrier.wait(timeout=3600)  # run done
            rss_end = settled_anon_rss_bytes()
            fds_running, tasks_running = fd_count(), thread_count()
            barrier.wait(timeout=600)
        except threading.BrokenBarrierError:
            stats.violations.append("a soak thread failed (see below)")
        for t in pool:
            t.join(WAIT_SECONDS)
            if t.is_alive():
                stats.violations.append(f"{t.name} did not finish")
    finally:
        seconds = time.monotonic() - start
        for t in pool:
            for name in ("ops", "cancelled", "cancelled_writes", "cancelled_writes_landed",
                         "cancelled_writes_taken_back", "verified_bytes"):
                setattr(stats, name, getattr(stats, name) + getattr(t.stats, name))
            stats.violations += t.stats.violations
        del pool
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    fds_end, tasks_end = settle_counts(fds0, tasks0)
    report = Report(ops=stats.ops, seconds=seconds, threads=threads,
                    backends=[m.__name__.split(".")[-1].removesuffix("_asyncio")
                              for m in adapters],
                    loops=[loop_name(i) for i in range(threads)], stats=stats,
                    rss_warm=rss_warm, rss_end=rss_end,
                    fds=(fds0, fds_running, fds_end), tasks=(tasks0, tasks_running, tasks_end),
                    rss_limit=rss_limit)
    if rss_warm and rss_end - rss_warm >= rss_limit:
        stats.violations.append(f"RSS grew by {(rss_end - rss_warm) / KiB:.0f} KiB after "
                                "the warm-up")
    if fds_end > fds0:
        stats.violations.append(f"{fds_end - fds0} fds left open after closing")
    if tasks_end > tasks0:
        stats.violations.append(f"{tasks_end - tasks0} threads left after closing")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=20_000, help="operations in all (20000)")
    parser.add_argument("--threads", type=int, default=3, help="threads, one loop each (3)")
    parser.add_argument("--workers", type=int, default=4,
                        help="worker tasks per Context (4)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated subset: linux_uring,linux_aio,thread_aio,"
                             "python_aio (default: every available one)")
    parser.add_argument("--dir", default=None,
                        help="where the data files go (default $CAIO_TEST_DIR or "
                             "<repo>/.pytest-tmp; not tmpfs)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=0.2,
                        help="fraction of the operations before the RSS baseline (0.2)")
    parser.add_argument("--rss-limit-kib", type=int, default=1024,
                        help="most RSS growth allowed after the warm-up (1024)")
    parser.add_argument("--close-in-flight", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="at the end, close each adapter with operations in flight "
                             "and check that every task ends (default: on)")
    args = parser.parse_args(argv)
    report = run_soak(ops=args.ops, threads=args.threads, workers=args.workers,
                      directory=args.dir, seed=args.seed, warmup=args.warmup,
                      close_in_flight=args.close_in_flight,
                      backends=args.backends.split(",") if args.backends else None,
                      rss_limit=args.rss_limit_kib * KiB)
    print(report.text(), flush=True)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
