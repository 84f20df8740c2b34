"""The interpreter exits cleanly with operations still in flight or undelivered: no crash,
no hang, no callback run during teardown."""

import textwrap

import pytest
from conftest import NATIVE_BACKENDS, run_python

SCRIPT = textwrap.dedent(
    """
    import importlib, os, sys, threading
    mod = importlib.import_module({module!r})
    r, w = os.pipe()
    path = {path!r}
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"x" * 65536, 0)
    ctx = getattr(mod, {context_type!r})()
    calls = []
    ops = [mod.Operation.read(4096, fd, i * 4096) for i in range(16)]
    ops.append(mod.Operation.write(b"y" * 1024, fd, 0))
    if {pipe_read!r}:
        # never satisfied: still in flight at exit
        ops.append(mod.Operation.read(16, r, 2**64 - 1))
    for op in ops:
        op.set_callback(calls.append)
    ctx.submit(*ops)
    if hasattr(ctx, "flush"):
        ctx.flush()
    # leave without draining: completions pending, maybe a request still in flight
    print("exiting", flush=True)
    """
)


@pytest.mark.parametrize("native", NATIVE_BACKENDS)
def test_exit_with_operations_in_flight(native, workdir):
    module = native.module.__name__
    code = SCRIPT.format(
        module=module,
        path=str(workdir / "f"),
        context_type="EventfdContext" if native.eventfd else "Context",
        pipe_read=module == "caio.linux_uring",
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "exiting" in proc.stdout
    assert "Fatal" not in proc.stderr and "panicked" not in proc.stderr, proc.stderr
