"""The event-loop-agnostic part of caio's adapters, and the contract a custom loop meets.

An adapter turns a backend Context into awaitables for one event loop. Everything but the
loop primitives lives here and is shared by the asyncio (``caio.*_asyncio``) and trio
(``caio.trio_adapter``) adapters: claiming and submitting operations, the inline
cached-read fast path and its fairness budget, the capacity semaphore, error mapping
(an awaitable returns ``op.get_value()``, so errors always come from there), completing
short writes, offset checks, cancellation and close. This module imports no event loop.

What a loop must do with a native (eventfd) Context, i.e. ``EventfdContextProtocol``:

1. watch ``context.fileno`` for readability; when readable, ``poll()`` (resets the
   eventfd; ``BlockingIOError`` if it was 0) then ``process_events(n)``, which runs the
   completion callbacks of up to ``n`` operations on the calling thread;
2. give each operation a callback (``op.set_callback``) that resolves that operation's
   own loop primitive (a future, a parked task); the awaiting task then returns
   ``op.get_value()``;
3. on cancellation of the awaiter call ``context.cancel(op)`` (``ValueError``: cannot be
   cancelled) and keep the operation referenced until its callback has run: the kernel
   may still write into its buffer until then;
4. on close, stop watching the eventfd, deliver what has completed, fail the other
   awaiters, ``cancel`` their operations and hand the Context to
   ``retire()`` (this module), which frees it once nothing is in flight.

A loop subclasses ``AdapterBase`` (or ``EventfdAdapterBase`` with a backend policy
such as ``UringAdapter``) and implements the hooks in the "loop primitives" section:
``_new_semaphore``, ``_new_waiter``, ``_waiter_done``, ``_resolve``, ``_fail``, ``_wait``
(``_CANCELLED``: what ``_wait`` raises on cancellation), ``_yield``, ``_call_soon``,
``_call_soon_threadsafe``, ``_on_loop_thread`` and, for eventfd Contexts,
``_watch_eventfd`` / ``_unwatch_eventfd`` (which call ``_on_read_event`` when readable).
"""

from __future__ import annotations

import contextlib
import errno
import operator
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, cast

from ._streams import is_stream
from .abstract import AbstractOperation
from .errors import OperationError

if TYPE_CHECKING:
    from typing_extensions import Self


class ContextProtocol(Protocol):
    """What every backend Context offers an adapter."""

    @property
    def max_requests(self) -> int: ...

    def submit(self, *aio_operations: Any) -> int: ...

    def cancel(self, operation: Any, /) -> int: ...


class EventfdContextProtocol(ContextProtocol, Protocol):
    """A Context that announces completions on an eventfd and delivers them on the
    caller's thread (``linux_uring``, ``linux_aio``, ``thread_aio.EventfdContext``)."""

    @property
    def fileno(self) -> int: ...

    def poll(self) -> int: ...

    def process_events(
        self, max_requests: int = 512, min_requests: int = 0, timeout: int = 0,
    ) -> int: ...

    def run_inline(self, operation: Any, /) -> bool: ...


class UringContextProtocol(EventfdContextProtocol, Protocol):
    @property
    def sqpoll(self) -> int: ...

    def flush(self) -> int: ...


class SemaphoreProtocol(Protocol):
    def acquire(self) -> Awaitable[Any]: ...

    def release(self) -> None: ...


ContextType = TypeVar("ContextType", bound=ContextProtocol)
EventfdContextType = TypeVar("EventfdContextType", bound=EventfdContextProtocol)
UringContextType = TypeVar("UringContextType", bound=UringContextProtocol)
OperationType = TypeVar("OperationType", bound=AbstractOperation)

# A loop's handle for one awaited operation (an asyncio Future, a parked trio task...).
Waiter = Any


