"""The README's examples must run as written."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def run_block(code: str, workdir: Path) -> None:
    """Runs a README block as a user would, in ``workdir``; it must succeed."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_asyncio_example_runs_as_written(workdir: Path) -> None:
    code = python_blocks()[0]
    assert "AsyncioContext" in code
    run_block(code, workdir)
    assert (workdir / "test.file").read_bytes() == b"Hello world"


def test_raw_example_runs_as_written(workdir: Path) -> None:
    code = next(b for b in python_blocks() if "caio.thread_aio import Context" in b)
    (workdir / "test.file").write_bytes(b"x" * 5000)
    code += "\nassert data == b'x' * 4096, len(data)\n"
    run_block(code, workdir)


def test_buffer_write_example_runs_as_written(workdir: Path) -> None:
    code = next(b for b in python_blocks() if "memoryview(chunk)" in b)
    run_block(code, workdir)
    assert (workdir / "test.file").read_bytes() == b"hello"


def test_read_into_example_runs_as_written(workdir: Path) -> None:
    code = next(b for b in python_blocks() if "Operation.read_into(buffer" in b)
    (workdir / "test.file").write_bytes(b"r" * 100)
    code += "\nassert count == 100 and bytes(buffer[:100]) == b'r' * 100, count\n"
    run_block(code, workdir)


def test_rw_flags_example_runs_as_written(workdir: Path) -> None:
    code = next(b for b in python_blocks() if "flags=caio.RWF_DSYNC" in b)
    run_block(code, workdir)
    assert (workdir / "test.file").read_bytes() == b"journal entry"
