"""Bad arguments raise the exception types caio raises (TypeError for wrong argument types,
ValueError for non-bytes payloads, OverflowError for out-of-range numbers, and since caio
0.12.10 a clear error for huge sizes), never crash, never leak."""

import gc
import json
import os
import sys

import pytest
from conftest import (
    BACKEND_MODULES,
    NATIVE_MODULES,
    Tracker,
    module_by_short_name,
    needs_python_aio,
    needs_thread_aio,
    run_python,
)


@pytest.fixture(params=BACKEND_MODULES)
def module(request):
    return request.param


@pytest.fixture(params=NATIVE_MODULES or [pytest.param(None, marks=pytest.mark.skip(
    reason="no native backend available"))])
def native_module(request):
    return request.param


def bad_constructor_calls(Operation, fd):
    """(description, thunk) pairs that must raise TypeError: str/float where ints belong."""
    return [
        ("read nbytes str", lambda: Operation.read("1", fd, 0)),
        ("read fd str", lambda: Operation.read(1, "fd", 0)),
        ("read offset str", lambda: Operation.read(1, fd, "0")),
        ("read nbytes float", lambda: Operation.read(1.5, fd, 0)),
        ("read offset float", lambda: Operation.read(1, fd, 0.0)),
        ("write fd str", lambda: Operation.write(b"x", "fd", 0)),
        ("write offset str", lambda: Operation.write(b"x", fd, "0")),
        ("write fd float", lambda: Operation.write(b"x", 1.0, 0)),
        ("fsync fd str", lambda: Operation.fsync("fd")),
        ("fsync fd float", lambda: Operation.fsync(1.0)),
        ("fdsync fd str", lambda: Operation.fdsync("fd")),
        ("fdsync fd float", lambda: Operation.fdsync(2.5)),
    ]


def test_str_and_float_arguments_raise_type_error(module, files):
    fd = files.open()
    for description, thunk in bad_constructor_calls(module.Operation, fd):
        with pytest.raises(TypeError):
            thunk()
            pytest.fail(description)


def test_context_rejects_str_arguments(module):
    with pytest.raises(TypeError):
        module.Context("8")
    with pytest.raises(TypeError):
        module.Context(max_requests="8")


def test_context_rejects_float_arguments(native_module):
    with pytest.raises(TypeError):
        native_module.Context(8.0)


@pytest.mark.parametrize(
    "make_payload",
    [
        pytest.param(lambda: "payload", id="str"),
        pytest.param(lambda: [1, 2, 3], id="list"),
    ],
)
def test_write_payload_must_be_bytes_like(module, files, make_payload):
    # Any contiguous buffer is accepted (tests/test_buffer_writes.py); these are not.
    fd = files.open()
    payload = make_payload()
    before = sys.getrefcount(payload)
    for _ in range(10):
        with pytest.raises(ValueError):
            module.Operation.write(payload, fd, 0)
    assert sys.getrefcount(payload) == before


def test_write_payload_bytes_subclass_is_accepted(module, files):
    class Sub(bytes):
        pass

    fd = files.open()
    op = module.Operation.write(Sub(b"abc"), fd, 0)
    assert op.nbytes == 3


def test_none_payload_rejected(module, files):
    fd = files.open()
    with pytest.raises((ValueError, TypeError)):
        module.Operation.write(None, fd, 0)


HUGE_NBYTES_PROBE = r"""
import json, sys, importlib
module = importlib.import_module(sys.argv[1])
out = {}
for name, nbytes in (("2**62", 2**62), ("maxsize+1", sys.maxsize + 1), ("2**64-1", 2**64 - 1)):
    try:
        op = module.Operation.read(nbytes, 0, 0)
    except BaseException as e:
        out[name] = type(e).__name__
    else:
        out[name] = "no error: nbytes=%r" % (op.nbytes,)
print(json.dumps(out))
"""


def test_huge_nbytes_never_crashes(native_module):
    # in a subprocess: an allocation abort must fail this test, not kill the suite
    proc = run_python(
        HUGE_NBYTES_PROBE.replace("sys.argv[1]", repr(native_module.__name__)), timeout=60
    )
    assert proc.returncode == 0, f"crashed (rc={proc.returncode}): {proc.stderr[-2000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, outcome in result.items():
        assert outcome in ("MemoryError", "OverflowError"), (name, outcome)


BAD_OFFSETS = [-2, -(2**40), 2**63, 2**64 - 2]