class AdapterBase(Generic[ContextType, OperationType]):
    MAX_REQUESTS_DEFAULT = 512

    # Set by every concrete adapter.
    CONTEXT_CLASS: Callable[..., ContextType]
    OPERATION_CLASS: type[OperationType]
    # How the errors of a closed adapter name it.
    CLOSED_MESSAGE: ClassVar[str] = "Context adapter is closed"
    # What a write completed inline (linux_uring) counts against an inline budget, in
    # small cached reads: about what it costs (4 vs 1.5 us for 4 KiB), so that inline
    # writes hold the loop no longer than inline reads do.
    INLINE_WRITE_COST: ClassVar[int] = 3

    context: ContextType

    def __init__(self, max_requests: int | None = None, deferred: bool = False,
                 **kwargs: Any) -> None:
        max_requests = max_requests or self.MAX_REQUESTS_DEFAULT
        self.deferred = deferred
        self._closed = False
        # Waiters of awaiting tasks, with their operations (so that close() can end them).
        self._waiting: dict[Waiter, OperationType] = {}
        # Created before the backend context, so a failing context constructor
        # leaves nothing half-registered behind.
        self.semaphore = self._new_semaphore(max_requests)
        # Bound once: looking the classmethod up binds a new method object per read.
        self._new_read = self.OPERATION_CLASS.read
        self.context = self._create_context(max_requests, **kwargs)

    # --- loop primitives (every loop implements these) ------------------------

    # What awaiting ``_wait`` raises when the awaiting task is cancelled.
    _CANCELLED: ClassVar[tuple[type[BaseException], ...]] = ()

    def _new_semaphore(self, value: int) -> SemaphoreProtocol:
        raise NotImplementedError

    def _new_waiter(self) -> Waiter:
        raise NotImplementedError

    def _waiter_done(self, waiter: Waiter) -> bool:
        raise NotImplementedError

    def _resolve(self, waiter: Waiter) -> None:
        """Wakes the awaiting task (on the loop thread); nothing if already done."""
        raise NotImplementedError

    def _fail(self, waiter: Waiter, exc: BaseException) -> None:
        """Makes ``_wait`` raise ``exc`` (on the loop thread); nothing if already done."""
        raise NotImplementedError

    def _wait(self, waiter: Waiter) -> Awaitable[Any]:
        raise NotImplementedError

    def _yield(self) -> Awaitable[Any]:
        """Lets the other tasks of the loop run once."""
        raise NotImplementedError

    def _call_soon(self, callback: Callable[[], Any]) -> None:
        """Runs ``callback`` on the loop thread once the loop next gets control."""
        raise NotImplementedError

    def _call_soon_threadsafe(self, callback: Callable[[], Any]) -> None:
        """``_call_soon`` from any thread; nothing if the loop has ended."""
        raise NotImplementedError

    def _on_loop_thread(self) -> bool:
        raise NotImplementedError

    # --- backend hooks --------------------------------------------------------

    def _create_context(self, max_requests: int, **kwargs: Any) -> ContextType:
        return self.CONTEXT_CLASS(max_requests=max_requests, **kwargs)

    def _destroy_context(self) -> None:
        return None

    def _submit_op(self, op: OperationType, waiter: Waiter) -> None:
        """Hands ``op`` (its waiter registered) to the backend, or raises."""
        _submit_one(self.context, op)

    def _check_open(self) -> None:
        """Raises if operations may no longer be submitted (the adapters of contexts that
        close leave that to the context)."""

    def _complete_inline(self, op: OperationType) -> object:
        """Completes ``op`` synchronously if the backend can: false if it did not, else
        true (``_YIELD_FIRST``: the task should yield to the loop once first)."""
        return False

    def _inline_mark(self) -> int:
        """Where the inline budget stands, for ``_charge_inline_write``."""
        return 0

    def _charge_inline_write(self, mark: int) -> None:
        """Charges a write that completed inline since ``mark`` as ``INLINE_WRITE_COST``
        operations against the inline budget (it was counted as one)."""

    def _on_done(self, waiter: Waiter, result: Any) -> None:
        """Completion callback; may run on any thread.

        The loop thread resolves the waiter unless it is done by then (a completion can
        race the cancellation of its awaiter). Not checked here as well: this runs on the
        thread pool's one result-handler thread, whose time per completion bounds
        python_aio's throughput, and the loop thread has to check anyway.
        """
        self._call_soon_threadsafe(partial(self._resolve, waiter))

    # --- public API ----------------------------------------------------------

    async def __aenter__(self) -> Self:
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
                await self._yield()
            return op.get_value()

        waiter = self._new_waiter()
        on_done = partial(self._on_done, waiter)
        op.set_callback(on_done)
        # acquire/release rather than `async with`: one coroutine frame less per operation.
        semaphore = self.semaphore
        await semaphore.acquire()
        slot_follows_op = False
        try:
            if self._closed:  # again: close() may have come while this task waited
                self._check_open()
            self._waiting[waiter] = op
            self._submit_op(op, waiter)
            try:
                await self._wait(waiter)
            except self._CANCELLED:
                try:
                    self.context.cancel(op)
                except ValueError:
                    pass
                # The task ends now, but an op the cancel could not take back still
                # counts against the backend's capacity until it completes: its slot
                # goes back only then, or an uncancelled task would meet "queue full".
                if _in_backend(op):
                    _release_on_completion(
                        op, on_done, _Slot(semaphore), self._call_soon_threadsafe,
                    )
                    slot_follows_op = True
                raise
            return op.get_value()
        finally:
            self._waiting.pop(waiter, None)
            if not slot_follows_op:
                semaphore.release()

    def read(
        self, nbytes: int, fd: int, offset: int, priority: int = 0, *, flags: int = 0,
    ) -> Awaitable[bytes]:
        if type(offset) is not int or offset < 0:
            _check_offset(offset)
        # (the classmethods are typed as returning AbstractOperation; no runtime cast
        # on the hot path, and no keyword argument to parse without flags)
        op: Any = (
            self._new_read(nbytes, fd, offset, priority, flags=flags)
            if flags
            else self._new_read(nbytes, fd, offset, priority)
        )
        return self.submit(op)

    def read_into(
        self, buffer: Any, fd: int, offset: int, priority: int = 0, *, flags: int = 0,
    ) -> Awaitable[int]:
        """Reads into ``buffer`` (a writable bytes-like object, its whole size) at
        ``offset`` with no copy and returns the number of bytes read."""
        if type(offset) is not int or offset < 0:
            _check_offset(offset)
        operation_class: Any = self.OPERATION_CLASS
        op: Any = (
            operation_class.read_into(buffer, fd, offset, priority, flags=flags)
            if flags
            else operation_class.read_into(buffer, fd, offset, priority)
        )
        return self.submit(op)

    def readv(
        self, buffers: Sequence[Any], fd: int, offset: int, priority: int = 0, *,
        flags: int = 0,
    ) -> Awaitable[int]:
        """Reads into the writable buffers of ``buffers``, filled in order, at ``offset``
        with one request and no copy; returns the number of bytes read (short at the
        end of the file)."""
        if type(offset) is not int or offset < 0:
            _check_offset(offset)
        operation_class: Any = self.OPERATION_CLASS
        op: Any = operation_class.readv(buffers, fd, offset, priority, flags=flags)
        return self.submit(op)

    def writev(
        self, buffers: Sequence[Any], fd: int, offset: int, priority: int = 0, *,
        flags: int = 0,
    ) -> Awaitable[int]:
        """Writes all the buffers of ``buffers``, in order, at ``offset`` and returns
        their total length, as ``write`` does: a short write is continued with the
        remaining bytes."""
        if type(offset) is not int or offset < 0:
            _check_offset(offset)
        operation_class: Any = self.OPERATION_CLASS
        op: Any = operation_class.writev(buffers, fd, offset, priority, flags=flags)
        # The op's tuple of the buffers: what the continuation slices.
        return self._write_all(op, op.payload, fd, offset, priority, flags, vectored=True)

    def write(
        self, payload: bytes, fd: int, offset: int, priority: int = 0, *, flags: int = 0,
    ) -> Awaitable[int]:
        """Writes all of ``payload`` at ``offset`` and returns its length, or raises the
        error that stopped it (e.g. ``ENOSPC``): a short write is continued, never
        reported as done."""
        if type(offset) is not int or offset < 0:
            _check_offset(offset)
        op = cast(OperationType, (
            self.OPERATION_CLASS.write(payload, fd, offset, priority, flags=flags)
            if flags
            else self.OPERATION_CLASS.write(payload, fd, offset, priority)
        ))
        return self._write_all(op, payload, fd, offset, priority, flags)

    async def _write_all(
        self, op: OperationType, payload: Any, fd: int, offset: int, priority: int,
        flags: int = 0, vectored: bool = False,
    ) -> int:
        # ``payload``: a write's payload, or (``vectored``) a writev's buffers.
        # In bytes, whatever the payload's item size (an array of ints, say); read before
        # the op runs (linux_aio's nbytes becomes the bytes written).
        size = op.nbytes
        mark = self._inline_mark()
        written = await self.submit(op)
        self._charge_inline_write(mark)
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
            operation_class: Any = self.OPERATION_CLASS
            rest: Any = (
                operation_class.writev(_tails(payload, done), fd, at, priority, flags=flags)
                if vectored
                else operation_class.write(_tail(payload, done), fd, at, priority, flags=flags)
            )
            written = await self.submit(rest)

    def fsync(self, fd: int) -> Awaitable[None]:
        return self.submit(cast(OperationType, self.OPERATION_CLASS.fsync(fd)))

    def fdsync(self, fd: int) -> Awaitable[None]:
        return self.submit(cast(OperationType, self.OPERATION_CLASS.fdsync(fd)))


