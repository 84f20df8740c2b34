"""Runs asyncio on the loop that ``CAIO_TEST_LOOP`` names, in every interpreter the tests start.

``tests/conftest.py`` calls ``install()`` in the test process and, when the loop is not the
default, puts this folder on ``PYTHONPATH`` so that the interpreters the tests spawn
(``python -c ...``) import this file at startup and run ``asyncio.run`` /
``asyncio.new_event_loop`` on the same loop.
"""

import os
import sys

LOOPS = ("asyncio", "uvloop")


def selected() -> str:
    return os.environ.get("CAIO_TEST_LOOP") or "asyncio"


def install() -> None:
    """Make asyncio's policy create loops of the selected kind (a no-op for the default)."""
    if selected() != "uvloop":
        return
    import asyncio
    import warnings

    import uvloop

    with warnings.catch_warnings():
        # set_event_loop_policy is deprecated from 3.14 (removal planned for 3.16); the
        # spawned tests would see the warning on stderr
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _run_shadowed_sitecustomize() -> None:
    """Being first on the path hides any sitecustomize the interpreter has; run that one too."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


if __name__ == "sitecustomize":
    _run_shadowed_sitecustomize()
    install()
