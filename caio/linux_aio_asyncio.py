"""asyncio adapter for the kernel AIO backend (``caio.linux_aio``).

Completions are delivered on the loop thread by ``process_events()`` (see
``EventfdAsyncioContextBase``); small page-cache reads complete inside ``submit``. With
``deferred=True`` the operations submitted during one loop iteration go to the kernel
in a single ``io_submit``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .asyncio_base import EventfdAsyncioContextBase
from .linux_aio import Context, Operation


class AsyncioContext(EventfdAsyncioContextBase[Context, Operation]):
    """asyncio front end of ``caio.linux_aio.Context``."""

    OPERATION_CLASS = Operation
    CONTEXT_CLASS = Context

    def _create_context(self, max_requests: int, **kwargs: Any) -> Context:
        if kwargs:
            raise TypeError(
                f"linux_aio AsyncioContext takes no extra arguments, got {sorted(kwargs)}",
            )
        context = self.CONTEXT_CLASS(max_requests=max_requests)
        self._pending: list[tuple[Operation, asyncio.Future[Any]]] = []
        self._submit_scheduled = False
        self._watch(context)
        return context

    def _submit_op(self, op: Operation, future: asyncio.Future[Any]) -> None:
        if not self.deferred:
            super()._submit_op(op, future)
            return
        self._pending.append((op, future))
        if not self._submit_scheduled:
            self._submit_scheduled = True
            self.loop.call_soon(self._deferred_submit)

    def _deferred_submit(self) -> None:
        self._submit_scheduled = False
        batch, self._pending = self._pending, []
        # Drop operations whose awaiter was cancelled before they reached the kernel.
        batch = [(op, future) for op, future in batch if not future.done()]
        if not batch:
            return
        try:
            accepted = self.context.submit(*(op for op, _ in batch))
        except BaseException as exc:  # noqa: BLE001 (every awaiter must learn about it)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, future in batch[accepted:]:
            if not future.done():
                future.set_exception(OSError("Operation was not submitted"))


__all__ = ("AsyncioContext", "Context", "Operation")