class EventfdAdapterBase(AdapterBase[EventfdContextType, OperationType]):
    """Adapter base for native Contexts that announce completions on an eventfd.

    The loop watches the Context's ``fileno`` (``_watch_eventfd``) and calls
    ``_on_read_event``; ``process_events()`` then runs the completion callbacks on the
    loop thread, so they resolve waiters directly. Small page-cache reads complete
    inside ``submit`` via ``Context.run_inline()`` with no waiter at all. Once
    ``INLINE_BUDGET`` of them have completed in one loop iteration, the task reading
    yields to the loop once, so tasks reading cached files in a loop cannot starve the
    others; each such yield leaves the next task ``INLINE_TURN`` more inline reads in the
    same iteration, up to ``INLINE_CAP`` in all, after which every further read yields. An
    iteration does at most about ``INLINE_CAP`` inline reads plus one per ready task
    (``INLINE_BUDGET`` with one task reading).
    """

    # Completions delivered per loop iteration by the eventfd reader (see _drain).
    DRAIN_BATCH = 512

    # Inline completions per loop iteration before tasks must yield (about 0.3 ms of
    # 4 KiB page-cache reads).
    INLINE_BUDGET = 256
    # Many tasks reading cached data take turns of this many reads, not one: a yield costs
    # more than a read, so with 64 such tasks turns of one made a fifth of the reads yield.
    INLINE_TURN = 16
    INLINE_CAP = 4 * INLINE_BUDGET

    def _watch_eventfd(self, fd: int) -> None:
        """Calls ``_on_read_event`` whenever ``fd`` is readable, until unwatched."""
        raise NotImplementedError

    def _unwatch_eventfd(self, fd: int) -> None:
        raise NotImplementedError

    def _watch(self, context: EventfdContextType) -> None:
        self._reset_inline_streak()
        self._watch_eventfd(context.fileno)

    def _destroy_context(self) -> None:
        """Ends every awaiting task at once and lets the Context go.

        Completions already there are delivered (those tasks get their results); the
        tasks whose operations are still in flight get ``RuntimeError(CLOSED_MESSAGE)``
        and the kernel is asked to cancel those operations. The Context is then handed
        to ``caio._native.retire``: what is still in flight completes on a background
        thread (its buffers stay owned until then) and the Context, with its kernel
        objects, is freed once nothing is in flight.
        """
        context = self.context
        self._unwatch_eventfd(context.fileno)
        try:
            flush = getattr(context, "flush", None)
            if flush is not None:
                flush()
            while context.process_events():
                pass
            for waiter, op in list(self._waiting.items()):
                if self._waiter_done(waiter):
                    continue
                self._fail(waiter, RuntimeError(self.CLOSED_MESSAGE))
                with contextlib.suppress(Exception):
                    context.cancel(op)
        finally:
            self.context = cast(EventfdContextType, _ClosedContext(self.CLOSED_MESSAGE))
            retire(context)

    def _on_read_event(self) -> None:
        try:
            self.context.poll()
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
        delivered = self.context.process_events(self.DRAIN_BATCH)
        self._on_drained(delivered)
        if delivered == self.DRAIN_BATCH:
            self._call_soon(self._drain)

    def _on_drained(self, delivered: int) -> None:
        """Runs after a drain resumed the tasks of ``delivered`` completions (their
        steps run when the loop next runs its ready callbacks)."""

    def _reset_inline_streak(self) -> None:
        self._inline_streak = 0
        self._inline_limit = self.INLINE_BUDGET

    def _on_done(self, waiter: Waiter, result: Any) -> None:
        # Callbacks run on the loop thread, inside process_events()/flush().
        self._resolve(waiter)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(self.CLOSED_MESSAGE)

    def _inline_mark(self) -> int:
        return self._inline_streak

    def _charge_inline_write(self, mark: int) -> None:
        # One more inline completion since the mark and no yield (which would have let
        # the streak be reset): that was the write. (If it went to the backend, the task
        # suspended and others may have moved the streak: a wrong charge only makes a
        # task yield a little sooner.)
        if self._inline_streak == mark + 1:
            self._inline_streak += self.INLINE_WRITE_COST - 1

    def _complete_inline(self, op: OperationType) -> object:
        # (`_check_open`, spelled out: this runs once per operation)
        if self._closed:
            raise RuntimeError(self.CLOSED_MESSAGE)
        # Fast path: a small page-cache read completes right here, synchronously.
        if not self.context.run_inline(op):
            return False
        streak = self._inline_streak = self._inline_streak + 1
        if streak == 1:
            # Runs when the loop next gets control: a new iteration, a new budget.
            self._call_soon(self._reset_inline_streak)
        elif streak > self._inline_limit:
            if streak < self.INLINE_CAP:
                self._inline_limit = streak + self.INLINE_TURN
            return _YIELD_FIRST
        return True


