"""io_uring backend (Rust, ``caio._native``).

Importing this module probes the kernel once: when io_uring cannot be used here (old
kernel, seccomp filter, ``kernel.io_uring_disabled``) it raises ImportError saying why,
and ``import caio`` moves on to the next backend.
"""

from . import _native

_reason = _native.uring_probe()
if _reason is not None:
    raise ImportError(_reason)

Context = _native.UringContext
Operation = _native.UringOperation

# Whether this process may run a SQPOLL ring (informational: Context(sqpoll=True)
# falls back on its own).
SQPOLL_ALLOWED: bool = _native.uring_sqpoll_allowed()

__all__ = ("SQPOLL_ALLOWED", "Context", "Operation")
