"""Operation.read converts the adapters' call (in-range ints, positional) itself and hands
every other call to the general parser: both must build the same op and raise the same
errors."""

import pytest


class Index:
    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


def fields(op):
    return (op.fileno, op.offset, op.nbytes, op.priority)


def outcome(make):
    try:
        return ("ok", fields(make()))
    except Exception as exc:  # noqa: BLE001 (the outcome is what is compared)
        return (type(exc), str(exc))


def test_every_way_of_passing_the_same_arguments_builds_the_same_op(native_backend, files):
    fd = files.open(b"r" * 64)
    read = native_backend.Operation.read
    expected = fields(read(10, fd, 3, 1))
    for make in (
        lambda: read(10, fd, 3, 1),
        lambda: read(nbytes=10, fd=fd, offset=3, priority=1),
        lambda: read(10, fd, offset=3, priority=1),
        lambda: read(10, Index(fd), Index(3), 1),
        lambda: read(10, fd, 3, True),
        lambda: read(10, fd, 3, 1, flags=0),
    ):
        assert fields(make()) == expected
    assert fields(read(10, fd)) == fields(read(10, fd, 0, 0)) == (fd, 0, 10, 0)


@pytest.mark.parametrize("args", [
    (-1, "fd"), (2**63, "fd"), (2**64 + 4, "fd"),          # nbytes: masked, then refused
    (10, -1), (10, 2**32 + 3), (10, 2**40),                 # fd: masked as unsigned int
    (10, "fd", -1), (10, "fd", -2), (10, "fd", 2**63), (10, "fd", 2**64 - 1),
    (10, "fd", 0, -1), (10, "fd", 0, 2**15), (10, "fd", 0, 2**16 + 2), (10, "fd", 0, 2**40),
    ("10", "fd"), (10.0, "fd"), (Index(10), "fd"), (10, "fd", 1.5), (10,),
])
def test_the_fast_conversion_agrees_with_the_general_parser(native_backend, files, args):
    """Each call twice: as the adapters make it (positional, exact ints: the fast path when
    in range) and with a keyword (always the general parser)."""
    fd = files.open(b"r" * 64)
    args = tuple(fd if a == "fd" else a for a in args)
    read = native_backend.Operation.read
    names = ("nbytes", "fd", "offset", "priority")
    positional = outcome(lambda: read(*args))
    keyword = outcome(lambda: read(*args[:-1], **{names[len(args) - 1]: args[-1]}))
    assert positional == keyword
