"""trio adapters: native file I/O for trio programs, with no worker thread per call.

``TrioContext`` is the adapter of the backend ``import caio`` selected (``CAIO_IMPL``,
then uring → linux → thread → python); ``TRIO_CONTEXTS`` maps each available backend's
name to its adapter. Use it as ``async with TrioContext() as ctx:`` (or create it inside
``trio.run`` and ``close()`` it)::

    async with TrioContext() as ctx:
        await ctx.write(b"data", fd, 0)
        data = await ctx.read(4, fd, 0)

How it runs on trio (the logic is ``caio.adapter_base``'s, shared with asyncio):

- the native Context's eventfd is watched by one system task per adapter
  (``trio.lowlevel.spawn_system_task``) with ``trio.lowlevel.wait_readable``; it calls
  ``process_events()``, whose callbacks reschedule the parked tasks
  (``wait_task_rescheduled`` / ``reschedule``);
- a task cancelled by its cancel scope raises ``trio.Cancelled`` at once; the kernel is
  asked to cancel the operation (io_uring, thread-pool queue), and the operation stays
  referenced, with its capacity slot taken, until the kernel has completed it;
- python_aio's completions arrive on its pool's thread and reach trio through
  ``TrioToken.run_sync_soon``;
- a small page-cache read completes inside ``read()`` without yielding (no
  checkpoint), except that after ``INLINE_BUDGET`` of them in one scheduler batch each
  further one yields once, so a task reading cached data cannot starve the others;
- ``close()`` ends the awaiting tasks whose operations are in flight with
  ``RuntimeError("TrioContext is closed")`` (the others get their results).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import outcome
import trio

from . import python_aio
from .adapter_base import (
    AdapterBase,
    AioAdapter,
    ContextType,
    EventfdAdapterBase,
    EventfdContextType,
    OperationType,
    PythonAdapter,
    SemaphoreProtocol,
    ThreadAdapter,
    UringAdapter,
)


class _Waiter:
    """One awaited operation: the task that waits, and how it ends."""

    __slots__ = ("done", "error", "parked", "task")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.done = False
        self.parked = False
        self.error: BaseException | None = None


def _abort(waiter: _Waiter) -> Callable[[Any], trio.lowlevel.Abort]:
    def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
        # Cancelled: no completion may reschedule this task any more.
        waiter.done = True
        return trio.lowlevel.Abort.SUCCEEDED

    return abort


class TrioContextBase(AdapterBase[ContextType, OperationType]):
    """trio loop primitives for ``caio.adapter_base``. Create it inside ``trio.run``."""

    CLOSED_MESSAGE = "TrioContext is closed"
    _CANCELLED = (trio.Cancelled, KeyboardInterrupt)

    def __init__(self, max_requests: int | None = None, deferred: bool = False,
                 **kwargs: Any) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        super().__init__(max_requests, deferred, **kwargs)

    def _new_semaphore(self, value: int) -> SemaphoreProtocol:
        return trio.Semaphore(value, max_value=value)

    def _new_waiter(self) -> _Waiter:
        return _Waiter(trio.lowlevel.current_task())

    def _waiter_done(self, waiter: _Waiter) -> bool:
        return waiter.done

    def _resolve(self, waiter: _Waiter) -> None:
        if waiter.done:
            return
        waiter.done = True
        if waiter.parked:
            trio.lowlevel.reschedule(waiter.task, outcome.Value(None))

    def _fail(self, waiter: _Waiter, exc: BaseException) -> None:
        if waiter.done:
            return
        waiter.done = True
        waiter.error = exc
        if waiter.parked:
            trio.lowlevel.reschedule(waiter.task, outcome.Error(exc))

    async def _wait(self, waiter: _Waiter) -> None:
        if not waiter.done:  # (io_uring's flush may have completed it already)
            waiter.parked = True
            await trio.lowlevel.wait_task_rescheduled(_abort(waiter))
        elif waiter.error is not None:
            raise waiter.error

    async def _yield(self) -> None:
        await trio.lowlevel.checkpoint()

    def _call_soon(self, callback: Callable[[], Any]) -> None:
        self._token.run_sync_soon(callback)

    def _call_soon_threadsafe(self, callback: Callable[[], Any]) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # trio.run ended: nobody waits
            self._token.run_sync_soon(callback)

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread


class EventfdTrioContextBase(
    TrioContextBase[EventfdContextType, OperationType],
    EventfdAdapterBase[EventfdContextType, OperationType],
):
    """trio adapter base for eventfd Contexts: one system task waits on the eventfd."""

    def _watch_eventfd(self, fd: int) -> None:
        self._reader_scope = trio.CancelScope()
        trio.lowlevel.spawn_system_task(
            self._read_events, fd, name=f"caio {type(self).__name__} eventfd reader",
        )

    def _unwatch_eventfd(self, fd: int) -> None:
        self._reader_scope.cancel()
        # Wakes and unregisters the reader now: the eventfd is closed later, by retire().
        # (Closed after trio.run returned: nothing is registered any more.)
        with contextlib.suppress(RuntimeError):
            trio.lowlevel.notify_closing(fd)

    async def _read_events(self, fd: int) -> None:
        with self._reader_scope, contextlib.suppress(trio.ClosedResourceError):
            while not self._closed:
                await trio.lowlevel.wait_readable(fd)
                if self._closed:
                    # close() ran after the wake-up was decided, before this task did:
                    # the Context is already handed over (retire) and must not be pumped.
                    break
                self._on_read_event()


class PythonTrioContext(
    PythonAdapter[python_aio.Context, python_aio.Operation],
    TrioContextBase[python_aio.Context, python_aio.Operation],
):
    """trio front end of ``caio.python_aio.Context`` (its own thread pool; extra keyword
    arguments such as ``pool_size`` go to the Context)."""

    CONTEXT_CLASS = python_aio.Context
    OPERATION_CLASS = python_aio.Operation


# Backend name -> its trio adapter, for the backends available here (in caio's order).
TRIO_CONTEXTS: dict[str, type[AdapterBase[Any, Any]]] = {}

try:
    from .linux_uring import Context as _UringContext
    from .linux_uring import Operation as _UringOperation
except ImportError:
    pass
else:

    class UringTrioContext(
        UringAdapter[_UringContext, _UringOperation],
        EventfdTrioContextBase[_UringContext, _UringOperation],
    ):
        """trio front end of ``caio.linux_uring.Context``, without SQPOLL unless asked
        (``sqpoll=True``; see ``UringAdapter.DEFAULT_SQPOLL``)."""

        CONTEXT_CLASS = _UringContext
        OPERATION_CLASS = _UringOperation

    TRIO_CONTEXTS["linux_uring"] = UringTrioContext

try:
    from .linux_aio import Context as _AioContext
    from .linux_aio import Operation as _AioOperation
except ImportError:
    pass
else:

    class AioTrioContext(
        AioAdapter[_AioContext, _AioOperation],
        EventfdTrioContextBase[_AioContext, _AioOperation],
    ):
        """trio front end of ``caio.linux_aio.Context`` (the submission policy of
        ``caio.linux_aio_asyncio``)."""

        CONTEXT_CLASS = _AioContext
        OPERATION_CLASS = _AioOperation

    TRIO_CONTEXTS["linux_aio"] = AioTrioContext

try:
    from .thread_aio import EventfdContext as _ThreadEventfdContext
    from .thread_aio import Operation as _ThreadOperation
except ImportError:
    pass
else:

    class ThreadTrioContext(
        ThreadAdapter[_ThreadEventfdContext, _ThreadOperation],
        EventfdTrioContextBase[_ThreadEventfdContext, _ThreadOperation],
    ):
        """trio front end of ``caio.thread_aio.EventfdContext`` (``pool_size=`` goes to
        the Context)."""

        CONTEXT_CLASS = _ThreadEventfdContext
        OPERATION_CLASS = _ThreadOperation

    TRIO_CONTEXTS["thread_aio"] = ThreadTrioContext

TRIO_CONTEXTS["python_aio"] = PythonTrioContext


def _selected() -> type[AdapterBase[Any, Any]]:
    from . import preferred  # what CAIO_IMPL / default_implementation / probing chose

    return TRIO_CONTEXTS[preferred.__name__.rpartition(".")[2]]


# The adapter of the backend ``import caio`` selected.
TrioContext = _selected()


__all__ = (
    "TRIO_CONTEXTS",
    "EventfdTrioContextBase",
    "PythonTrioContext",
    "TrioContext",
    "TrioContextBase",
)
