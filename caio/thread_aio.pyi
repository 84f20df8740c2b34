from collections.abc import Callable, Sequence
from typing import Any, final

from typing_extensions import Buffer

from .abstract import AbstractContext, AbstractOperation

@final
class Context(AbstractContext):
    """thread aio context: a fixed pool of native worker threads.

    Each callback runs on the worker thread that did the I/O, holding the GIL (caio's
    behaviour). For delivery on your own thread use ``EventfdContext``.
    """

    def __new__(cls, max_requests: int = 512, pool_size: int = 8) -> Context: ...
    @property
    def max_requests(self) -> int: ...
    @property
    def pool_size(self) -> int: ...
    def submit(self, *aio_operations: Operation) -> int: ...
    def cancel(self, *aio_operations: Any) -> int:
        """Take back operations of this Context that no worker has started.

        Each completes with ``ECANCELED``, its callback running here. A running syscall
        cannot be interrupted and completes normally. Anything else is ignored, as in
        caio. Returns how many were taken back (caio's was a no-op that returned 0).
        """
    def close(self) -> None: ...

@final
class EventfdContext(AbstractContext):
    """thread aio context delivering completions on the caller's thread.

    Workers never take the GIL: completions are queued and announced on the eventfd
    ``fileno``; ``process_events()`` runs their callbacks on the calling thread. This is
    what ``caio.thread_aio_asyncio`` uses.
    """

    def __new__(cls, max_requests: int = 512, pool_size: int = 8) -> EventfdContext: ...
    @property
    def max_requests(self) -> int: ...
    @property
    def pool_size(self) -> int: ...
    @property
    def fileno(self) -> int:
        """The eventfd signalled when completions are queued."""
    def submit(self, *aio_operations: Operation) -> int: ...
    def cancel(self, *aio_operations: Any) -> int:
        """Take back operations of this Context that no worker has started.

        Each completes with ``ECANCELED`` (callback mode: its callback runs here; eventfd
        mode: from ``process_events()``). A running syscall cannot be interrupted and
        completes normally. Anything else is ignored, as in caio. Returns how many were
        taken back.
        """
    def close(self) -> None: ...
    def poll(self) -> int:
        """Read and reset the eventfd counter; BlockingIOError when it is 0."""
    def process_events(
        self, max_requests: int = 512, min_requests: int = 0, timeout: int = 0,
    ) -> int:
        """Deliver up to ``max_requests`` queued completions on this thread.

        Waits first until ``min_requests`` are queued or ``timeout`` seconds pass
        (negative: forever). Returns how many were delivered.
        """
    def run_inline(self, operation: Operation, /) -> bool:
        """Complete a small page-cache read right now; False leaves ``operation`` untouched."""

@final
class Operation(AbstractOperation):
    @classmethod
    def read(
        cls, nbytes: int, fd: int, offset: int = 0, priority: int = 0, *, flags: int = 0,
    ) -> Operation:
        """``offset`` is a file offset, 0 to 2**63 - 1 (negative: ValueError). On a pipe,
        FIFO or socket, offset 0 reads the next bytes."""
    @classmethod
    def read_into(
        cls, buffer: Buffer, fd: int, offset: int = 0, priority: int = 0, *, flags: int = 0,
    ) -> Operation:
        """Read into a writable buffer (its whole size), no copy; ``get_value()`` is
        the number of bytes read."""
    @classmethod
    def readv(
        cls, buffers: Sequence[Buffer], fd: int, offset: int = 0, priority: int = 0,
        *, flags: int = 0,
    ) -> Operation:
        """One read into the writable buffers of ``buffers``, filled in order, no copy;
        ``get_value()`` is the number of bytes read."""
    @classmethod
    def writev(
        cls, buffers: Sequence[Buffer], fd: int, offset: int = 0, priority: int = 0,
        *, flags: int = 0,
    ) -> Operation:
        """One write of the buffers of ``buffers``, in order, no copy; ``get_value()`` is
        the number of bytes written."""
    @classmethod
    def write(
        cls, payload_bytes: Buffer, fd: int, offset: int = 0, priority: int = 0,
        *, flags: int = 0,
    ) -> Operation:
        """``offset`` as for ``read``; on a pipe, FIFO or socket offset 0 just writes."""
    @classmethod
    def fsync(cls, fd: int, priority: int = 0) -> Operation: ...
    @classmethod
    def fdsync(cls, fd: int, priority: int = 0) -> Operation: ...
    def get_value(self) -> bytes | int | None: ...
    @property
    def fileno(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def payload(self) -> bytes | memoryview | None: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def result(self) -> int: ...
    @property
    def error(self) -> int: ...
    def set_callback(self, callback: Callable[[int], Any]) -> bool: ...

__all__ = ("Context", "EventfdContext", "Operation")