@pytest.mark.parametrize("offset", BAD_OFFSETS, ids=["-2", "-2**40", "2**63", "2**64-2"])
@pytest.mark.parametrize("kind", ["read", "write"])
def test_bad_offset_raises_clear_exception(backend, files, offset, kind):
    """Negative or out-of-range offsets fail with an exception either when the op is built,
    when it is submitted (linux_aio checks eagerly), or when its value is fetched."""
    fd = files.open(b"0123456789")
    try:
        if kind == "read":
            op = backend.read(4, fd, offset)
        else:
            op = backend.write(b"data", fd, offset)
    except (OverflowError, ValueError):
        return
    ctx = backend.Context()
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    try:
        submitted = ctx.submit(op)
    except (ValueError, OverflowError, OSError):
        assert backend.short == "linux_aio", "only linux_aio validates at submit"
        return
    assert submitted == 1
    backend.wait_done(ctx, tracker)
    with pytest.raises((OSError, SystemError, OverflowError)):
        op.get_value()
    assert os.pread(fd, 100, 0) == b"0123456789"


@needs_thread_aio
@pytest.mark.parametrize("offset", [2**63, 2**64, 2**100, -(2**63) - 1])
def test_thread_aio_offset_out_of_int64_range(offset, files):
    thread_aio = module_by_short_name("thread_aio")
    fd = files.open()
    with pytest.raises(OverflowError):
        thread_aio.Operation.read(1, fd, offset)
    with pytest.raises(OverflowError):
        thread_aio.Operation.write(b"x", fd, offset)


@needs_thread_aio
@pytest.mark.parametrize("kwargs", [
    {"max_requests": 65535}, {"max_requests": -1}, {"pool_size": 200}, {"pool_size": 129},
])
def test_thread_aio_context_limits(kwargs):
    thread_aio = module_by_short_name("thread_aio")
    with pytest.raises(ValueError):
        thread_aio.Context(**kwargs)


@needs_python_aio
@pytest.mark.parametrize("kwargs", [
    {"pool_size": 200}, {"pool_size": 128}, {"pool_size": 0}, {"max_requests": 0},
    {"max_requests": -5},
])
def test_python_aio_context_limits(kwargs):
    python_aio = module_by_short_name("python_aio")
    with pytest.raises(ValueError):
        python_aio.Context(**kwargs)


def test_submit_wrong_type_claims_nothing(backend, files):
    fd = files.open()
    ctx = backend.Context()
    good = backend.write(b"good", fd, 0)
    expected = TypeError if backend.native else ValueError
    for bad_args in ((good, object()), ("x", good), (good, good, 1), (None,)):
        with pytest.raises(expected):
            ctx.submit(*bad_args)
    # nothing was claimed or dispatched by the failed calls
    if backend.pumped:
        assert backend.pump(ctx, min_requests=0, timeout=0) == 0
    assert good.get_value() in (0, 4)  # never submitted (linux_aio reports len(payload))
    assert backend.run(ctx, good) == [4]
    assert os.pread(fd, 10, 0) == b"good"


def test_submit_foreign_backend_operation(backend, files):
    """An Operation of another backend is a wrong type, too."""
    others = [m for m in BACKEND_MODULES if m.values[0] is not backend.module]
    if not others:
        pytest.skip("only one backend available")
    fd = files.open()
    ctx = backend.Context()
    expected = TypeError if backend.native else ValueError
    for param in others:
        foreign = param.values[0].Operation.write(b"x", fd, 0)
        with pytest.raises(expected):
            ctx.submit(foreign)
        # it is still unclaimed in its own backend
        own_ctx = param.values[0].Context()
        assert own_ctx.submit(foreign) == 1
        if hasattr(own_ctx, "close"):
            own_ctx.close()
        else:  # pumped native backends: drain it
            if hasattr(own_ctx, "flush"):
                own_ctx.flush()
            own_ctx.process_events(min_requests=1, timeout=1)


def count_gc_growth(thunk, rounds=500):
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(rounds):
        try:
            thunk()
        except (TypeError, ValueError, OverflowError, MemoryError):
            pass
        else:
            raise AssertionError("the call did not fail")
    gc.collect()
    return len(gc.get_objects()) - before


def test_failed_constructions_do_not_leak(module, files):
    fd = files.open()
    Operation = module.Operation
    cases = [(d, t) for d, t in bad_constructor_calls(Operation, fd)]
    cases.append(("write str payload", lambda: Operation.write("x", fd, 0)))
    cases.append(("write list payload", lambda: Operation.write([1], fd, 0)))
    for description, thunk in cases:
        growth = count_gc_growth(thunk)
        assert growth < 100, f"{description}: {growth} objects leaked over 500 failures"


def test_failed_context_constructions_do_not_leak(module):
    growth = count_gc_growth(lambda: module.Context(max_requests="x"))
    assert growth < 100
    growth = count_gc_growth(lambda: module.Context(pool_size=200))
    assert growth < 100
