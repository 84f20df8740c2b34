# The compiled module; its backend classes are typed by linux_uring.pyi, linux_aio.pyi and
# thread_aio.pyi, where they are re-exported.
from typing import Any

def retire(context: object, /) -> None:
    """Frees ``context`` once its in-flight operations have completed (on a background
    thread); see ``caio.adapter_base.retire``."""

def direct_alignment(fd: object, /) -> tuple[int, int]:
    """``(memory, offset_and_size)`` that ``O_DIRECT`` needs on ``fd``; see
    ``caio.direct_alignment``."""

def io_limits() -> tuple[int, int]:
    """``(iov_max, max_rw_count)``: the most buffers and bytes one readv/writev takes."""

def _direct_bounces() -> int:
    """O_DIRECT bounce buffers allocated so far in this process (a test hook)."""

def __getattr__(name: str) -> Any: ...