# --- backend policies (loop-agnostic; the loop modules combine them with their hooks) --


class UringAdapter(EventfdAdapterBase[UringContextType, OperationType]):
    """io_uring: ``deferred=True`` batches one loop iteration's submissions into a
    single ``flush()`` (unless SQPOLL was negotiated). Small buffered file writes, like
    small cached reads, complete in ``run_inline`` (a write counts as
    ``INLINE_WRITE_COST`` reads against the inline budget)."""

    # Not as caio (on whenever allowed): the polling kernel thread competes with the loop
    # for the CPUs and spins between requests; without it large reads and writes run
    # faster at about half the CPU per op (benchmarks/results/2026-12-01-uring-ab.txt).
    # ``sqpoll=True`` still asks for it; ``Context.sqpoll`` says what was negotiated.
    DEFAULT_SQPOLL: ClassVar[bool] = False

    def _create_context(self, max_requests: int, **kwargs: Any) -> UringContextType:
        kwargs.setdefault("sqpoll", self.DEFAULT_SQPOLL)
        context = self.CONTEXT_CLASS(max_requests=max_requests, **kwargs)
        self._flush_scheduled = False
        # (decided once: this runs for every operation)
        self._flush_each = not self.deferred or bool(context.sqpoll)
        self._watch(context)
        return context

    def _submit_op(self, op: OperationType, waiter: Waiter) -> None:
        _submit_one(self.context, op)
        if self._flush_each:
            self.context.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_scheduled = False
        if self._closed:  # close() flushed, and let the Context go
            return
        self.context.flush()


