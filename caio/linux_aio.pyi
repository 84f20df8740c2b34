from collections.abc import Callable, Sequence
from typing import Any, final

from typing_extensions import Buffer

from .abstract import AbstractContext, AbstractOperation

@final
class Context(AbstractContext):
    """linux aio context representation.

    ``submit`` calls ``io_submit`` (for buffered files the transfer happens right there,
    except requests over 64 KiB, which run on helper threads); ``process_events``
    delivers completions and runs callbacks on the calling thread.
    """

    def __new__(cls, max_requests: int = 32) -> Context: ...
    @property
    def fileno(self) -> int:
        """The eventfd signalled on every completion."""
    @property
    def max_requests(self) -> int: ...
    def submit(self, *aio_operations: Operation) -> int: ...
    def cancel(self, operation: Operation) -> int: ...
    def poll(self) -> int:
        """Read and reset the eventfd counter; BlockingIOError when it is 0."""
    def process_events(
        self, max_requests: int = 512, min_requests: int = 0, timeout: int = 0,
    ) -> int: ...
    def run_inline(self, operation: Operation, /) -> bool:
        """Complete a small page-cache read right now; False leaves ``operation`` untouched."""

@final
class Operation(AbstractOperation):
    @classmethod
    def read(
        cls, nbytes: int, fd: int, offset: int = 0, priority: int = 0, *, flags: int = 0,
    ) -> Operation: ...
    @classmethod
    def write(
        cls, payload_bytes: Buffer, fd: int, offset: int = 0, priority: int = 0,
        *, flags: int = 0,
    ) -> Operation: ...
    @classmethod
    def read_into(
        cls, buffer: Buffer, fd: int, offset: int = 0, priority: int = 0, *, flags: int = 0,
    ) -> Operation: ...
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
    def payload(self) -> memoryview | bytes | None: ...
    @property
    def priority(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def result(self) -> int: ...
    @property
    def error(self) -> int: ...
    @property
    def context(self) -> Context | None: ...
