"""Kernel errors are OSError *and* the type caio raised (issue 9 item 9), and the adapters
refuse negative file offsets before submitting anything (issue 9 item 2, adapter part).

Every backend maps an errno the same way, in one place (``caio.errors``):
- a failed operation (``get_value()``) raises ``caio.OperationError``, an ``OSError`` that is
  also a ``SystemError`` (what caio's native backends raised) and also the ``OSError``
  subclass Python picks for that errno (what caio's python_aio raised, e.g.
  ``IsADirectoryError``);
- a request kernel AIO's ``io_submit`` refuses up front raises ``caio.SubmitError``, an
  ``OSError`` that is also a ``ValueError``.
"""

import errno
import os

import pytest
from conftest import has_variant, module_by_short_name

import caio
from caio import errors


def builtin_class_for(code):
    """The OSError subclass Python itself picks for ``code``."""
    return type(OSError(code, "x"))


def assert_operation_error(exc, code):
    assert isinstance(exc, OSError), repr(exc)
    assert isinstance(exc, SystemError), repr(exc)
    assert isinstance(exc, errors.OperationError), repr(exc)
    assert isinstance(exc, builtin_class_for(code)), repr(exc)
    assert exc.errno == code, repr(exc)
    assert exc.strerror == os.strerror(code), repr(exc)
    assert str(exc) == f"[Errno {code}] {os.strerror(code)}"


def assert_submit_error(exc, code):
    assert isinstance(exc, OSError), repr(exc)
    assert isinstance(exc, ValueError), repr(exc)
    assert isinstance(exc, errors.SubmitError), repr(exc)
    assert exc.errno == code, repr(exc)
    assert exc.strerror, repr(exc)
    # caio's message text is kept (users match on the errno name in it)
    assert f"[{errno.errorcode[code]}]" in str(exc), str(exc)


def write_only_fd(files):
    return files.open(flags=os.O_WRONLY)


# --------------------------------------------------------------------------------------------
# the classes


def test_classes_are_exported_and_combine_both_types():
    assert caio.OperationError is errors.OperationError
    assert caio.SubmitError is errors.SubmitError
    assert "OperationError" in caio.__all__ and "SubmitError" in caio.__all__
    assert issubclass(errors.OperationError, OSError)
    assert issubclass(errors.OperationError, SystemError)
    assert issubclass(errors.SubmitError, OSError)
    assert issubclass(errors.SubmitError, ValueError)


@pytest.mark.parametrize("code", [errno.EBADF, errno.ENOSPC, errno.ENOENT, errno.EISDIR,
                                  errno.EAGAIN, errno.EINTR, errno.EACCES])
def test_operation_error_picks_the_builtin_subclass(code):
    exc = errors.OperationError(code, os.strerror(code))
    assert_operation_error(exc, code)
    assert type(errors.OperationError(code, "again")) is type(exc)  # one class per errno
    assert errors.OperationError("no errno").errno is None


def test_operation_error_pickles():
    import pickle

    exc = errors.OperationError(errno.ENOENT, os.strerror(errno.ENOENT))
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert (back.errno, back.strerror) == (exc.errno, exc.strerror)


# --------------------------------------------------------------------------------------------
# raw API, every backend


def test_failed_operation_raises_operation_error(backend, files):
    """A write far beyond the maximum file size is accepted and fails when it runs (EFBIG)."""
    fd = files.open()
    ctx = backend.Context()
    op = backend.write(b"x", fd, 2**62)
    backend.run(ctx, op)
    with pytest.raises(OSError) as info:
        op.get_value()
    assert_operation_error(info.value, errno.EFBIG)
    backend.settle(ctx)


def test_read_on_write_only_fd(backend, files):
    fd = write_only_fd(files)
    ctx = backend.Context()
    op = backend.read(16, fd, 0)
    if backend.short == "linux_aio":
        # io_submit refuses it up front
        with pytest.raises(ValueError) as info:
            ctx.submit(op)
        assert_submit_error(info.value, errno.EBADF)
        return
    backend.run(ctx, op)
    with pytest.raises(SystemError) as info:
        op.get_value()
    assert_operation_error(info.value, errno.EBADF)
    backend.settle(ctx)