_Pending = list[tuple[Any, Waiter]]


class AioAdapter(EventfdAdapterBase[EventfdContextType, OperationType]):
    """Kernel AIO submission policy (see ``caio.linux_aio_asyncio``): eager while fewer
    than ``EAGER_BELOW`` operations are in flight, else coalesced into one ``io_submit``
    when the loop next gets control or ``BATCH_LIMIT`` have gathered; ``deferred=True``
    submits once per loop iteration. The requests of tasks resumed by a drain of
    completions go out right after those tasks ran (see ``_on_drained``)."""

    # Non-deferred mode: below this many operations in flight, submit at once. A coalesced
    # request waits for the tasks resumed with it to run: with 32 O_DIRECT reads in flight
    # that cost more device time than the io_submit calls saved, with 128 it was a wash
    # (benchmarks/results/2026-12-01-aio-eager-ab.txt).
    EAGER_BELOW: ClassVar[int] = 64
    # Non-deferred mode: most operations coalesced into one io_submit.
    BATCH_LIMIT = 16

    def _create_context(self, max_requests: int, **kwargs: Any) -> EventfdContextType:
        if kwargs:
            raise TypeError(
                f"linux_aio {type(self).__name__} takes no extra arguments, "
                f"got {sorted(kwargs)}",
            )
        context = self.CONTEXT_CLASS(max_requests=max_requests)
        self._pending: _Pending = []
        self._submit_scheduled = False
        # Operations submitted by this adapter whose callback has not run yet.
        self._in_flight = 0
        self._watch(context)
        return context

    def _destroy_context(self) -> None:
        super()._destroy_context()
        # Queued operations never reached the kernel: their awaiters learn it now.
        pending, self._pending = self._pending, []
        for _, waiter in pending:
            self._fail(waiter, RuntimeError(self.CLOSED_MESSAGE))

    def _on_done(self, waiter: Waiter, result: Any) -> None:
        self._in_flight -= 1
        self._resolve(waiter)

    def _on_drained(self, delivered: int) -> None:
        # The tasks just resumed resubmit when the loop next runs its ready callbacks; a
        # flush queued now runs right after them (on asyncio, in the same loop iteration)
        # and sends what they queued in one io_submit. Queued only when some of them will
        # be coalesced: else it would cost the lone (eager) request a callback for nothing.
        if delivered and not self._submit_scheduled and (
            self.deferred or self._in_flight + delivered > self.EAGER_BELOW
        ):
            self._submit_scheduled = True
            self._call_soon(self._deferred_submit)

    def _submit_op(self, op: OperationType, waiter: Waiter) -> None:
        if not self.deferred and not self._pending and self._in_flight < self.EAGER_BELOW:
            _submit_one(self.context, op)
            self._in_flight += 1
            return
        self._pending.append((op, waiter))
        if not self.deferred and len(self._pending) >= self.BATCH_LIMIT:
            self._submit_coalesced()
        elif not self._submit_scheduled:
            self._submit_scheduled = True
            self._call_soon(self._deferred_submit)

    def _take_pending(self) -> _Pending:
        batch, self._pending = self._pending, []
        # Drop operations whose awaiter was cancelled before they reached the kernel.
        return [(op, waiter) for op, waiter in batch if not self._waiter_done(waiter)]

    def _deferred_submit(self) -> None:
        self._submit_scheduled = False
        if not self.deferred:
            self._submit_coalesced()
            return
        batch = self._take_pending()
        if not batch:
            return
        try:
            self.context.submit(*(op for op, _ in batch))
        except BaseException as exc:  # noqa: BLE001 (every awaiter must learn about it)
            for _, waiter in batch:
                self._fail(waiter, exc)
            return
        for op, waiter in batch:
            if _in_backend(op):
                self._in_flight += 1
            else:
                self._fail(waiter, OSError("Operation was not submitted"))

    def _submit_coalesced(self) -> None:
        batch = self._take_pending()
        if not batch:
            return
        accepted = 0
        with contextlib.suppress(Exception):  # nothing started: retried one by one below
            accepted = self.context.submit(*[op for op, _ in batch])
        if accepted == len(batch):  # the common case: every one is in flight
            self._in_flight += accepted
            return
        for op, waiter in batch:
            # After submit() returns, the ops it started are in flight on a Context; its
            # count alone would not say which ones they were.
            if _in_backend(op):
                self._in_flight += 1
                continue
            # Refused, or queued after a refused one: alone now, so that an error reaches
            # only the op that caused it.
            try:
                _submit_one(self.context, op)
            except BaseException as exc:  # noqa: BLE001 (the awaiter must learn about it)
                self._fail(waiter, exc)
            else:
                self._in_flight += 1


