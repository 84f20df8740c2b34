"""Thread-pool backend, implemented in Rust (``caio._native``).

Operations run on a fixed pool of native threads that never hold the GIL while doing
I/O. See ``thread_aio.pyi`` for the API.
"""

from ._native import ThreadContext as Context
from ._native import ThreadOperation as Operation

__all__ = ("Context", "Operation")
