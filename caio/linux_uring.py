"""io_uring backend (placeholder: the native implementation has not landed yet)."""

raise ImportError("caio.linux_uring: the io_uring backend is not part of this build yet")
