"""The page-cache workloads of the caio benchmarks: data files, page-cache warming,
runners, timed and counted runs, the big read; on asyncio loops and on trio.

Used by ``benchmarks/compare.py`` (time-boxed runs in fresh subprocesses) and by the
pytest-benchmark suite (``pytest benchmarks/ --benchmark-only``); the measuring machinery
(subprocesses, sides, repeats, statistics, tables) is ``harness.py``.

Nothing here imports ``caio`` at module level: ``compare.py`` runs this module in
subprocesses whose ``PYTHONPATH`` decides which ``caio`` (this project or upstream
caio 0.12.10) gets imported.
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import os
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from harness import (
    BACKEND_MODULES,
    KiB,
    MiB,
    Stopwatch,
    caio_backends,
    close_context,
    cpu_us_per_op,
    current_rss_mib,
    libc,
    log,
    peak_rss_mib,
)

# File sizes used by default. The read file is small enough to stay in the page cache
# of any CI machine and large enough that 4 KiB random reads do not all hit one page.
DATA_FILE_SIZE = 64 * MiB
WRITE_FILE_SIZE = 16 * MiB
BIG_READ_SIZE = 256 * MiB

DATA_FILE_NAME = "read.dat"
WRITE_FILE_NAME = "write.dat"
BIG_FILE_NAME = "big.dat"


@dataclass(frozen=True)
class Workload:
    name: str
    op: str  # "read", "read_into", "write", "fsync", "fdsync"
    size: int  # bytes per operation (0 for syncs)
    pattern: str  # "random", "seq" or "none"
    description: str
    direct: bool = False  # O_DIRECT, into buffers from caio.aligned_buffer


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("rand4k", "read", 4 * KiB, "random", "4 KiB random reads (page cache)"),
        Workload("seq64k", "read", 64 * KiB, "seq", "64 KiB sequential reads (page cache)"),
        Workload("seq1m", "read", 1 * MiB, "seq", "1 MiB sequential reads (page cache)"),
        # Operation.read_into into one reused bytearray per worker (ours only: caio
        # 0.12.10 has no read_into), next to the bytes-returning rand4k / seq1m rows.
        Workload("rand4k_into", "read_into", 4 * KiB, "random",
                 "4 KiB random reads into a reused buffer (page cache)"),
        Workload("seq1m_into", "read_into", 1 * MiB, "seq",
                 "1 MiB sequential reads into a reused buffer (page cache)"),
        Workload("direct1m_into", "read_into", 1 * MiB, "seq",
                 "1 MiB sequential O_DIRECT reads into a caio.aligned_buffer", direct=True),
        Workload("write4k", "write", 4 * KiB, "random", "4 KiB random overwrites"),
        Workload("fsync", "fsync", 0, "none", "fsync on a clean file"),
        Workload("fdsync", "fdsync", 0, "none", "fdatasync on a clean file"),
    )
}


# --------------------------------------------------------------------------- files


def make_file(path: Path, size: int, seed: int = 1) -> None:
    """Create ``path`` with ``size`` bytes of pseudo-random data (reused if it fits)."""
    try:
        if path.stat().st_size == size:
            return
    except FileNotFoundError:
        pass
    rnd = random.Random(seed)
    block = rnd.randbytes(MiB)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fp:
        written = 0
        index = 0
        while written < size:
            # Vary each MiB a little so no two blocks are identical.
            chunk = index.to_bytes(8, "little") + block[8:]
            chunk = chunk[: size - written]
            fp.write(chunk)
            written += len(chunk)
            index += 1
        fp.flush()
        os.fsync(fp.fileno())
    os.replace(tmp, path)


def prepare_data_dir(directory: Path, big_size: int = BIG_READ_SIZE,
                     data_size: int = DATA_FILE_SIZE,
                     write_size: int = WRITE_FILE_SIZE) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "data": directory / DATA_FILE_NAME,
        "write": directory / WRITE_FILE_NAME,
    }
    make_file(files["data"], data_size, seed=1)
    make_file(files["write"], write_size, seed=2)
    if big_size:
        files["big"] = directory / BIG_FILE_NAME
        make_file(files["big"], big_size, seed=3)
    return {k: str(v) for k, v in files.items()}


@dataclass(frozen=True)
class DataDirectory:
    path: Path
    fstype: str
    temporary: bool

    @property
    def description(self) -> str:
        return str(self.path) + (" (temporary)" if self.temporary else "")


@contextmanager
def data_directory(arg: str | None, prefix: str = "caio-bench-") -> Iterator[DataDirectory]:
    """The folder for the data files: ``arg``, or a temporary folder removed afterwards.
    Warns when it is on tmpfs (no page cache in the usual sense)."""
    temporary = not arg
    path = Path(arg).resolve() if arg else Path(tempfile.mkdtemp(prefix=prefix))
    fstype = filesystem_type(path)
    if fstype in ("tmpfs", "ramfs"):
        log(f"warning: {path} is on {fstype}; page-cache behaviour differs from a real disk")
    try:
        yield DataDirectory(path, fstype, temporary)
    finally:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)


def filesystem_type(path: str | Path) -> str:
    """Filesystem type of the mount holding ``path`` (from /proc/self/mounts)."""
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fp:
            for line in fp:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype


# --------------------------------------------------------------------- page cache

def mincore_residency(fd: int, size: int) -> float:
    """Fraction of the first ``size`` bytes of ``fd`` that is in the page cache.

    Maps the file read-only with libc ``mmap`` (through ctypes, so no page is touched)
    and asks ``mincore``.
    """
    if size <= 0:
        return 1.0
    lib = libc()
    addr = lib.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        if lib.mincore(addr, size, vec) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        resident = sum(1 for b in vec if b & 1)
        return resident / pages
    finally:
        lib.munmap(addr, size)


def _read_through(fd: int, size: int) -> float:
    """Read the whole range once; return the seconds it took."""
    buf = bytearray(MiB)
    t0 = time.perf_counter()
    off = 0
    while off < size:
        n = os.preadv(fd, [buf], off)
        if n <= 0:
            break
        off += n
    return time.perf_counter() - t0


def warm_file(path: str, size: int | None = None) -> dict[str, Any]:
    """Bring ``path`` into the page cache and check that it is resident.

    ``posix_fadvise(WILLNEED)`` then a full read-through; residency is checked with
    ``mincore`` on an mmap, or (if that fails) by timing a second read-through.
    Returns ``{"resident": fraction or None, "method": ..., "ok": bool}``.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        if size is None:
            size = os.fstat(fd).st_size
        try:
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
        except (AttributeError, OSError):
            pass
        _read_through(fd, size)
        try:
            frac = mincore_residency(fd, size)
            return {"resident": frac, "method": "mincore", "ok": frac >= 0.99}
        except (OSError, AttributeError, TypeError):
            pass
        # Fallback: a resident file reads back at memory speed (well above 1 GB/s).
        seconds = _read_through(fd, size)
        rate = size / seconds if seconds > 0 else float("inf")
        ok = rate > 1e9
        return {"resident": 1.0 if ok else None, "method": f"timing ({rate / 1e9:.1f} GB/s)",
                "ok": ok}
    finally:
        os.close(fd)


