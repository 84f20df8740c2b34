"""Common machinery of the asyncio adapters (``caio.*_asyncio.AsyncioContext``).

An adapter wraps one backend Context. Each awaited operation gets a future that the
operation's completion callback resolves; the awaiting coroutine then returns
``op.get_value()``, so errors always surface from ``get_value()`` and never from the
callback argument. A bounded semaphore limits how many operations one adapter keeps
in flight.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import operator
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from ._streams import is_stream
from .abstract import AbstractContext, AbstractOperation
from .errors import OperationError

ContextType = TypeVar("ContextType", bound=AbstractContext)
OperationType = TypeVar("OperationType", bound=AbstractOperation)


class AsyncioContextBase(abc.ABC, Generic[ContextType, OperationType]):
    MAX_REQUESTS_DEFAULT = 512

    # Set by every concrete adapter.
    CONTEXT_CLASS: Callable[..., ContextType]
    OPERATION_CLASS: type[OperationType]

    context: ContextType

    def __init__(
        self,
        max_requests: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        deferred: bool = False,
        **kwargs: Any,
    ) -> None:
        max_requests = max_requests or self.MAX_REQUESTS_DEFAULT
        self.loop = loop or asyncio.get_event_loop()
        self.deferred = deferred
        self._closed = False
        # Futures awaited by tasks, with their operations (so that close() can end them).
        self._waiting: dict[asyncio.Future[Any], OperationType] = {}
        # Created before the backend context, so a failing context constructor
        # leaves nothing half-registered behind.
        self.semaphore = asyncio.BoundedSemaphore(max_requests)
        self.context = self._create_context(max_requests, **kwargs)

    # --- hooks for the concrete adapters -------------------------------------

    def _create_context(self, max_requests: int, **kwargs: Any) -> ContextType:
        return self.CONTEXT_CLASS(max_requests=max_requests, **kwargs)

    def _destroy_context(self) -> None:
        return None

    def _submit_op(self, op: OperationType, future: asyncio.Future[Any]) -> None:
        if self.context.submit(op) != 1:
            raise OSError("Operation was not submitted")

    def _on_submitted(self) -> None:
        return None

    def _check_open(self) -> None:
        """Raises if operations may no longer be submitted (the adapters of contexts that
        close leave that to the context)."""

    def _complete_inline(self, op: OperationType) -> object:
        """Completes ``op`` synchronously if the backend can: false if it did not, else
        true (``_YIELD_FIRST``: the task should yield to the loop once first)."""
        return False

    def _on_done(self, future: asyncio.Future[Any], result: Any) -> None:
        """Completion callback; may run on any thread.

        The future is checked twice: here (cheap early exit) and again on the loop
        thread, because a completion can race the cancellation of its awaiter.
        """
        if future.done():
            return
        self.loop.call_soon_threadsafe(_resolve, future)

    # --- public API ----------------------------------------------------------

    async def __aenter__(self) -> AsyncioContextBase[ContextType, OperationType]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._destroy_context()

    async def submit(self, op: OperationType) -> Any:
        if not isinstance(op, self.OPERATION_CLASS):
            # ValueError, not TypeError: the exception type is part of the contract.
            raise ValueError("Operation object expected")  # noqa: TRY004
        inline = self._complete_inline(op)
        if inline:
            if inline is _YIELD_FIRST:
                await asyncio.sleep(0)
            return op.get_value()

        future = self.loop.create_future()
        on_done = partial(self._on_done, future)
        op.set_callback(on_done)
        # acquire/release rather than `async with`: one coroutine frame less per operation.
        semaphore = self.semaphore
        await semaphore.acquire()
        slot_follows_op = False
        try:
            self._check_open()  # again: close() may have come while this task waited
            self._waiting[future] = op
            self._submit_op(op, future)
            self._on_submitted()
            try:
                await future
            except asyncio.CancelledError:
                try:
                    self.context.cancel(op)
                except ValueError:
                    pass
                # The task ends now, but an op the cancel could not take back still
                # counts against the backend's capacity until it completes: its slot
                # goes back only then, or an uncancelled task would meet "queue full".
                if _in_backend(op):
                    _release_on_completion(op, on_done, _Slot(semaphore), self.loop)
                    slot_follows_op = True
                raise
            return op.get_value()
        finally:
            self._waiting.pop(future, None)
            if not slot_follows_op:
                semaphore.release()

    def read(
        self, nbytes: int, fd: int, offset: int, priority: int = 0,
    ) -> Awaitable[bytes]:
        if type(offset) is not int or offset < 0:
            _check_offset(offset)
        op = self.OPERATION_CLASS.read(nbytes, fd, offset, priority)
        return self.submit(op)  # type: ignore[arg-type]

    def write(
        self, payload: bytes, fd: int, offset: int, priority: int = 0,
    ) -> Awaitable[int]:
        """Writes all of ``payload`` at ``offset`` and returns its length, or raises the
        error that stopped it (e.g. ``ENOSPC``): a short write is continued, never
        reported as done."""
        if type(offset) is not int or offset < 0:
            _check_offset(offset)
        op = cast(OperationType, self.OPERATION_CLASS.write(payload, fd, offset, priority))
        return self._write_all(op, payload, fd, offset, priority)

    async def _write_all(
        self, op: OperationType, payload: bytes, fd: int, offset: int, priority: int,
    ) -> int:
        size = len(payload)
        written = await self.submit(op)
        done = 0
        stream: bool | None = None
        while True:
            if written <= 0 and size:
                raise OperationError(
                    errno.EIO, f"write made no progress after {done} of {size} bytes",
                )
            done += written
            if done >= size:
                return done
            if stream is None:
                stream = is_stream(fd)
            # A stream has no offsets: the rest goes where the first part went.
            at = offset if stream else offset + done
            rest = self.OPERATION_CLASS.write(payload[done:], fd, at, priority)
            written = await self.submit(rest)  # type: ignore[arg-type]

    def fsync(self, fd: int) -> Awaitable[None]:
        return self.submit(cast(OperationType, self.OPERATION_CLASS.fsync(fd)))

    def fdsync(self, fd: int) -> Awaitable[None]:
        return self.submit(cast(OperationType, self.OPERATION_CLASS.fdsync(fd)))


class EventfdAsyncioContextBase(AsyncioContextBase[ContextType, OperationType]):
    """Adapter base for native Contexts that announce completions on an eventfd.

    The Context's ``fileno`` is watched with ``loop.add_reader``; ``process_events()``
    then runs the completion callbacks on the loop thread, so they resolve futures
    directly. Small page-cache reads complete inside ``submit`` via
    ``Context.run_inline()`` with no future at all. Once ``INLINE_BUDGET`` of them have
    completed in one loop iteration, each further one makes its task yield to the loop
    once, so tasks reading cached files in a loop cannot starve the others: an iteration
    does at most about ``INLINE_BUDGET`` inline reads plus one per ready task.
    """

    # Completions delivered per loop iteration by the eventfd reader (see _drain).
    DRAIN_BATCH = 512

    # Inline completions per loop iteration before tasks must yield (about 0.5 ms of
    # 4 KiB page-cache reads).
    INLINE_BUDGET = 256

    def _watch(self, context: Any) -> None:
        self._inline_streak = 0
        self.loop.add_reader(context.fileno, self._on_read_event)

    def _destroy_context(self) -> None:
        """Ends every awaiting task at once and lets the Context go.

        Completions already there are delivered (those tasks get their results); the
        tasks whose operations are still in flight get ``RuntimeError("AsyncioContext is
        closed")`` and the kernel is asked to cancel those operations. The Context is
        then handed to ``caio._native.retire``: what is still in flight completes on a
        background thread (its buffers stay owned until then) and the Context, with its
        kernel objects, is freed once nothing is in flight.
        """
        from . import _native  # type: ignore[attr-defined]  # native adapters only

        context: Any = self.context
        self.loop.remove_reader(context.fileno)
        try:
            if hasattr(context, "flush"):
                context.flush()
            while context.process_events():
                pass
            for future, op in list(self._waiting.items()):
                if future.done():
                    continue
                future.set_exception(RuntimeError("AsyncioContext is closed"))
                with contextlib.suppress(Exception):
                    context.cancel(op)
        finally:
            self.context = cast(ContextType, _ClosedContext())
            _native.retire(context)

    def _on_read_event(self) -> None:
        try:
            self.context.poll()  # type: ignore[attr-defined]
        except BlockingIOError:
            pass
        # The eventfd was reset above, before looking for completions: one that lands
        # after this drain signals it again and brings us back.
        self._drain()

    def _drain(self) -> None:
        # A full batch means more may be waiting: the rest is taken on the next loop
        # iteration, after the tasks just resumed have run. They submit their next
        # operations first, so the device gets work again sooner (and other callbacks
        # get their turn); the counter is a wake-up, not a count, so nothing is lost.
        if self._closed:
            return
        if self.context.process_events(self.DRAIN_BATCH) == self.DRAIN_BATCH:  # type: ignore[attr-defined]
            self.loop.call_soon(self._drain)

    def _reset_inline_streak(self) -> None:
        self._inline_streak = 0

    def _on_done(self, future: asyncio.Future[Any], result: Any) -> None:
        # Callbacks run on the loop thread, inside process_events()/flush().
        if not future.done():
            future.set_result(True)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("AsyncioContext is closed")

    def _complete_inline(self, op: OperationType) -> object:
        self._check_open()
        # Fast path: a small page-cache read completes right here, synchronously.
        if not self.context.run_inline(op):  # type: ignore[attr-defined]
            return False
        self._inline_streak += 1
        if self._inline_streak == 1:
            # Runs when the loop next gets control: a new iteration, a new budget.
            self.loop.call_soon(self._reset_inline_streak)
        elif self._inline_streak > self.INLINE_BUDGET:
            return _YIELD_FIRST
        return True


_YIELD_FIRST = object()


def _check_offset(offset: Any) -> None:
    """Refuses a negative file offset before anything is submitted: linux_uring's raw API
    reads -1 as "the file's current position" (and python_aio's would seek from the end),
    which would misplace the data. Worded as the native Operations' own check (which
    thread_aio and linux_aio reach first), so every adapter says the same."""
    try:
        value = operator.index(offset)
    except TypeError:
        return  # the Operation constructor reports the wrong type
    if value < 0:
        raise ValueError(f"offset must not be negative (got {value!r})")




class _Slot:
    """One semaphore slot, given back exactly once (on the loop thread)."""

    __slots__ = ("_semaphore",)

    def __init__(self, semaphore: asyncio.BoundedSemaphore) -> None:
        self._semaphore: asyncio.BoundedSemaphore | None = semaphore

    def release(self) -> None:
        semaphore, self._semaphore = self._semaphore, None
        if semaphore is not None:
            semaphore.release()


def _in_backend(op: AbstractOperation) -> bool:
    # Every backend's Operation names the Context it is in flight on (None before it
    # was submitted, e.g. still batched by the adapter, and once it has completed).
    return getattr(op, "context", None) is not None


def _release_on_completion(
    op: AbstractOperation,
    on_done: Callable[[Any], Any],
    slot: _Slot,
    loop: asyncio.AbstractEventLoop,
) -> None:
    op.set_callback(partial(_done_then_release, on_done, slot, loop))
    if not _in_backend(op):
        # It completed meanwhile, maybe still through the old callback.
        slot.release()


def _done_then_release(
    on_done: Callable[[Any], Any],
    slot: _Slot,
    loop: asyncio.AbstractEventLoop,
    result: Any,
) -> None:
    # A completion callback: any thread.
    try:
        on_done(result)
    finally:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(slot.release)


class _ClosedContext:
    """Stands in for the backend Context of a closed adapter (the Context itself was let
    go, so that its kernel objects are freed as soon as its in-flight work is in)."""

    def cancel(self, op: object) -> int:
        # A task cancelled just before close() still asks for its operation's cancel.
        return 0

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"AsyncioContext is closed: it has no Context (.{name})")


def _resolve(future: asyncio.Future[Any]) -> None:
    # Runs on the loop thread; the future may have been cancelled meanwhile.
    if not future.done():
        future.set_result(True)


__all__ = ("AsyncioContextBase", "ContextType", "EventfdAsyncioContextBase", "OperationType")
