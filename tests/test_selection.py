"""Backend selection at import time (``CAIO_IMPL``, ``default_implementation``, the order of
fallbacks) and module identity (each module's ``__name__``, and what the package exports).

Every check imports caio in a fresh interpreter, because selection happens once at import.
"""

import json
import os
from pathlib import Path

import pytest
from conftest import SELECTORS, run_python, short_name

import caio

PROBE = r"""
import json, sys, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import caio
selected = None
for name in ("linux_uring", "linux_aio", "thread_aio", "python_aio"):
    module = getattr(caio, name, None)
    if module is not None and caio.Context is module.Context:
        selected = module.__name__
adapter = None
for name in ("linux_uring", "linux_aio", "thread_aio", "python_aio"):
    module = getattr(caio, name + "_asyncio", None)
    # caio.AsyncioContext is the selected adapter with a fallback for resource limits
    if module is not None and caio.AsyncioContext.__mro__[1] is module.AsyncioContext:
        adapter = module.__name__
print(json.dumps({
    "doc": caio.Context.__doc__,
    "selected": selected,
    "adapter": adapter,
    "operation_ok": caio.Operation is sys.modules[selected].Operation if selected else False,
    "variants": [m.__name__ for m in caio.variants],
    "warnings": [[w.category.__name__, str(w.message)] for w in caught],
}))
"""

AVAILABLE = [m.__name__ for m in caio.variants]
AVAILABLE_SELECTORS = [SELECTORS[name] for name in AVAILABLE]
DEFAULT = AVAILABLE[0]


def probe(env_updates=None, env_remove=("CAIO_IMPL",)):
    proc = run_python(PROBE, env_updates=env_updates, env_remove=env_remove)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_selected(result, module_name):
    selector = SELECTORS[module_name]
    assert result["selected"] == module_name, result
    assert result["adapter"] == module_name + "_asyncio", result
    assert result["operation_ok"], result
    assert selector in (result["doc"] or ""), result


def caio_warnings(result):
    return [w for w in result["warnings"] if "CAIO_IMPL" in w[1]]


def test_default_selection_is_first_variant():
    result = probe()
    assert result["variants"] == AVAILABLE
    assert_selected(result, DEFAULT)
    assert caio_warnings(result) == []


@pytest.mark.parametrize(
    "module_name", [pytest.param(n, id=SELECTORS[n]) for n in AVAILABLE]
)
def test_caio_impl_selects_backend(module_name):
    result = probe({"CAIO_IMPL": SELECTORS[module_name]})
    assert_selected(result, module_name)
    assert caio_warnings(result) == []


@pytest.mark.parametrize("value", ["bogus", "THREAD", "thread_aio", "python_aio"])
def test_invalid_caio_impl_warns_and_keeps_default(value):
    result = probe({"CAIO_IMPL": value})
    assert_selected(result, DEFAULT)
    warnings = caio_warnings(result)
    assert len(warnings) == 1, result
    category, message = warnings[0]
    assert category == "RuntimeWarning"
    assert f"CAIO_IMPL contains unsupported value '{value}'" in message
    for selector in AVAILABLE_SELECTORS:
        assert repr(selector) in message


def test_empty_caio_impl_is_default():
    result = probe({"CAIO_IMPL": ""})
    assert_selected(result, DEFAULT)
    assert caio_warnings(result) == []


# ---------------------------------------------------------------------------------------------
# the default_implementation file next to caio/__init__.py


@pytest.fixture
def default_implementation_file():
    package_dir = Path(caio.__file__).resolve().parent
    path = package_dir / "default_implementation"
    if not os.access(str(package_dir), os.W_OK):
        pytest.skip(f"{package_dir} is not writable")
    if path.exists():
        pytest.skip(f"{path} already exists; not touching it")

    def write(text):
        path.write_text(text)

    try:
        yield write
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def other_than_default():
    """A selector that is not the default (so that a file or env var visibly changes it)."""
    if len(AVAILABLE) < 2:
        pytest.skip("needs at least two available backends")
    return AVAILABLE[-1]


def test_default_implementation_file_selects(default_implementation_file):
    target = other_than_default()
    default_implementation_file(
        "# comment line\n"
        "\n"
        "   \n"
        "not-a-backend\n"
        f"  {SELECTORS[target]}  \n"
        f"{SELECTORS[DEFAULT]}\n"
    )
    result = probe()
    assert_selected(result, target)
    assert caio_warnings(result) == []


def test_default_implementation_file_with_only_invalid_lines(default_implementation_file):
    default_implementation_file("# nothing valid here\nfoo\n#thread\n\n")
    result = probe()
    assert_selected(result, DEFAULT)
    assert caio_warnings(result) == []


def test_default_implementation_file_used_when_caio_impl_empty(default_implementation_file):
    target = other_than_default()
    default_implementation_file(SELECTORS[target] + "\n")
    result = probe({"CAIO_IMPL": ""})
    assert_selected(result, target)


def test_caio_impl_wins_over_file(default_implementation_file):
    target = other_than_default()
    default_implementation_file(SELECTORS[target] + "\n")
    result = probe({"CAIO_IMPL": SELECTORS[DEFAULT]})
    assert_selected(result, DEFAULT)
    assert caio_warnings(result) == []


def test_invalid_caio_impl_does_not_consult_file(default_implementation_file):
    target = other_than_default()
    default_implementation_file(SELECTORS[target] + "\n")
    result = probe({"CAIO_IMPL": "nonsense"})
    assert_selected(result, DEFAULT)
    assert len(caio_warnings(result)) == 1


# ---------------------------------------------------------------------------------------------
# module identity


@pytest.mark.parametrize("module", [pytest.param(m, id=short_name(m)) for m in caio.variants])
def test_module_name_identity(module):
    expected = "caio." + short_name(module)
    assert module.__name__ == expected
    assert getattr(caio, short_name(module)) is module
    proc = run_python(
        f"import {expected} as m, sys; print(m.__name__); "
        f"print(sys.modules[{expected!r}] is m); print(m.Context.__name__, m.Operation.__name__)"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[0] == expected
    assert lines[1] == "True"
    assert lines[2] == "Context Operation" or lines[2].split()[0] == "Context"


def test_package_exports():
    for name in ("AbstractContext", "AbstractOperation", "AsyncioContext", "Context",
                 "Operation", "variants", "variants_asyncio", "__version__", "__author__",
                 "linux_uring", "linux_aio", "thread_aio", "python_aio",
                 "linux_uring_asyncio", "linux_aio_asyncio", "thread_aio_asyncio",
                 "python_aio_asyncio"):
        assert name in caio.__all__, name
        assert hasattr(caio, name), name
    assert caio.python_aio is not None
    assert caio.python_aio_asyncio is not None
    assert isinstance(caio.__version__, str) and caio.__version__
    # variants are ordered and consistent with the adapters
    order = ["linux_uring", "linux_aio", "thread_aio", "python_aio"]
    names = [short_name(m) for m in caio.variants]
    assert names == sorted(names, key=order.index)
    assert [short_name(m) for m in caio.variants_asyncio] == names
    for module in caio.variants_asyncio:
        assert module.__name__ == f"caio.{short_name(module)}_asyncio"
        assert hasattr(module, "AsyncioContext")
