"""Shared fixtures and helpers for the caio test suite.

Backends are discovered from ``caio.variants`` / ``caio.variants_asyncio``, so a backend that
becomes importable (linux_uring, linux_aio) is covered without touching the tests.

Files live on a real on-disk filesystem (never tmpfs): by default in a fresh directory under
``<repo>/.pytest-tmp``; the environment variable ``CAIO_TEST_DIR`` overrides the base directory.

``CAIO_TEST_LOOP=uvloop`` runs every asyncio test on uvloop: the ``loop_factory`` fixture, the
tests' own ``asyncio.run`` / ``asyncio.new_event_loop`` (through the event loop policy) and the
interpreters the tests spawn (through ``tests/loop_site/sitecustomize.py`` on ``PYTHONPATH``).
"""

import asyncio
import faulthandler
import gc
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import caio

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEST_BASE = REPO_ROOT / ".pytest-tmp"

LOOP_SITE = REPO_ROOT / "tests" / "loop_site"

# Per-test hang guard: a hung test kills the run with tracebacks instead of stalling CI.
HANG_GUARD_SECONDS = 120

# Exceptions an adapter may raise for an I/O on a closed file descriptor (the backends' adapters differ).
BAD_FD_ERRORS = (SystemError, OSError, AssertionError, ValueError)

SELECTORS = {
    "caio.linux_uring": "uring",
    "caio.linux_aio": "linux",
    "caio.thread_aio": "thread",
    "caio.python_aio": "python",
}


