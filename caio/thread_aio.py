"""Thread-pool backend, implemented in Rust (``caio._native``).

Operations run on a fixed pool of native threads that never hold the GIL while doing
I/O. ``Context`` is caio's: each callback runs on the worker that did the I/O.
``EventfdContext`` queues completions instead, signals its eventfd (``fileno``) and runs
the callbacks in ``process_events()`` on the caller's thread (what the asyncio adapter
uses). See ``thread_aio.pyi`` for the API.
"""

from ._native import ThreadContext as Context
from ._native import ThreadEventfdContext as EventfdContext
from ._native import ThreadOperation as Operation

__all__ = ("Context", "EventfdContext", "Operation")