class ThreadAdapter(EventfdAdapterBase[EventfdContextType, OperationType]):
    """thread_aio on an ``EventfdContext``: extra keyword arguments (``pool_size``) go to
    the Context; ``deferred`` is accepted and ignored."""

    def _create_context(self, max_requests: int, **kwargs: Any) -> EventfdContextType:
        context = self.CONTEXT_CLASS(max_requests=max_requests, **kwargs)
        try:
            self._watch(context)
        except BaseException:
            getattr(context, "close")()  # noqa: B009 (not part of the protocol)
            raise
        return context

    def _on_done(self, waiter: Waiter, result: Any) -> None:
        if self._waiter_done(waiter):
            return
        # Callbacks normally run on the loop thread (inside process_events or
        # run_inline). After close() the rest completes on the drainer's thread, so only
        # touch the waiter directly when we are on the loop.
        if self._on_loop_thread():
            self._resolve(waiter)
        else:
            self._call_soon_threadsafe(partial(self._resolve, waiter))


class PythonAdapter(AdapterBase[ContextType, OperationType]):
    """python_aio: callbacks arrive on the thread pool's result-handler thread, so the
    inherited ``_on_done`` hands them to the loop thread. ``deferred`` is accepted and
    ignored; extra keyword arguments (``pool_size``) go to the Context."""

    def _destroy_context(self) -> None:
        getattr(self.context, "close")()  # noqa: B009 (not part of the protocol)


