"""Kernel and process limits degrade instead of breaking (issue 9 item 8).

- A raw native Context that cannot get a resource raises ``OSError`` with the errno and a
  message naming the limit and how to raise it.
- ``caio.AsyncioContext()`` (the auto-selected adapter) falls back to the next backend
  with a ``caio.ResourceLimitWarning`` when a limit stops the preferred one; the backends'
  own adapters and subclasses still raise.

``fs.aio-max-nr`` is machine-wide and shared with every process here: it is exhausted only
inside a subprocess that checks what it must and exits at once (its contexts are freed at
exit). Other limits are per process (``RLIMIT_NOFILE``), or simulated for one subprocess by
a seccomp filter that makes one system call fail with the errno the kernel gives when the
limit is hit (``kernel.io_uring_disabled`` is global: never changed here).
"""

import errno
import json
import platform
import textwrap

import pytest
from conftest import has_variant, run_python

import caio

needs_linux_aio = pytest.mark.skipif(not has_variant("linux_aio"), reason="no caio.linux_aio")
needs_linux_uring = pytest.mark.skipif(not has_variant("linux_uring"),
                                       reason="no caio.linux_uring")

# System call numbers for the seccomp filter (io_uring_setup is 425 on every architecture).
SYSCALLS = {
    "x86_64": {"io_setup": 206, "io_uring_setup": 425},
    "aarch64": {"io_setup": 0, "io_uring_setup": 425},
}.get(platform.machine())

# Child prelude: fail_syscall(name, errno) makes this thread's (and its future threads')
# calls of one system call fail with that errno, from then on.
SECCOMP = r"""
import ctypes, struct

def fail_syscall(nr, err):
    libc = ctypes.CDLL(None, use_errno=True)
    program = [
        (0x20, 0, 0, 0),                  # A = seccomp_data.nr
        (0x15, 0, 1, nr),                 # if A == nr: next, else skip one
        (0x06, 0, 0, 0x00050000 | err),   # return SECCOMP_RET_ERRNO | err
        (0x06, 0, 0, 0x7FFF0000),         # return SECCOMP_RET_ALLOW
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Program(len(program), ctypes.addressof(code))
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")
"""

# Child helpers: try(f) reports what f() raised; adapter(cls) builds one in a loop and
# reports the warnings and the backend it runs on, after a write/read round trip.
PROBE = r"""
import asyncio, json, os, sys, tempfile, warnings
import caio

def attempt(f):
    try:
        f()
    except Exception as exc:
        return {"type": type(exc).__name__, "errno": getattr(exc, "errno", None),
                "message": str(exc), "oserror": isinstance(exc, OSError)}
    return None

def adapter(cls, fd):
    async def main():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ctx = cls()
            except Exception as exc:
                return {"raised": type(exc).__name__, "errno": getattr(exc, "errno", None),
                        "message": str(exc)}
        try:
            assert await ctx.write(b"limits", fd, 0) == 6
            assert await ctx.read(6, fd, 0) == b"limits"
            return {
                "backend": type(ctx.context).__module__,
                "isinstance": isinstance(ctx, caio.AsyncioContext),
                # (not of the preferred backend's adapter, which it is not)
                "preferred": isinstance(ctx, caio.preferred_asyncio.AsyncioContext),
                "warnings": [[w.category.__name__, str(w.message), w.filename]
                             for w in caught],
            }
        finally:
            ctx.close()
    return asyncio.run(main())

def report(**result):
    print(json.dumps(result), flush=True)
    os._exit(0)  # at once: nothing held (contexts, limits) outlives this line
"""


def child(code, env_updates=None):
    proc = run_python(PROBE + SECCOMP + textwrap.dedent(code), env_updates=env_updates)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def aio_max_nr():
    with open("/proc/sys/fs/aio-max-nr") as fp:
        return int(fp.read())


def assert_fell_back(result, backend, limit_text):
    assert result.get("backend") == backend, result
    assert result["isinstance"] and not result["preferred"], result
    limit_warnings = [w for w in result["warnings"] if w[0] == "ResourceLimitWarning"]
    assert len(limit_warnings) == 1, result
    message = limit_warnings[0][1]
    assert f"runs on {backend.rpartition('.')[2]}" in message, message
    assert limit_text in message, message
    assert limit_warnings[0][2] == "<string>", limit_warnings  # points at the caller


# --------------------------------------------------------------------------------------------
# the auto-selected adapter is a class of its own