def test_read_of_a_directory_gets_the_errno_subclass(backend, workdir):
    fd = os.open(str(workdir), os.O_RDONLY | os.O_DIRECTORY)
    try:
        ctx = backend.Context()
        op = backend.read(16, fd, 0)
        try:
            backend.run(ctx, op)
        except ValueError as exc:  # linux_aio: io_submit refuses it
            assert backend.short == "linux_aio"
            assert_submit_error(exc, exc.errno)
            return
        with pytest.raises(OSError) as info:
            op.get_value()
        assert_operation_error(info.value, info.value.errno)
        assert info.value.errno in (errno.EISDIR, errno.EINVAL)
        backend.settle(ctx)
    finally:
        os.close(fd)


@pytest.mark.skipif(not has_variant("linux_aio"), reason="caio.linux_aio is not available")
@pytest.mark.parametrize("case", ["closed-fd", "write-to-read-only-fd"])
def test_linux_aio_refusal_is_oserror_and_valueerror(files, case):
    linux_aio = module_by_short_name("linux_aio")
    ctx = linux_aio.Context()  # first: its eventfd must not take the closed fd's number
    if case == "closed-fd":
        fd = files.open(b"data")
        os.close(fd)
        files.fds.remove(fd)
        op, code = linux_aio.Operation.read(4, fd, 0), errno.EBADF
    else:
        # (A negative offset no longer gets this far: the Operation refuses it.)
        path = files.path()
        path.write_bytes(b"data")
        read_only = os.open(path, os.O_RDONLY)
        files.fds.append(read_only)
        op, code = linux_aio.Operation.write(b"x", read_only, 0), errno.EBADF
    with pytest.raises(ValueError) as info:
        ctx.submit(op)
    assert_submit_error(info.value, code)


@pytest.mark.skipif(not has_variant("linux_aio"), reason="caio.linux_aio is not available")
def test_linux_aio_cancel_of_unknown_op_is_oserror_and_valueerror(files):
    linux_aio = module_by_short_name("linux_aio")
    ctx = linux_aio.Context()
    op = linux_aio.Operation.read(4, files.open(b"data"), 0)
    try:
        result = ctx.cancel(op)
    except ValueError as exc:
        assert_submit_error(exc, exc.errno)
    else:
        assert result == 0  # not in flight: nothing to cancel, nothing raised


# --------------------------------------------------------------------------------------------
# adapters


def test_adapter_errors(loop_runner, AsyncioContext, adapter, files):
    wfd = write_only_fd(files)
    fd = files.open()

    async def body():
        async with AsyncioContext() as ctx:
            with pytest.raises(OSError) as info:
                await ctx.read(16, wfd, 0)
            if isinstance(info.value, ValueError):
                # linux_aio: io_submit refuses it (unless the inline attempt got it first)
                assert adapter.__name__ == "caio.linux_aio_asyncio"
                assert_submit_error(info.value, errno.EBADF)
            else:
                assert_operation_error(info.value, errno.EBADF)
            with pytest.raises(SystemError) as info:
                await ctx.write(b"x", fd, 2**62)
            assert_operation_error(info.value, errno.EFBIG)

    loop_runner.run(body)


@pytest.mark.parametrize("method", ["read", "write"])
def test_adapter_rejects_negative_offset_before_submitting(loop_runner, AsyncioContext, files,
                                                           method):
    fd = files.open(b"0123456789")
    os.lseek(fd, 4, os.SEEK_SET)

    async def body():
        async with AsyncioContext() as ctx:
            for offset in (-1, -4096, -(2**63)):
                with pytest.raises(ValueError, match=rf"offset.*{offset}") as info:
                    if method == "read":
                        await ctx.read(3, fd, offset)
                    else:
                        await ctx.write(b"XYZ", fd, offset)
                assert not isinstance(info.value, OSError)  # refused here, not by a kernel
            # a valid offset still works afterwards
            assert await ctx.read(3, fd, 0) == b"012"

    loop_runner.run(body)
    # nothing reached the file or its position
    assert os.lseek(fd, 0, os.SEEK_CUR) == 4
    assert os.pread(fd, 64, 0) == b"0123456789"


def test_adapter_offset_of_wrong_type_is_still_a_type_error(loop_runner, AsyncioContext, files):
    fd = files.open(b"data")

    async def body():
        async with AsyncioContext() as ctx:
            with pytest.raises(TypeError):
                await ctx.read(3, fd, "0")
            with pytest.raises(TypeError):
                await ctx.write(b"x", fd, 1.5)

    loop_runner.run(body)