# --- helpers ------------------------------------------------------------------------


def retire(context: EventfdContextProtocol) -> None:
    """Lets a native Context go once its in-flight operations have completed.

    What is still in flight completes on a background thread (the kernel keeps owning
    its buffers until then); the Context and its kernel objects (ring, AIO context,
    eventfd, workers) are freed after that. The Context must not be used afterwards.
    """
    from . import _native

    _native.retire(context)


_YIELD_FIRST = object()


def _submit_one(context: ContextProtocol, op: AbstractOperation) -> None:
    if context.submit(op) != 1:
        raise OSError("Operation was not submitted")


def _tail(payload: Any, start: int) -> Any:
    """The bytes of ``payload`` from byte ``start`` on, without a copy for buffers."""
    if type(payload) is bytes:
        return payload[start:]
    return memoryview(payload).cast("B")[start:]


def _tails(buffers: Sequence[Any], start: int) -> list[Any]:
    """The buffers of a writev from byte ``start`` on (the ones before it left out, the
    one it falls in sliced), without copies."""
    rest: list[Any] = []
    for buffer in buffers:
        view = memoryview(buffer).cast("B")
        if start >= view.nbytes:
            start -= view.nbytes
            continue
        rest.append(view[start:] if start else buffer)
        start = 0
    return rest


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

    def __init__(self, semaphore: SemaphoreProtocol) -> None:
        self._semaphore: SemaphoreProtocol | None = semaphore

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
    call_soon_threadsafe: Callable[[Callable[[], Any]], None],
) -> None:
    op.set_callback(partial(_done_then_release, on_done, slot, call_soon_threadsafe))
    if not _in_backend(op):
        # It completed meanwhile, maybe still through the old callback.
        slot.release()


def _done_then_release(
    on_done: Callable[[Any], Any],
    slot: _Slot,
    call_soon_threadsafe: Callable[[Callable[[], Any]], None],
    result: Any,
) -> None:
    # A completion callback: any thread.
    try:
        on_done(result)
    finally:
        call_soon_threadsafe(slot.release)


class _ClosedContext:
    """Stands in for the backend Context of a closed adapter (the Context itself was let
    go, so that its kernel objects are freed as soon as its in-flight work is in)."""

    def __init__(self, message: str) -> None:
        self._message = message

    def cancel(self, op: object) -> int:
        # A task cancelled just before close() still asks for its operation's cancel.
        return 0

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{self._message}: it has no Context (.{name})")


__all__ = (
    "AdapterBase",
    "AioAdapter",
    "ContextProtocol",
    "ContextType",
    "EventfdAdapterBase",
    "EventfdContextProtocol",
    "EventfdContextType",
    "OperationType",
    "PythonAdapter",
    "SemaphoreProtocol",
    "ThreadAdapter",
    "UringAdapter",
    "UringContextProtocol",
    "retire",
)