def test_the_auto_selected_adapter_is_a_subclass_of_the_preferred_one():
    assert issubclass(caio.AsyncioContext, caio.preferred_asyncio.AsyncioContext)
    assert caio.AsyncioContext.MAX_REQUESTS_DEFAULT == 512
    assert issubclass(caio.ResourceLimitWarning, RuntimeWarning)

    class Custom(caio.AsyncioContext):  # custom loops subclass it
        pass

    assert issubclass(Custom, caio.AsyncioContext)


# --------------------------------------------------------------------------------------------
# fs.aio-max-nr (io_setup EAGAIN)


@needs_linux_aio
def test_a_raw_aio_context_beyond_aio_max_nr_raises_os_error_naming_the_limit():
    """More events than fs.aio-max-nr allows: io_setup refuses (EAGAIN) before taking any
    (nothing of the machine-wide limit is used)."""
    with pytest.raises(OSError) as excinfo:
        caio.linux_aio.Context(max_requests=aio_max_nr() + 1)
    assert excinfo.value.errno == errno.EAGAIN
    assert isinstance(excinfo.value, BlockingIOError)
    assert "fs.aio-max-nr" in str(excinfo.value) and "sysctl" in str(excinfo.value)


@needs_linux_aio
def test_the_auto_selected_adapter_falls_back_from_kernel_aio_asking_too_much(files):
    """CAIO_IMPL=linux: an AsyncioContext asking for more events than fs.aio-max-nr allows
    runs on thread_aio, with a warning; linux_aio's own adapter raises."""
    path = files.path()
    result = child(f"""
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)
        n = {aio_max_nr() + 1}

        class Big(caio.AsyncioContext):
            pass

        report(
            auto=adapter(lambda: caio.AsyncioContext(max_requests=n), fd),
            explicit=adapter(lambda: caio.linux_aio_asyncio.AsyncioContext(max_requests=n), fd),
            subclass=adapter(lambda: Big(max_requests=n), fd),
        )
    """, env_updates={"CAIO_IMPL": "linux"})
    next_backend = "caio.thread_aio" if has_variant("thread_aio") else "caio.python_aio"
    assert_fell_back(result["auto"], next_backend, "fs.aio-max-nr")
    for case in ("explicit", "subclass"):
        assert result[case]["raised"] == "BlockingIOError", result
        assert result[case]["errno"] == errno.EAGAIN, result


@needs_linux_aio
def test_an_exhausted_aio_max_nr_degrades(files):
    """The real thing, for a moment: a child takes every event left of fs.aio-max-nr, then
    a raw Context raises OSError(EAGAIN) naming the limit and caio.AsyncioContext() runs on
    the next backend; the child exits at once, which frees them all."""
    path = files.path()
    result = child(f"""
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)
        from caio.linux_aio import Context
        held = []

        def take_all():  # what is left, whatever other processes free meanwhile
            size = 1 << 16
            while size:
                try:
                    held.append(Context(max_requests=size))
                except BlockingIOError:
                    size //= 2

        def auto():
            take_all()
            return caio.AsyncioContext()

        take_all()
        report(raw=attempt(Context), auto=adapter(auto, fd))
    """, env_updates={"CAIO_IMPL": "linux"})
    raw = result["raw"]
    assert raw["oserror"] and raw["errno"] == errno.EAGAIN, raw
    assert "fs.aio-max-nr" in raw["message"] and "/proc/sys/fs/aio-nr" in raw["message"], raw
    next_backend = "caio.thread_aio" if has_variant("thread_aio") else "caio.python_aio"
    assert_fell_back(result["auto"], next_backend, "fs.aio-max-nr")


# --------------------------------------------------------------------------------------------
# RLIMIT_NOFILE (EMFILE)

@pytest.mark.parametrize("backend", ["linux_uring", "linux_aio"])
def test_a_raw_context_out_of_descriptors_raises_os_error_naming_rlimit_nofile(backend):
    if not has_variant(backend):
        pytest.skip(f"no caio.{backend}")
    result = child(f"""
        import resource
        import caio.{backend} as m
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        spare = []
        try:
            while True:
                spare.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        report(raw=attempt(m.Context))
    """)
    raw = result["raw"]
    assert raw["type"] == "OSError" and raw["errno"] == errno.EMFILE, raw
    assert "RLIMIT_NOFILE" in raw["message"], raw


