"""The suite's files must live on a real on-disk filesystem, not tmpfs."""

import os
import subprocess
from pathlib import Path

from conftest import base_test_dir, filesystem_type

MEMORY_FILESYSTEMS = {"tmpfs", "ramfs", "devtmpfs"}


def test_workdir_is_not_on_tmpfs(workdir):
    fstype = filesystem_type(workdir)
    assert fstype not in MEMORY_FILESYSTEMS, (
        f"{workdir} is on {fstype}; set CAIO_TEST_DIR to a directory on a disk filesystem"
    )

    # cross-check with stat(1) where available
    try:
        out = subprocess.run(
            ["stat", "-f", "-c", "%T", str(workdir)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except FileNotFoundError:
        return
    if out.returncode == 0:
        assert out.stdout.strip() not in MEMORY_FILESYSTEMS


def test_workdir_location_and_cleanup(workdir):
    base = base_test_dir()
    assert workdir.parent.resolve() == base.resolve()
    assert workdir.is_dir()
    assert os.listdir(workdir) == []
    if "CAIO_TEST_DIR" not in os.environ:
        # default: next to tests/ in the repository
        assert base.parent.resolve() == Path(__file__).resolve().parent.parent
