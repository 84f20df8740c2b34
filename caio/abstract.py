"""Abstract interfaces shared by every caio backend.

Only the pure-Python backend (``caio.python_aio``) inherits from these classes at
runtime; the native backends implement the same interface without registering
themselves as virtual subclasses. The type stubs of the native modules declare them
as subclasses so that type checkers see one common API.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Buffer


class AbstractContext(abc.ABC):
    """A set of in-flight file operations executed by one backend."""

    @property
    @abc.abstractmethod
    def max_requests(self) -> int:
        """Capacity the context was created with."""
        raise NotImplementedError

    @abc.abstractmethod
    def submit(self, *aio_operations: Any) -> int:
        """Start the given operations, return how many were newly accepted."""
        raise NotImplementedError(aio_operations)

    @abc.abstractmethod
    def cancel(self, *aio_operations: Any) -> int:
        """Try to cancel operations (what this means depends on the backend)."""
        raise NotImplementedError(aio_operations)


class AbstractOperation(abc.ABC):
    """One read, write, fsync or fdatasync request on a file descriptor."""

    @classmethod
    @abc.abstractmethod
    def read(
        cls, nbytes: int, fd: int, offset: int, priority: int = 0, *, flags: int = 0,
    ) -> AbstractOperation:
        """Create an operation reading ``nbytes`` from ``fd`` at ``offset``; ``flags``:
        ``caio.RWF_NOWAIT`` or 0."""
        raise NotImplementedError

    @classmethod
    @abc.abstractmethod
    def write(
        cls, payload_bytes: bytes, fd: int, offset: int, priority: int = 0, *, flags: int = 0,
    ) -> AbstractOperation:
        """Create an operation writing ``payload_bytes`` to ``fd`` at ``offset``; ``flags``:
        a combination of ``caio.RWF_DSYNC``, ``RWF_SYNC`` and ``RWF_NOWAIT``, or 0."""
        raise NotImplementedError

    # Not abstract (added after caio 0.12): a subclass written against 0.12 still
    # instantiates, and only calling these raises.
    @classmethod
    def readv(
        cls, buffers: Sequence[Buffer], fd: int, offset: int = 0, priority: int = 0, *,
        flags: int = 0,
    ) -> AbstractOperation:
        """Create one read from ``fd`` at ``offset`` into the writable buffers of
        ``buffers``, filled in order; ``get_value()`` is the number of bytes read."""
        raise NotImplementedError(f"{cls.__qualname__} does not implement readv()")

    @classmethod
    def writev(
        cls, buffers: Sequence[Buffer], fd: int, offset: int = 0, priority: int = 0, *,
        flags: int = 0,
    ) -> AbstractOperation:
        """Create one write to ``fd`` at ``offset`` of the buffers of ``buffers``, in
        order; ``get_value()`` is the number of bytes written."""
        raise NotImplementedError(f"{cls.__qualname__} does not implement writev()")

    @classmethod
    @abc.abstractmethod
    def fsync(cls, fd: int, priority: int = 0) -> AbstractOperation:
        """Create an operation flushing data and metadata of ``fd``."""
        raise NotImplementedError

    @classmethod
    @abc.abstractmethod
    def fdsync(cls, fd: int, priority: int = 0) -> AbstractOperation:
        """Create an operation flushing the data of ``fd`` (fdatasync)."""
        raise NotImplementedError

    @abc.abstractmethod
    def get_value(self) -> bytes | int | None:
        """Result of a completed operation: bytes read, bytes written, or None.

        Raises if the operation failed.
        """
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def fileno(self) -> int:
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def offset(self) -> int:
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def payload(self) -> bytes | memoryview | None:
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        raise NotImplementedError

    @abc.abstractmethod
    def set_callback(self, callback: Callable[[Any], Any]) -> bool:
        """Register a callable invoked once when the operation completes."""
        raise NotImplementedError


__all__ = ("AbstractContext", "AbstractOperation")
