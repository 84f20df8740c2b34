"""Per-operation flags (``preadv2``/``pwritev2``'s ``RWF_*``) and their checks.

The values are the kernel's (linux/fs.h), as ``os.RWF_*`` has them on Linux. The native
backends check the same rules in Rust (``caio_backends::io::check_rw_flags``), with the
same messages.
"""

from __future__ import annotations

import operator
import os
from typing import SupportsIndex

#: This write is on disk when it completes (its data, as with ``O_DSYNC``): a durable
#: write without a separate ``fdatasync`` round trip. Writes only.
RWF_DSYNC: int = getattr(os, "RWF_DSYNC", 0x02)
#: As ``RWF_DSYNC``, with the file's metadata too (``O_SYNC``). Writes only.
RWF_SYNC: int = getattr(os, "RWF_SYNC", 0x04)
#: Fail with ``EAGAIN`` (``BlockingIOError``) instead of waiting: for a read, for data
#: not in the page cache (or a lock); for a write, for block allocation, writeback, a full
#: pipe. A filesystem that cannot tell fails it with ``EOPNOTSUPP``.
RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0x08)

READ_FLAGS = RWF_NOWAIT
WRITE_FLAGS = RWF_DSYNC | RWF_SYNC | RWF_NOWAIT

# The kernel's flags by bit, for naming a refused one.
_NAMES = {
    0x01: "RWF_HIPRI",
    0x02: "RWF_DSYNC",
    0x04: "RWF_SYNC",
    0x08: "RWF_NOWAIT",
    0x10: "RWF_APPEND",
    0x20: "RWF_NOAPPEND",
    0x40: "RWF_ATOMIC",
    0x80: "RWF_DONTCACHE",
}

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def check_rw_flags(flags: SupportsIndex, *, write: bool) -> int:
    """``flags`` for a read (``write=False``) or a write, as the kernel takes them.

    ``ValueError`` naming the first flag refused: the sync flags on a read (the kernel
    ignores them there), and every flag caio does not pass on (``RWF_APPEND`` would change
    what the offset means, ``RWF_HIPRI`` needs a polled queue, unknown bits mean
    nothing). Beyond 64 bits ``OverflowError``, as for every integer argument.
    """
    value = operator.index(flags)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise OverflowError("flags does not fit in 64 bits")
    if value < 0:
        raise ValueError(f"flags must be 0 or a combination of RWF_* flags (got {value})")
    allowed, what = (WRITE_FLAGS, "a write") if write else (READ_FLAGS, "a read")
    refused = value & ~allowed
    if not refused:
        return value
    bit = refused & -refused
    name = _NAMES.get(bit)
    if name in ("RWF_DSYNC", "RWF_SYNC"):
        raise ValueError(f"flags: {name} applies to writes only, not to {what}")
    if name is not None:
        raise ValueError(f"flags: {name} is not supported for {what}")
    raise ValueError(f"flags: unknown flag {bit:#x} (got {value:#x})")


__all__ = ("RWF_DSYNC", "RWF_NOWAIT", "RWF_SYNC", "check_rw_flags")