def workload_file(workload: Workload, files: dict[str, str]) -> str:
    """The file a workload works on: reads the data file, the others the write file."""
    return files["data"] if workload.op in ("read", "read_into") else files["write"]


def sync_file(path: str) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def before_run(workload: Workload, files: dict[str, str]) -> dict[str, Any]:
    """Set the stage for one run; returns ``warm_file``'s report on the workload's file."""
    if workload.op in ("fsync", "fdsync"):
        sync_file(files["write"])  # start from a clean file (write runs leave dirty pages)
    return warm_file(workload_file(workload, files))


def after_run(workload: Workload, files: dict[str, str]) -> None:
    if workload.op == "write":
        sync_file(files["write"])  # do not leave writeback to the next run


# ------------------------------------------------------------------ async libraries


@dataclass(frozen=True)
class AsyncLib:
    """What the workloads need of the async library a run is on: asyncio (whichever
    asyncio loop: asyncio, uvloop) or trio."""

    name: str
    sleep: Callable[[float], Awaitable[Any]]
    run_all: Callable[[Sequence[Callable[[], Awaitable[Any]]]], Awaitable[None]]


async def _asyncio_run_all(fns: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    await asyncio.gather(*(fn() for fn in fns))


async def _trio_run_all(fns: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    import trio

    async with trio.open_nursery() as nursery:
        for fn in fns:
            nursery.start_soon(fn)


ASYNCIO = AsyncLib("asyncio", asyncio.sleep, _asyncio_run_all)


def async_lib(loop: str) -> AsyncLib:
    """The library of an event loop name (``harness.available_loops``)."""
    if loop == "trio":
        import trio

        return AsyncLib("trio", trio.sleep, _trio_run_all)
    return ASYNCIO


def thread_submitter(lib: AsyncLib) -> Callable[..., Awaitable[Any]]:
    """``submit(fn, *args)``: ``fn(*args)`` on the library's worker threads, awaited
    (asyncio's default executor; trio's ``to_thread.run_sync``, what trio.Path and
    trio.wrap_file use)."""
    if lib.name == "trio":
        import trio

        return trio.to_thread.run_sync
    return partial(asyncio.get_running_loop().run_in_executor, None)


# ---------------------------------------------------------------------- backends


def caio_context_class(backend: str, lib: str = "asyncio") -> Any:
    """caio's adapter class of ``backend`` (a short name, or "default") for the async
    library ``lib``; under trio, ``caio.trio_adapter``'s (ImportError when absent)."""
    if lib == "trio":
        from caio import trio_adapter

        if backend == "default":
            return trio_adapter.TrioContext
        contexts = trio_adapter.TRIO_CONTEXTS
        full = BACKEND_MODULES.get(backend, backend).removesuffix("_asyncio")
        if full not in contexts:
            raise LookupError(f"caio.trio_adapter has no backend {backend!r} "
                              f"(have: {', '.join(contexts) or 'none'})")
        return contexts[full]

    import caio

    if backend == "default":
        return caio.AsyncioContext
    modules = caio_backends()
    if backend not in modules:
        raise LookupError(f"caio backend {backend!r} is not available "
                          f"(have: {', '.join(sorted(modules)) or 'none'})")
    return modules[backend].AsyncioContext


# ------------------------------------------------------------------------ runners
#
# A runner turns (workload, files) into per-worker operation callables
# ``op(offset) -> awaitable``. Runners: "caio:<backend>" and the reference rows
# "executor" (the library's worker threads running os.pread ...), the file APIs of
# FILE_APIS (a file object per worker, seek + read/write, each a worker-thread call)
# and "floor" (the library's cheapest suspend and resume).

OpFunc = Callable[[int], Awaitable[Any]]

# File-object APIs over worker threads, and the async library each runs on.
FILE_APIS = {"aiofiles": "asyncio", "trio-file": "trio", "anyio-file": "trio"}


async def open_file_api(kind: str, path: str, mode: str) -> Any:
    """An unbuffered file object of one of FILE_APIS (``trio.open_file`` is
    ``trio.wrap_file(open(...))`` on a worker thread)."""
    if kind == "aiofiles":
        import aiofiles  # type: ignore[import-untyped]

        return await aiofiles.open(path, mode, buffering=0)
    if kind == "trio-file":
        import trio

        return await trio.open_file(path, mode, buffering=0)
    if kind == "anyio-file":
        import anyio

        return await anyio.open_file(path, mode, buffering=0)
    raise LookupError(f"unknown file API {kind!r}")


async def close_file_api(handle: Any) -> None:
    aclose = getattr(handle, "aclose", None)  # trio, anyio; aiofiles has close()
    await (aclose() if aclose is not None else handle.close())


class Runner:
    """Holds the open files and the context of one runner for one workload."""

    def __init__(self, runner: str, workload: Workload, files: dict[str, str],
                 lib: AsyncLib = ASYNCIO) -> None:
        self.runner = runner
        self.workload = workload
        self.files = files
        self.lib = lib
        self.fd = -1
        self.wfd = -1
        self.ctx: Any = None
        self._handles: list[Any] = []
        self.payload = b"\xa5" * workload.size if workload.op == "write" else b""
        self.buffers: dict[int, Any] = {}  # read_into: one reused buffer per worker

    # Set-up happens inside the running loop (contexts bind to it).
    async def open(self, concurrency: int) -> None:
        self.fd = os.open(self.files["data"],
                          os.O_RDONLY | (os.O_DIRECT if self.workload.direct else 0))
        self.wfd = os.open(self.files["write"], os.O_RDWR)
        kind = self.runner
        if kind.startswith("caio:"):
            cls = caio_context_class(kind.split(":", 1)[1], self.lib.name)
            self.ctx = cls()
        elif kind in FILE_APIS:
            if self.workload.op not in ("read", "write"):
                raise LookupError(f"{kind} has no fsync/fdatasync")
            mode, path = ("rb", self.files["data"]) if self.workload.op == "read" else \
                ("r+b", self.files["write"])
            for _ in range(concurrency):
                # One handle per worker: a file object has one position, so concurrent
                # seek+read on a shared handle would race.
                self._handles.append(await open_file_api(kind, path, mode))
        elif kind in ("executor", "floor"):
            pass
        else:
            raise LookupError(f"unknown runner {kind!r}")

    async def start(self, concurrency: int) -> OffsetSource:
        """Open and validate; returns the offsets to run with. ``close`` in any case."""
        await self.open(concurrency)
        await self.validate()
        path = workload_file(self.workload, self.files)
        return OffsetSource(self.workload, os.path.getsize(path))

    async def close(self) -> None:
        for handle in self._handles:
            await close_file_api(handle)
        self._handles.clear()
        if self.ctx is not None:
            await close_context(self.ctx)
            self.ctx = None
        for fd in (self.fd, self.wfd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.wfd = -1

    def buffer(self, worker: int) -> Any:
        """The worker's reused read_into buffer (aligned for O_DIRECT)."""
        if worker not in self.buffers:
            size = self.workload.size
            if self.workload.direct:
                from harness import aligned_buffer_factory

                factory = aligned_buffer_factory()
                if factory is None:
                    raise LookupError("caio.aligned_buffer is missing")
                self.buffers[worker] = factory(size)
            else:
                self.buffers[worker] = bytearray(size)
        return self.buffers[worker]

    def make_op(self, worker: int) -> OpFunc:
        w = self.workload
        kind = self.runner
        size, fd, wfd, payload = w.size, self.fd, self.wfd, self.payload
        if kind.startswith("caio:"):
            ctx = self.ctx
            if w.op == "read":
                return lambda off: ctx.read(size, fd, off)
            if w.op == "read_into":
                # The adapters have no read_into: the raw Operation through the adapter's
                # own submit(), the path its read() takes.
                into = self.buffer(worker)
                read_into = ctx.OPERATION_CLASS.read_into
                submit_op = ctx.submit
                return lambda off: submit_op(read_into(into, fd, off))
            if w.op == "write":
                return lambda off: ctx.write(payload, wfd, off)
            if w.op == "fsync":
                return lambda off: ctx.fsync(wfd)
            return lambda off: ctx.fdsync(wfd)
        if kind == "executor":
            submit = thread_submitter(self.lib)
            if w.op == "read":
                return lambda off: submit(os.pread, fd, size, off)
            if w.op == "read_into":
                into = self.buffer(worker)
                return lambda off: submit(os.preadv, fd, [into], off)
            if w.op == "write":
                return lambda off: submit(os.pwrite, wfd, payload, off)
            if w.op == "fsync":
                return lambda off: submit(os.fsync, wfd)
            return lambda off: submit(os.fdatasync, wfd)
        if kind in FILE_APIS:
            handle = self._handles[worker]
            if w.op == "read":
                async def file_read(off: int) -> bytes:
                    await handle.seek(off)
                    return await handle.read(size)
                return file_read

            async def file_write(off: int) -> int:
                await handle.seek(off)
                return await handle.write(payload)
            return file_write
        if kind == "floor":
            if self.lib.name == "trio":
                import trio

                checkpoint = trio.lowlevel.checkpoint
                return lambda off: checkpoint()
            loop = asyncio.get_running_loop()

            def floor(off: int) -> asyncio.Future[Any]:
                fut = loop.create_future()
                loop.call_soon(fut.set_result, None)
                return fut
            return floor
        raise LookupError(kind)

    async def validate(self) -> None:
        """One operation, checked against os.pread, so a broken runner fails loudly."""
        w = self.workload
        op = self.make_op(0)
        if self.runner == "floor":
            await op(0)
            return
        if w.op == "read":
            off = 3 * w.size if 4 * w.size <= os.fstat(self.fd).st_size else 0
            data = await op(off)
            expected = os.pread(self.fd, w.size, off)
            if bytes(data) != expected:
                raise AssertionError(f"{self.runner}: read returned wrong data "
                                     f"({len(data)} bytes, expected {len(expected)})")
        elif w.op == "read_into":
            off = 3 * w.size if 4 * w.size <= os.fstat(self.fd).st_size else 0
            count = await op(off)
            plain = os.open(self.files["data"], os.O_RDONLY)  # (O_DIRECT: no unaligned pread)
            try:
                expected = os.pread(plain, w.size, off)
            finally:
                os.close(plain)
            if count != w.size or bytes(self.buffers[0]) != expected:
                raise AssertionError(f"{self.runner}: read_into returned {count!r} or "
                                     "left wrong data in the buffer")
        elif w.op == "write":
            result = await op(0)
            if result is not None and result != w.size:
                raise AssertionError(f"{self.runner}: write returned {result!r}")
        else:
            await op(0)


class OffsetSource:
    """Offsets for a workload: pre-generated random ones, or a shared sequential cursor."""

    def __init__(self, workload: Workload, file_size: int, seed: int = 7) -> None:
        self.size = max(workload.size, 1)
        self.slots = max(file_size // self.size, 1)
        self.pattern = workload.pattern
        rnd = random.Random(seed)
        self.table = [rnd.randrange(self.slots) * self.size for _ in range(1 << 16)]
        self.mask = (1 << 16) - 1
        self.i = 0

    def next(self) -> int:
        i = self.i
        self.i = i + 1
        if self.pattern == "random":
            return self.table[i & self.mask]
        if self.pattern == "seq":
            return (i % self.slots) * self.size
        return 0


T = TypeVar("T")


class Ticker:
    """A task that sleeps ``tick`` seconds in a loop while a body runs (``around``),
    keeping the longest gap between two wake-ups: how long the loop was kept busy.

    ``max_gap_cpu`` is the CPU time the loop thread itself used during that longest gap,
    and ``max_cpu_gap`` the most it used during any one gap: work done on the loop thread
    (what a backend can fix), as opposed to a gap where the thread was runnable but had
    no CPU (a busy machine), which only the wall-clock gap shows."""

    def __init__(self, tick: float, lib: AsyncLib = ASYNCIO) -> None:
        self.tick = tick
        self.lib = lib
        self.reset()
        self._running = True

    def reset(self) -> None:
        self.max_gap = 0.0
        self.max_gap_cpu = 0.0
        self.max_cpu_gap = 0.0
        self.ticks = 0

    async def _run(self) -> None:
        perf = time.perf_counter
        thread_cpu = time.thread_time
        sleep = self.lib.sleep
        last, last_cpu = perf(), thread_cpu()
        while self._running:
            await sleep(self.tick)
            now, cpu = perf(), thread_cpu()
            gap, gap_cpu = now - last, cpu - last_cpu
            if gap > self.max_gap:
                self.max_gap, self.max_gap_cpu = gap, gap_cpu
            self.max_cpu_gap = max(self.max_cpu_gap, gap_cpu)
            self.ticks += 1
            last, last_cpu = now, cpu

    async def around(self, body: Callable[[], Awaitable[T]]) -> T:
        """``await body()`` with the ticker running; the ticker ends after the sleep it
        is in when the body is done (that gap counts)."""
        out: list[T] = []

        async def main() -> None:
            try:
                out.append(await body())
            finally:
                self._running = False

        await self.lib.run_all([self._run, main])
        return out[0]


async def run_timed(runner: Runner, concurrency: int, seconds: float,
                    offsets: OffsetSource, tick: float = 0.001) -> dict[str, Any]:
    """Run ``concurrency`` workers for ``seconds``; latency of every operation recorded.

    A ticker task (``sleep(tick)`` in a loop) runs alongside and reports the longest gap
    between its wake-ups: an operation that completes without ever suspending keeps the
    loop to itself, which shows up here. ``workers_active`` counts the workers that
    completed at least one operation (a worker that never suspends starves the others).
    """
    lib = runner.lib
    latencies: list[float] = []
    record = latencies.append
    perf = time.perf_counter
    nxt = offsets.next
    ops = [runner.make_op(i) for i in range(concurrency)]
    per_worker: list[int] = []
    deadline = 0.0

    async def worker(op: OpFunc) -> None:
        n = 0
        t0 = perf()
        while t0 < deadline:
            await op(nxt())
            t1 = perf()
            record(t1 - t0)
            t0 = t1
            n += 1
        per_worker.append(n)

    async def measured() -> tuple[float, float]:
        nonlocal deadline
        await lib.sleep(0)  # let the ticker take its first timestamp
        window = Stopwatch()
        deadline = window.start + seconds
        await lib.run_all([partial(worker, op) for op in ops])
        return window.read()

    ticker = Ticker(tick, lib)
    # Summarised once the ticker has stopped: sorting 100k latencies takes ~10 ms, which
    # the ticker would count as the participant's stall.
    result = summarize(latencies, *await ticker.around(measured))
    result["max_stall_ms"] = ticker.max_gap * 1e3
    result["workers_active"] = sum(1 for n in per_worker if n)
    return result


async def run_count(runner: Runner, concurrency: int, total_ops: int,
                    offsets: OffsetSource) -> None:
    """Run exactly ``total_ops`` operations with ``concurrency`` workers (pytest-benchmark)."""
    remaining = total_ops
    nxt = offsets.next

    async def worker(op: OpFunc) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await op(nxt())

    await runner.lib.run_all([partial(worker, runner.make_op(i)) for i in range(concurrency)])


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def summarize(latencies: list[float], elapsed: float, cpu: float) -> dict[str, Any]:
    n = len(latencies)
    lat = sorted(latencies)
    return {
        "ops": n,
        "elapsed_s": elapsed,
        "ops_per_s": n / elapsed if elapsed > 0 else 0.0,
        "p50_us": percentile(lat, 0.50) * 1e6,
        "p99_us": percentile(lat, 0.99) * 1e6,
        "cpu_s": cpu,
        "cpu_us_per_op": cpu_us_per_op(cpu, n),
    }




# ------------------------------------------------------------------- big read


async def big_read(runner_kind: str, path: str, size: int, tick: float = 0.001,
                   lib: AsyncLib = ASYNCIO) -> dict[str, Any]:
    """One ``size``-byte read while a ticker task measures the longest loop stall.

    The stall counted is the read's: from the call until the result is in hand. The
    result is kept until the ticker has stopped, and freeing it is timed on its own
    (``free_ms``, ``free_cpu_ms``): dropping a 256 MiB object returns 65536 pages to the
    OS on whichever thread drops it, which is the caller's stall, not the read's."""
    fd = os.open(path, os.O_RDONLY)
    ctx = None
    handle = None
    try:
        read: Callable[[], Awaitable[Any]]
        if runner_kind.startswith("caio:"):
            ctx = caio_context_class(runner_kind.split(":", 1)[1], lib.name)()

            def read() -> Awaitable[Any]:
                return ctx.read(size, fd, 0)
        elif runner_kind == "executor":
            submit = thread_submitter(lib)

            def read() -> Awaitable[Any]:
                return submit(os.pread, fd, size, 0)
        elif runner_kind in FILE_APIS:
            handle = await open_file_api(runner_kind, path, "rb")

            def read() -> Awaitable[Any]:
                return handle.read(size)
        else:
            raise LookupError(f"runner {runner_kind!r} has no big-read variant")

        ticker = Ticker(tick, lib)
        kept: list[Any] = []

        async def measured() -> dict[str, Any]:
            # Baseline: how long does a tick take on an idle loop?
            await lib.sleep(0.05)
            idle_gap = ticker.max_gap
            ticker.reset()

            rss_before = current_rss_mib()
            peak_before = peak_rss_mib()
            window = Stopwatch()
            kept.append(await read())
            elapsed, cpu = window.read()
            return {"elapsed_s": elapsed, "cpu_s": cpu, "idle_tick_ms": idle_gap * 1e3,
                    "rss_before_mib": rss_before, "peak_before_mib": peak_before}

        result = await ticker.around(measured)
        if len(kept[0]) != size:
            raise AssertionError(f"big read returned fewer bytes than {size}")
        peak_after = peak_rss_mib()
        wall, cpu = time.perf_counter(), time.thread_time()
        kept.clear()
        free_wall, free_cpu = time.perf_counter() - wall, time.thread_time() - cpu
        result.update({
            "max_stall_ms": ticker.max_gap * 1e3,
            "stall_cpu_ms": ticker.max_gap_cpu * 1e3,
            "max_loop_cpu_ms": ticker.max_cpu_gap * 1e3,
            "ticks": ticker.ticks,
            "peak_rss_mib": peak_after,
            "peak_delta_mib": peak_after - min(result.pop("peak_before_mib"),
                                               result["rss_before_mib"]),
            "read_mib": size / MiB,
            "free_ms": free_wall * 1e3,
            "free_cpu_ms": free_cpu * 1e3,
        })
        return result
    finally:
        if handle is not None:
            await close_file_api(handle)
        if ctx is not None:
            await close_context(ctx)
        os.close(fd)
