"""The suite's event loop switch (``CAIO_TEST_LOOP``, see conftest): every way the tests get an
asyncio loop gives the selected one, in this process and in the interpreters the tests spawn."""

import asyncio

from conftest import LOOPS, TEST_LOOP, run_python


def loop_kind(loop) -> str:
    if type(loop).__module__.split(".")[0] == "uvloop":
        return "uvloop"
    assert isinstance(loop, asyncio.BaseEventLoop), type(loop)
    return "asyncio"


async def running_loop_kind() -> str:
    return loop_kind(asyncio.get_running_loop())


def test_asyncio_run_runs_on_the_selected_loop():
    assert asyncio.run(running_loop_kind()) == TEST_LOOP


def test_new_event_loop_is_the_selected_loop():
    loop = asyncio.new_event_loop()
    try:
        assert loop_kind(loop) == TEST_LOOP
    finally:
        loop.close()


def test_loop_runner_runs_on_its_parameter(loop_runner, loop_factory, request):
    param = request.node.callspec.params["loop_factory"]
    assert loop_runner.run(running_loop_kind) == param
    # under uvloop an "asyncio" case would only repeat the uvloop one
    assert LOOPS == (["uvloop"] if TEST_LOOP == "uvloop" else ["asyncio", "uvloop"])


def test_spawned_interpreters_run_on_the_selected_loop():
    proc = run_python(
        "import asyncio\n"
        "async def kind():\n"
        "    return type(asyncio.get_running_loop()).__module__.split('.')[0]\n"
        "print(asyncio.run(kind()))\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.split() == [TEST_LOOP]