def _load_loop_site():
    spec = importlib.util.spec_from_file_location("caio_test_loop", LOOP_SITE / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


test_loop = _load_loop_site()
# The event loop this run tests on (CAIO_TEST_LOOP): "asyncio" (the default) or "uvloop".
TEST_LOOP = test_loop.selected()
# The loops tests parametrised by loop run on. Under uvloop only uvloop: there the "asyncio"
# case would create a uvloop loop again (the policy), or, forced to the default loop, repeat
# what the default run covers.
LOOPS = ["uvloop"] if TEST_LOOP == "uvloop" else ["asyncio", "uvloop"]


def pytest_configure(config):
    if TEST_LOOP not in test_loop.LOOPS:
        raise pytest.UsageError(
            f"CAIO_TEST_LOOP={TEST_LOOP!r}: expected one of {', '.join(test_loop.LOOPS)}")
    if TEST_LOOP == "uvloop":
        if importlib.util.find_spec("uvloop") is None:
            # never fall back silently: a green run would claim coverage it does not have
            raise pytest.UsageError("CAIO_TEST_LOOP=uvloop, but uvloop is not installed")
        # the interpreters the tests spawn inherit the environment
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(LOOP_SITE)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        test_loop.install()


def pytest_report_header(config):
    return f"caio test loop (CAIO_TEST_LOOP): {TEST_LOOP}"


def short_name(module) -> str:
    """``caio.thread_aio_asyncio`` -> ``thread_aio``."""
    name = module.__name__.rsplit(".", 1)[-1]
    name = name.removesuffix("_asyncio")
    return name


def variant_names():
    return [short_name(m) for m in caio.variants]


def has_variant(name: str) -> bool:
    return name in variant_names()


def module_by_short_name(name: str):
    for m in caio.variants:
        if short_name(m) == name:
            return m
    return None


needs_thread_aio = pytest.mark.skipif(
    not has_variant("thread_aio"), reason="caio.thread_aio is not available"
)
needs_python_aio = pytest.mark.skipif(
    not has_variant("python_aio"), reason="caio.python_aio is not available"
)


# --------------------------------------------------------------------------------------------
# hang guard


@pytest.fixture(autouse=True)
def _hang_guard():
    faulthandler.dump_traceback_later(HANG_GUARD_SECONDS, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


# --------------------------------------------------------------------------------------------
# working directory on a real filesystem


def base_test_dir() -> Path:
    env = os.environ.get("CAIO_TEST_DIR")
    return Path(env) if env else DEFAULT_TEST_BASE


@pytest.fixture
def workdir():
    # The base folder stays (it is git-ignored): removing it when empty raced with a
    # second test run creating its own folder in it.
    base = base_test_dir()
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="caio-", dir=str(base)))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class FileFactory:
    """Creates files in the work directory and closes their descriptors at teardown."""

    def __init__(self, root: Path):
        self.root = root
        self.fds = []
        self.counter = 0

    def path(self, name=None) -> Path:
        self.counter += 1
        return self.root / (name or f"file-{self.counter}.bin")

    def open(self, data: bytes = b"", name=None, flags=os.O_RDWR):
        path = self.path(name)
        fd = os.open(str(path), os.O_CREAT | os.O_TRUNC | flags, 0o644)
        self.fds.append(fd)
        if data:
            assert os.pwrite(fd, data, 0) == len(data)
        return fd

    def close_all(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


@pytest.fixture
def files(workdir):
    factory = FileFactory(workdir)
    try:
        yield factory
    finally:
        factory.close_all()


def filesystem_type(path) -> str:
    """The filesystem type of the mount holding ``path`` (from /proc/self/mountinfo)."""
    real = os.path.realpath(str(path))
    best, best_type = "", None
    with open("/proc/self/mountinfo") as fp:
        for line in fp:
            left, _, right = line.partition(" - ")
            fields = left.split()
            mount_point = fields[4].replace("\\040", " ")
            fstype = right.split()[0]
            inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, best_type = mount_point, fstype
    if best_type is None:
        raise RuntimeError(f"no mount found for {real}")
    return best_type


# --------------------------------------------------------------------------------------------
# raw backends


class Backend:
    """One raw backend (and delivery mode) with a generic way to drive operations."""

    def __init__(self, module, eventfd=False):
        self.module = module
        self.eventfd = eventfd
        self.name = short_name(module) + ("-eventfd" if eventfd else "")
        self.short = short_name(module)
        self.Operation = module.Operation
        self.native = self.short != "python_aio"

    def __repr__(self):
        return f"<Backend {self.name}>"

    def Context(self, *args, **kwargs):
        if self.eventfd:
            return self.module.EventfdContext(*args, **kwargs)
        return self.module.Context(*args, **kwargs)

    @property
    def pumped(self) -> bool:
        """True when completions are delivered only by process_events() on our thread."""
        return self.short in ("linux_uring", "linux_aio") or self.eventfd

    @property
    def in_flight_until_pumped(self) -> bool:
        return self.pumped

    def read(self, nbytes, fd, offset=0):
        return self.Operation.read(nbytes, fd, offset)

    def write(self, payload, fd, offset=0):
        return self.Operation.write(payload, fd, offset)

    def pump(self, ctx, timeout=1, max_requests=512, min_requests=1):
        """One flush (uring) plus one blocking process_events(); returns its count."""
        if hasattr(ctx, "flush"):
            ctx.flush()
        return ctx.process_events(
            max_requests=max_requests, min_requests=min_requests, timeout=timeout
        )

    def wait_done(self, ctx, tracker, timeout=10.0):
        """Wait until every op tracked by ``tracker`` reported its completion."""
        deadline = time.monotonic() + timeout
        if not self.pumped:
            assert tracker.event.wait(timeout), f"{self.name}: completions did not arrive"
            return
        if hasattr(ctx, "flush"):
            # flush() may deliver everything inline; a blocking wait after it would then
            # sit out its whole timeout
            ctx.flush()
        while not tracker.event.is_set():
            assert time.monotonic() < deadline, f"{self.name}: completions did not arrive"
            ctx.process_events(min_requests=1, timeout=1)

    def run(self, ctx, *ops, timeout=10.0):
        """Submit ``ops`` (all must be accepted), wait for all callbacks, return their args."""
        tracker = Tracker(len(ops))
        for i, op in enumerate(ops):
            op.set_callback(tracker.callback(i))
        assert ctx.submit(*ops) == len(ops)
        self.wait_done(ctx, tracker, timeout)
        return tracker.ordered()

    def settle(self, ctx):
        """Make sure the engine dropped every reference it held (joins workers)."""
        if self.short in ("thread_aio", "python_aio"):
            ctx.close()
        if self.short == "python_aio":
            # ThreadPool.close() does not join; join so that no worker still holds an op
            ctx.pool.join()


class CallbackBlocker:
    """Parks the only worker of a pool_size=1 thread_aio ``Context`` inside a callback, so that
    ops submitted meanwhile stay queued (in flight) until the ``with`` block ends."""

    def __init__(self, ctx, operation_type, fd, timeout=10.0):
        self.started = threading.Event()
        self.release = threading.Event()
        self.op = operation_type.fsync(fd)
        self.op.set_callback(self._callback)
        assert ctx.submit(self.op) == 1
        assert self.started.wait(timeout), "blocker callback did not start"

    def _callback(self, result):
        self.started.set()
        self.release.wait(60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release.set()


class Calls:
    """A callback recording each argument and the calling thread.

    It references neither the op nor the Context, so it never keeps them alive.
    """

    def __init__(self):
        self.results = []
        self.threads = []

    def __call__(self, result):
        self.results.append(result)
        self.threads.append(threading.get_ident())


class Tracker:
    """Thread-safe collector of callback invocations."""

    def __init__(self, expected):
        self.expected = expected
        self.lock = threading.Condition()
        self.calls = []  # (index, result, thread ident)
        self.event = threading.Event()
        if expected == 0:
            self.event.set()

    def callback(self, index):
        def cb(result):
            with self.lock:
                self.calls.append((index, result, threading.get_ident()))
                if len(self.calls) >= self.expected:
                    self.event.set()
                self.lock.notify_all()

        return cb

    def ordered(self):
        with self.lock:
            by_index = {}
            for index, result, _ in self.calls:
                by_index.setdefault(index, []).append(result)
        return [by_index[i][0] if len(by_index.get(i, ())) == 1 else by_index.get(i)
                for i in range(self.expected)]

    def wait_count(self, n, timeout=10.0) -> bool:
        """Block until at least ``n`` callbacks ran (False on timeout)."""
        with self.lock:
            return self.lock.wait_for(lambda: len(self.calls) >= n, timeout)

    def count(self, index=None):
        with self.lock:
            if index is None:
                return len(self.calls)
            return sum(1 for i, _, _ in self.calls if i == index)


def raw_backend_params():
    params = []
    for module in caio.variants:
        params.append(pytest.param(Backend(module), id=short_name(module)))
        if short_name(module) == "thread_aio":
            params.append(pytest.param(Backend(module, eventfd=True), id="thread_aio-eventfd"))
    return params


RAW_BACKENDS = raw_backend_params()
NATIVE_BACKENDS = [p for p in RAW_BACKENDS if p.values[0].native]
BACKEND_MODULES = [pytest.param(m, id=short_name(m)) for m in caio.variants]
NATIVE_MODULES = [p for p in BACKEND_MODULES if short_name(p.values[0]) != "python_aio"]


@pytest.fixture(params=RAW_BACKENDS)
def backend(request) -> Backend:
    return request.param


@pytest.fixture(params=NATIVE_BACKENDS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no native backend available"))])
def native_backend(request) -> Backend:
    return request.param


def pump_until(ctx, predicate, timeout=10.0):
    """Deliver completions on this thread until ``predicate()`` holds (hang-guarded); a
    Context that stages requests (io_uring) is flushed first."""
    deadline = time.monotonic() + timeout
    if hasattr(ctx, "flush"):
        ctx.flush()
    while not predicate():
        assert time.monotonic() < deadline, "completions did not arrive"
        ctx.process_events(min_requests=1, timeout=1)


def run_ops(ctx, *ops):
    """Submit ``ops`` to a pumped Context (all accepted), deliver them; returns each op's list
    of callback arguments, after checking that nothing is delivered twice."""
    calls = [Calls() for _ in ops]
    for op, cb in zip(ops, calls):
        op.set_callback(cb)
    assert ctx.submit(*ops) == len(ops)
    pump_until(ctx, lambda: all(cb.results for cb in calls))
    assert ctx.process_events() == 0
    return [cb.results for cb in calls]


# --------------------------------------------------------------------------------------------
# asyncio adapters and event loops


ADAPTERS = [pytest.param(m, id=short_name(m)) for m in caio.variants_asyncio]


@pytest.fixture(params=ADAPTERS)
def adapter(request):
    """An asyncio adapter module (exports AsyncioContext)."""
    return request.param


@pytest.fixture
def AsyncioContext(adapter):
    return adapter.AsyncioContext


@pytest.fixture(params=LOOPS)
def loop_factory(request):
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


class LoopRunner:
    """Runs a coroutine function on a fresh loop with a recording exception handler.

    The handler must never be called: any call (InvalidStateError from a late completion,
    "exception was never retrieved", ...) fails the test at the end of ``run``.
    """

    def __init__(self, factory):
        self.factory = factory
        self.handler_calls = []

    def _handler(self, loop, context):
        self.handler_calls.append(context)

    def run(self, coro_fn, *args, timeout=60.0, check_handler=True):
        loop = self.factory()
        loop.set_exception_handler(self._handler)
        asyncio.set_event_loop(loop)

        async def guarded():
            # hang guard only, not synchronisation
            result = await asyncio.wait_for(coro_fn(*args), timeout)
            # let late thread-safe callbacks run, and surface unretrieved exceptions
            for _ in range(3):
                await asyncio.sleep(0)
            gc.collect()
            await asyncio.sleep(0)
            return result

        try:
            return loop.run_until_complete(guarded())
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                if hasattr(loop, "shutdown_default_executor"):
                    loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
            if check_handler:
                assert self.handler_calls == [], (
                    f"loop exception handler was called: {self.handler_calls!r}"
                )


@pytest.fixture
def loop_runner(loop_factory):
    return LoopRunner(loop_factory)


# --------------------------------------------------------------------------------------------
# misc helpers


def wait_until(predicate, timeout=10.0, message="condition not reached"):
    """Poll ``predicate`` until true; a hang guard for conditions with no event to wait on."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        gc.collect()
        time.sleep(0.001)


def closed_fd() -> int:
    """A descriptor number that is not open (and, being high, will not be reused soon):
    fds are allocated lowest-first, so closing and reusing a low one races with any thread
    that opens a file meanwhile."""
    import fcntl
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd = min(soft, 1 << 16) - 1
    while fd > 2:
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            return fd
        fd -= 1
    raise RuntimeError("no closed descriptor found")


def run_python(code: str, env_updates=None, env_remove=(), timeout=60):
    """Run ``code`` in a fresh interpreter; returns CompletedProcess (text mode)."""
    import subprocess

    env = dict(os.environ)
    for key in env_remove:
        env.pop(key, None)
    if env_updates:
        env.update(env_updates)
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO_ROOT.parent),  # not the repo root: import the installed package
    )