def test_with_no_descriptor_left_nothing_can_serve_and_the_limit_error_is_raised(files):
    """Every backend needs descriptors (an eventfd, a ring, python_aio's pool a pipe): with
    none left the adapter raises the last backend's EMFILE, nothing is half-built."""
    path = files.path()
    result = child(f"""
        import resource
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)

        def exhausted():
            spare = []
            try:
                while True:
                    spare.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                pass
            return caio.AsyncioContext()

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        report(auto=adapter(exhausted, fd))
    """)
    assert result["auto"].get("errno") == errno.EMFILE, result


@needs_linux_uring
@needs_linux_aio
def test_the_fallback_takes_the_first_backend_that_can_serve(files):
    """One descriptor left: io_uring needs two (eventfd and ring), kernel AIO one: the
    adapter runs on linux_aio, the next backend, not further down."""
    path = files.path()
    result = child(f"""
        import resource
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)

        def one_left():
            spare = []
            try:
                while True:
                    spare.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                pass
            os.close(spare.pop())
            return caio.AsyncioContext()

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        report(auto=adapter(one_left, fd))
    """, env_updates={"CAIO_IMPL": "uring"})
    assert_fell_back(result["auto"], "caio.linux_aio", "RLIMIT_NOFILE")


# --------------------------------------------------------------------------------------------
# io_uring refused at run time, memory: simulated with seccomp


def seccomp_child(code, env_updates=None):
    if SYSCALLS is None:
        pytest.skip(f"no system call numbers for {platform.machine()}")
    result = child(code, env_updates=env_updates)
    if result.get("seccomp"):
        pytest.skip(f"cannot install a seccomp filter here: {result['seccomp']}")
    return result


@needs_linux_uring
@pytest.mark.parametrize("err, text", [
    (errno.EPERM, "io_uring_disabled"),
    (errno.ENOMEM, "RLIMIT_MEMLOCK"),
], ids=["disabled", "no-memory"])
def test_io_uring_refused_at_run_time_raises_raw_and_falls_back(files, err, text):
    """io_uring_setup failing with EPERM (kernel.io_uring_disabled, a container's seccomp
    profile) or ENOMEM (locked memory) after import: the raw Context raises OSError naming
    it; caio.AsyncioContext() falls back to linux_aio (or lower); the io_uring adapter and
    a subclass still raise."""
    path = files.path()
    result = seccomp_child(f"""
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fail_syscall({SYSCALLS["io_uring_setup"]}, {err})
        except OSError as exc:
            report(seccomp=str(exc))

        class Custom(caio.AsyncioContext):
            pass

        report(
            raw=attempt(caio.linux_uring.Context),
            auto=adapter(caio.AsyncioContext, fd),
            explicit=adapter(caio.linux_uring_asyncio.AsyncioContext, fd),
            subclass=adapter(Custom, fd),
        )
    """, env_updates={"CAIO_IMPL": "uring"})
    raw = result["raw"]
    assert raw["oserror"] and raw["errno"] == err, raw
    assert text in raw["message"], raw
    next_backend = "caio.linux_aio" if has_variant("linux_aio") else "caio.thread_aio"
    assert_fell_back(result["auto"], next_backend, text)
    for case in ("explicit", "subclass"):
        assert result[case]["errno"] == err, result


@needs_linux_aio
def test_every_limited_backend_is_named_in_the_one_warning(files):
    """io_uring refused and kernel AIO out of memory: one warning names both."""
    path = files.path()
    result = seccomp_child(f"""
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fail_syscall({SYSCALLS["io_setup"]}, {errno.ENOMEM})
            if caio.linux_uring is not None:
                fail_syscall({SYSCALLS["io_uring_setup"]}, {errno.EPERM})
        except OSError as exc:
            report(seccomp=str(exc))
        report(auto=adapter(caio.AsyncioContext, fd))
    """)
    next_backend = "caio.thread_aio" if has_variant("thread_aio") else "caio.python_aio"
    assert_fell_back(result["auto"], next_backend, "linux_aio: [Errno 12] io_setup")
    if has_variant("linux_uring"):
        assert "linux_uring: [Errno 1] io_uring_setup" in result["auto"]["warnings"][0][1]


def test_an_error_that_is_not_a_limit_does_not_fall_back(files):
    """A bad argument is the caller's error, raised as before (here io_setup's EINVAL for
    an impossible number of events)."""
    if not has_variant("linux_aio"):
        pytest.skip("no caio.linux_aio")
    path = files.path()
    result = child(f"""
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)
        report(auto=adapter(lambda: caio.AsyncioContext(max_requests=1 << 30), fd))
    """, env_updates={"CAIO_IMPL": "linux"})
    assert result["auto"].get("errno") == errno.EINVAL, result  # raised, not a fallback
