"""The exceptions caio raises for errors reported by the kernel.

Each is an ``OSError`` (with ``errno`` and ``strerror``) *and* the type caio 0.12 raised in
that place, so both ``except OSError`` and existing ``except SystemError`` /
``except ValueError`` code catch it:

- :class:`OperationError` (``OSError`` + ``SystemError``): an operation failed, raised by
  ``Operation.get_value()`` and the adapters' awaitables on every backend.
- :class:`SubmitError` (``OSError`` + ``ValueError``): kernel AIO's ``io_submit`` (or
  ``io_cancel``) refused a request up front, e.g. a bad descriptor or offset.

Built from ``(errno, strerror)``, an instance is also of the ``OSError`` subclass Python
itself picks for that errno (``FileNotFoundError`` for ``ENOENT``, ``IsADirectoryError``
for ``EISDIR``, ...), as the plain ``OSError`` the pure-Python backend used to raise was.
The native backends raise these classes too: this module is the one errno mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from typing_extensions import Self


class _KernelError(OSError):
    """Picks the errno's builtin ``OSError`` subclass, like ``OSError(errno, strerror)``."""

    def __new__(cls, *args: Any) -> Self:
        target: type[_KernelError] = cls
        if cls in _PUBLIC and len(args) >= 2 and isinstance(args[0], int):
            builtin = type(OSError(args[0], ""))
            if builtin is not OSError:
                target = _with_builtin(cls, builtin)
        return cast("Self", super().__new__(target, *args))

    def __reduce__(self) -> Any:
        # Unpickling goes through the public class, which picks the subclass again.
        reduced = super().__reduce__()
        assert isinstance(reduced, tuple)
        return (_public_base(type(self)), *reduced[1:])


class OperationError(_KernelError, SystemError):
    """An operation failed in the kernel: ``OSError`` (``errno``, ``strerror``) and
    ``SystemError`` (what caio's native backends raised)."""


class SubmitError(_KernelError, ValueError):
    """Kernel AIO refused a request when it was submitted: ``OSError`` (``errno``,
    ``strerror``) and ``ValueError`` (what caio's linux_aio raised)."""


_PUBLIC: tuple[type[_KernelError], ...] = (OperationError, SubmitError)

# (public class, builtin OSError subclass) -> the class deriving from both.
_combined: dict[tuple[type[_KernelError], type[OSError]], type[_KernelError]] = {}


def _with_builtin(cls: type[_KernelError], builtin: type[OSError]) -> type[_KernelError]:
    combined = _combined.get((cls, builtin))
    if combined is None:
        # Same name as the public class: tracebacks read "caio.errors.OperationError".
        combined = type(cls.__name__, (cls, builtin), {"__module__": __name__})
        combined.__qualname__ = cls.__qualname__
        combined = _combined.setdefault((cls, builtin), combined)
    return combined


def _public_base(cls: type[_KernelError]) -> type[_KernelError]:
    return next(base for base in cls.__mro__ if base in _PUBLIC)


def operation_error(exc: OSError) -> OSError:
    """``exc`` (an ``OSError`` from a system call) as an :class:`OperationError`, keeping
    its traceback; an ``OSError`` without an errno is returned unchanged."""
    if isinstance(exc, OperationError) or exc.errno is None:
        return exc
    return OperationError(exc.errno, exc.strerror).with_traceback(exc.__traceback__)


__all__ = ("OperationError", "SubmitError", "operation_error")
