from collections.abc import Callable, Sequence
from typing import Any, final

from typing_extensions import Buffer

from .abstract import AbstractContext, AbstractOperation

SQPOLL_ALLOWED: bool

@final
class Context(AbstractContext):
    """io_uring AIO context.

    ``submit`` stages operations without a syscall; ``flush`` hands them to the kernel
    and delivers what completed inside that call; ``process_events`` delivers the rest.
    Callbacks run on the thread calling ``flush``/``process_events``.
    """

    def __new__(cls, max_requests: int = 32, sqpoll: bool = False) -> Context: ...
    @property
    def fileno(self) -> int:
        """The eventfd signalled on every completion."""
    @property
    def max_requests(self) -> int: ...
    @property
    def sqpoll(self) -> int:
        """1 if SQPOLL was negotiated, else 0."""
    def submit(self, *aio_operations: Operation) -> int: ...
    def flush(self) -> int: ...
    def cancel(self, operation: Operation) -> int: ...
    def poll(self) -> int:
        """Read and reset the eventfd counter; BlockingIOError when it is 0."""
    def process_events(
        self, max_requests: int = 512, min_requests: int = 0, timeout: int = 0,
    ) -> int: ...
    def run_inline(self, operation: Operation, /) -> bool:
        """Complete a small page-cache read, or a small buffered write to a regular file,
        right now; False leaves ``operation`` untouched."""

@final
class Operation(AbstractOperation):
    @classmethod
    def read(
        cls, nbytes: int, fd: int, offset: int = 0, priority: int = 0, *, flags: int = 0,
    ) -> Operation:
        """``offset``: 0 to 2**63 - 1, or -1 (also spelt 2**64 - 1, as ``op.offset`` shows
        it): io_uring's "use the file position", for pipes and other streams, which
        reads at the descriptor's current position and moves it. Any other value raises
        OverflowError."""
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
        """``offset`` as for ``read``: -1 writes at the file position."""
    @classmethod
    def fsync(cls, fd: int, priority: int = 0) -> Operation: ...
    @classmethod
    def fdsync(cls, fd: int, priority: int = 0) -> Operation: ...
    def get_value(self) -> bytes | int | None: ...
    def set_callback(self, callback: Callable[[int], Any]) -> bool: ...
    @property
    def fileno(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def payload(self) -> bytes | None: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def result(self) -> int: ...
    @property
    def error(self) -> int: ...
    @property
    def context(self) -> Context | None: ...
