"""Linux kernel AIO backend (placeholder: the native implementation has not landed yet)."""

raise ImportError("caio.linux_aio: the kernel AIO backend is not part of this build yet")
