"""The pickle reader that takes the plain data out of Flask-Session's
pickles: it runs no code, and its work is in proportion to the pickle's size
whatever the pickle holds."""

from __future__ import annotations

import contextlib
import copyreg
import datetime as dt
import logging
import os
import pickle
import struct
import sys
import time
import tracemalloc
import typing as t
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import assume
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from flask_prancer_session.migration import values as migration
from flask_prancer_session.migration.pickle_reader import MAX_DIGITS
from flask_prancer_session.migration.pickle_reader import MAX_ENTRY_BYTES
from flask_prancer_session.migration.pickle_reader import MAX_VALUES
from flask_prancer_session.migration.pickle_reader import Placeholder
from flask_prancer_session.migration.pickle_reader import read_pickle
from flask_prancer_session.migration.pickle_reader import Unreadable
from flask_prancer_session.migration.values import session_values
from flask_prancer_session.serializer import make_serializer

LOGGER = "flask_prancer_session.migration"
#: Integers that all hash to 0: Python's int hash is the value modulo this.
MODULUS = 2**61 - 1

# Building pickles by hand, instruction by instruction.


def text(value: str) -> bytes:
    """BINUNICODE: push ``value``."""
    raw = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def integer(value: int) -> bytes:
    """LONG1: push ``value``."""
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def get(index: int) -> bytes:
    """LONG_BINGET: push memo entry ``index``."""
    return b"j" + struct.pack("<I", index)


def session(*values: bytes) -> bytes:
    """A protocol 5 pickle of ``{"k0": value0, "k1": value1, ...}``, each
    value being the instructions that push it."""
    items = b"".join(text(f"k{number}") + value for number, value in enumerate(values))
    return b"\x80\x05}(" + items + b"u."


def shared_list(levels: int) -> bytes:
    """Push a list whose two items are one list, whose two items are one
    list... ``levels`` deep: 2**levels values once expanded."""
    out = b"]\x940"  # [] as memo entry 0, popped
    for level in range(levels):
        out += b"(" + get(level) * 2 + b"l\x940"  # [prev, prev] as entry level + 1
    return out + get(levels)


def deep_tuple(depth: int) -> bytes:
    """Push () wrapped in ``depth`` 1-tuples."""
    return b")" + b"\x85" * depth


def looked_up(module: bytes) -> bytes:
    """STACK_GLOBAL with ``module`` (the instructions pushing it) as the
    module, which a f-string once rendered whole."""
    return module + text("x") + b"\x93"


def colliding_keys(count: int, how: str) -> bytes:
    """Push a container of ``count`` integers (or keys) that all hash to 0."""
    keys = [integer(MODULUS * number) for number in range(1, count + 1)]
    if how == "DICT":
        return b"(" + b"".join(key + b"N" for key in keys) + b"d"
    if how == "SETITEMS":
        return b"}(" + b"".join(key + b"N" for key in keys) + b"u"
    if how == "SETITEM":
        return b"}" + b"".join(key + b"Ns" for key in keys)
    if how == "ADDITEMS":
        return b"\x8f(" + b"".join(keys) + b"\x90"
    if how == "FROZENSET":
        return b"(" + b"".join(keys) + b"\x91"
    assert how == "PUT"  # memo indexes written out in digits
    return b"N" + b"".join(b"p%d\n" % (MODULUS * number) for number in range(1, count + 1))


def read_session(data: bytes) -> dict[str, t.Any] | None:
    """Read ``data`` as the migration does; ``None`` if it is unreadable."""
    try:
        return session_values(read_pickle(data))
    except Unreadable:
        return None


# Plain data, read back exactly.

TEXT = st.text(st.characters(blacklist_categories=["Cs"]))
#: Session keys: our sessions refuse NUL in a key.
NAMES = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(TEXT, inner, max_size=4)
    ),
    max_leaves=20,
)


def _as_lists(value: t.Any) -> t.Any:
    if isinstance(value, (list, tuple)):
        return [_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    return value


def _holds_bytes(value: t.Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(map(_holds_bytes, value))
    if isinstance(value, dict):
        return any(map(_holds_bytes, value.values()))
    return isinstance(value, bytes)


@given(st.dictionaries(NAMES, PLAIN, max_size=5), st.integers(0, 5))
def test_pickle_reader_reads_plain_data_in_every_protocol(
    data: dict[str, t.Any], protocol: int
) -> None:
    # Before protocol 3, bytes are pickled as a call to _codecs.encode.
    assume(protocol >= 3 or not _holds_bytes(data))
    assert session_values(read_pickle(pickle.dumps(data, protocol))) == _as_lists(data)


@pytest.mark.parametrize("protocol", range(6))
def test_sets_are_read_as_lists_of_their_items(protocol: int) -> None:
    data = {"tags": {"a"}, "frozen": frozenset({3}), "empty": set()}
    read = read_pickle(pickle.dumps(data, protocol))
    if protocol < 4:  # sets were a call to the set type before protocol 4
        assert isinstance(read["tags"], Placeholder)
    else:
        assert read == {"tags": ["a"], "frozen": [3], "empty": []}


def test_keys_that_are_not_strings_are_placeholders() -> None:
    read = read_pickle(pickle.dumps({"k": {1: "one", None: 2, "s": 3}}, 5))
    keys = list(read["k"])
    assert isinstance(keys[0], Placeholder)
    assert isinstance(keys[1], Placeholder)
    assert keys[2] == "s"
    assert "not a string" in keys[0].what


# Refused, not crashed on.


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        pickle.dumps({"a": 1})[:-3],  # truncated
        b"\x80\x05s.",  # SETITEM on an empty stack
        b"\x80\x05e.",  # APPENDS without a mark
        b"\x80\x05h\x07.",  # a memo entry that does not exist
        b"\x80\x05.",  # STOP on an empty stack
        b"\x80\x05\xff.",  # no such instruction
        b"\x80\x05}(K\x01d.",  # DICT with a key but no value
        b"\x80\x05}(K\x01u.",  # SETITEMS likewise
        b"\x80\x05}(K\x01e.",  # APPENDS to a dictionary
        b"\x80\x05]K\x01K\x02s.",  # SETITEM on a list
        b"\x80\x05K\x01(\x85.",  # TUPLE1 with nothing above the mark
        b"\x80\x05Np-1\n.",  # a negative memo index
        b"\x80\x05Np00\n.",  # ...or one that is a boolean
    ],
)
def test_pickle_reader_refuses_what_is_not_a_pickle(data: bytes) -> None:
    with pytest.raises(Unreadable):
        read_pickle(data)


@pytest.mark.parametrize(
    "prefix",
    [
        b"X" + struct.pack("<I", 0xFFFFFFFF),  # BINUNICODE
        b"B" + struct.pack("<I", 0x80000000),  # BINBYTES
        b"T" + struct.pack("<i", 0x7FFFFFFF),  # BINSTRING
        b"\x8d" + struct.pack("<Q", 2**63),  # BINUNICODE8
        b"\x8e" + struct.pack("<Q", 2**64 - 1),  # BINBYTES8
        b"\x96" + struct.pack("<Q", 2**40),  # BYTEARRAY8
        b"\x8b" + struct.pack("<i", 0x7FFFFFFF),  # LONG4
        b"\x95" + struct.pack("<Q", 2**63),  # FRAME
        b"Nr" + struct.pack("<I", 0xFFFFFFFF),  # LONG_BINPUT
        b"j" + struct.pack("<I", 0xFFFFFFFF),  # LONG_BINGET
        b"Np" + b"9" * 4000 + b"\n",  # PUT
        b"g" + b"9" * 4000 + b"\n",  # GET
        b"Np%d\n" % MAX_VALUES,  # just past the largest memo index
    ],
)
def test_huge_lengths_and_memo_indexes_are_refused_at_once(prefix: bytes) -> None:
    data = b"\x80\x05" + prefix + b"x" * 100 + b"."
    with pytest.raises(Unreadable):
        read_pickle(data)
    bounded(data, lambda: read_pickle(data))


def test_larger_entries_are_not_read() -> None:
    fits = pickle.dumps({"k": "x" * (MAX_ENTRY_BYTES - 100)}, 5)
    assert read_pickle(fits) == {"k": "x" * (MAX_ENTRY_BYTES - 100)}
    with pytest.raises(Unreadable, match="larger than"):
        read_pickle(pickle.dumps({"k": "x" * MAX_ENTRY_BYTES}, 5))


@pytest.fixture
def int_digits_unlimited() -> t.Iterator[None]:
    """Lift Python's limit on converting text to int, as an app may."""
    if not hasattr(sys, "set_int_max_str_digits"):
        pytest.skip("this Python has no limit on int digits")
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    yield
    sys.set_int_max_str_digits(before)


@pytest.mark.usefixtures("int_digits_unlimited")
@pytest.mark.parametrize("instruction", [b"I", b"L"])
def test_numbers_in_digits_are_refused_before_conversion(instruction: bytes) -> None:
    suffix = b"L" if instruction == b"L" else b""
    fits = session(instruction + b"9" * MAX_DIGITS + suffix + b"\n")
    assert read_pickle(fits) == {"k0": int("9" * MAX_DIGITS)}
    # Converting these digits takes seconds, growing with their square.
    data = session(instruction + b"9" * (MAX_ENTRY_BYTES - 100) + suffix + b"\n")
    bounded(data, lambda: read_pickle(data))
    with pytest.raises(Unreadable, match="digits"):
        read_pickle(data)


# No code runs.


class MakeDirectory:
    """Unpickling this makes a directory: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[t.Any, ...]:
        return os.mkdir, (str(self.path),)


class SetsState:
    """Unpickling this calls os.mkdir through BUILD (``__setstate__``)."""

    __setstate__ = os.mkdir  # BUILD calls it with the state


def code_running_pickles(marker: Path) -> dict[str, bytes]:
    """Pickles that run code, each through another instruction."""
    path = str(marker).encode()
    quoted = repr(str(marker)).encode()
    here = SetsState.__module__.encode()
    return {
        "REDUCE+STACK_GLOBAL": pickle.dumps({"user": MakeDirectory(marker)}, 5),
        "REDUCE+GLOBAL": pickle.dumps({"user": MakeDirectory(marker)}, 0),
        "INST": b"(dp0\nS'user'\n(V" + path + b"\nios\nmkdir\ns.",
        "OBJ": b"\x80\x02}X\x04\x00\x00\x00user(cos\nmkdir\n" + text(str(marker)) + b"os.",
        "BUILD": b"\x80\x02c" + here + b"\nSetsState\n)\x81" + text(str(marker)) + b"b.",
        "NEWOBJ": b"\x80\x02cos\nmkdir\n(" + text(str(marker)) + b"t\x81.",
        "EXT": b"\x80\x02\x82\xf0(" + text(str(marker)) + b"tR.",
        "PERSID+BINPERSID": b"\x80\x02PX\nQ.",
        "protocol 0 text": b"cos\nmkdir\n(S" + quoted + b"\ntR.",
    }


@pytest.mark.parametrize("name", list(code_running_pickles(Path("x"))))
def test_no_pickle_runs_code(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    data = code_running_pickles(marker)[name]
    read = read_pickle(data)
    assert not marker.exists()
    assert read_session(data) in ({}, None)
    found = read if isinstance(read, Placeholder) else next(iter(read.values()))
    assert isinstance(found, Placeholder)


@pytest.mark.parametrize(
    "name",
    ["REDUCE+STACK_GLOBAL", "REDUCE+GLOBAL", "INST", "OBJ", "BUILD", "EXT", "protocol 0 text"],
)
def test_the_code_running_pickles_would_run(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    data = code_running_pickles(marker)[name]
    copyreg.add_extension("os", "mkdir", 0xF0)
    try:
        with contextlib.suppress(Exception):  # it fails once the directory exists
            pickle.loads(data)
    finally:
        copyreg.remove_extension("os", "mkdir", 0xF0)
    assert marker.is_dir()


def test_a_globals_name_is_cut_short_for_the_log() -> None:
    data = session(b"c" + b"m" * 500_000 + b"\n" + b"n" * 10 + b"\n")
    placeholder = read_pickle(data)["k0"]
    assert "mmmm" in placeholder.what
    assert len(placeholder.what) < 300


# Work in proportion to the size of the pickle.


def bounded(data: bytes, read: t.Callable[[], object], *, memory: bool = True) -> None:
    """Check that ``read``, reading ``data``, takes memory (unless
    ``memory`` is false: tracing is slow) and time in proportion to the size
    of ``data``; it may raise :exc:`Unreadable`.

    Memory is measured exactly (the peak of what Python allocates, on a second
    run). CPU time (of this thread, on the first) is only a backstop, as a
    loaded machine inflates it several times: the bound is twenty times what
    the reader takes (half a second for 1 MiB at worst), which work growing
    with the square of the size still passes by far: 1 MB of colliding keys
    took 44 s, a 237-byte pickle 2 minutes and 3.5 GB.
    """
    start = time.thread_time()
    with contextlib.suppress(Unreadable):
        read()
    took = time.thread_time() - start
    assert took <= 2 + 10e-6 * len(data), f"{took:.2f} s to read {len(data)} bytes"
    if not memory:
        return
    tracemalloc.start()
    try:
        with contextlib.suppress(Unreadable):
            read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 1024 * 1024 + 400 * len(data), f"{peak} bytes to read {len(data)}"


#: Values that each cost little to write and much to read, once.
HOSTILE = st.one_of(
    st.builds(shared_list, st.integers(1, 24)),
    st.builds(looked_up, st.builds(shared_list, st.integers(1, 24))),
    st.builds(deep_tuple, st.integers(1, 5_000)),
    st.builds(looked_up, st.builds(deep_tuple, st.integers(1, 5_000))),
    st.builds(
        colliding_keys,
        st.integers(1, 30_000),
        st.sampled_from(["DICT", "SETITEMS", "SETITEM", "ADDITEMS", "FROZENSET", "PUT"]),
    ),
    # A shared dictionary with a long key that is not ASCII.
    st.builds(
        lambda size, count: b"(}\x94" + text("é" * size) + b"Ns0" + get(0) * count + b"l",
        st.integers(1, 100_000),
        st.integers(1, 20_000),
    ),
    # Many of one cheap instruction.
    st.builds(
        lambda unit, count: b"N" + unit * count,
        st.sampled_from([b"\x80\x05", b"q\x00", b"p0\n", b"2", b"(", b"\x94", b"(1", b"N0"]),
        st.integers(1, 20_000),
    ),
    st.builds(
        lambda prefix: prefix + b"\x00" * 16,
        st.sampled_from(
            [b"X\xff\xff\xff\xff", b"\x8d" + b"\xff" * 8, b"\x8b\xff\xff\xff\x7f", b"j\xff" * 4]
        ),
    ),
)


def nothing_chosen_is_hashed(read: object) -> bool:
    """Whether no dictionary in what a pickle holds has a key whose hash the
    pickle chose (only strings, whose hashes Python randomises, and
    placeholders, hashed by identity), and no set holds anything.

    This is what keeps reading linear, checked exactly: integers hash to
    themselves, so a pickle can choose thousands whose hashes collide.
    """
    seen: set[int] = set()
    todo = [read]
    while todo:
        value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, (set, frozenset)):
            return False
        if isinstance(value, dict):
            if not all(type(key) is str or isinstance(key, Placeholder) for key in value):
                return False
            todo.extend(value.values())
        elif isinstance(value, (list, tuple)):
            todo.extend(value)
    return True


def within_the_limits(convert: t.Callable[[], object]) -> None:
    """Check that ``convert``, converting what a pickle holds to session
    values, takes what the limits allow, however small the pickle: it may
    refer to one value many times, up to :data:`MAX_VALUES` values and
    :data:`MAX_ENTRY_BYTES` of text in all, which JSON writes in 12 MiB at
    most (a character outside the BMP is escaped as 12). Memory is measured
    exactly; CPU time (a third of a second at worst) is a backstop, the work
    being counted exactly by the caller."""
    start = time.thread_time()
    with contextlib.suppress(Unreadable):
        convert()
    took = time.thread_time() - start
    tracemalloc.start()
    try:
        with contextlib.suppress(Unreadable):
            convert()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 48 * 1024 * 1024, f"{peak} bytes to convert"
    assert took <= 10, f"{took:.2f} s to convert"


@settings(
    max_examples=60,
    # Wall time, which a loaded machine stretches: the bounds are checked inside.
    deadline=dt.timedelta(minutes=2),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(HOSTILE, min_size=1, max_size=3))
def test_hostile_pickles_cost_in_proportion_to_their_size(values: list[bytes]) -> None:
    data = session(*values)
    bounded(data, lambda: read_pickle(data))
    try:
        read = read_pickle(data)
    except Unreadable:
        return
    assert nothing_chosen_is_hashed(read)
    # The work of converting, counted exactly: values looked at, characters
    # of names checked, characters written.
    converted = checked = written = 0
    original_plain, original_is_text = migration._plain, migration._is_text
    serializer = make_serializer()

    def plain(value: t.Any, depth: int, budget: migration.Budget) -> t.Any:
        nonlocal converted
        converted += 1
        return original_plain(value, depth, budget)

    def is_text(value: str) -> bool:
        nonlocal checked
        checked += len(value)
        return bool(original_is_text(value))

    class Counting:
        def dumps(self, value: t.Any) -> str:
            nonlocal written
            out = serializer.dumps(value)
            written += len(out)
            return out

        def loads(self, value: str) -> t.Any:
            return serializer.loads(value)

    logging.disable(logging.WARNING)
    try:
        with (
            mock.patch.object(migration, "_plain", plain),
            mock.patch.object(migration, "_is_text", is_text),
        ):
            within_the_limits(lambda: session_values(read, Counting()))
    finally:
        logging.disable(logging.NOTSET)
    # Over the two runs, however often the pickle refers to one value: a
    # character is written as up to 12 characters, any other value as up to 32.
    assert converted <= 2 * (MAX_VALUES + len(values))
    assert checked <= 2 * 2 * MAX_ENTRY_BYTES
    assert written <= 2 * (12 * MAX_ENTRY_BYTES + 32 * MAX_VALUES)


@pytest.mark.parametrize("levels", [24, 200])
def test_shared_lists_rendered_as_a_name_cost_nothing(levels: int) -> None:
    # 2**levels items once rendered: 3.5 GB and 2 minutes for a 237-byte entry.
    data = session(looked_up(shared_list(levels)))
    bounded(data, lambda: read_pickle(data))
    assert isinstance(read_pickle(data)["k0"], Placeholder)
    assert read_session(data) == {}


def test_deeply_nested_name_is_not_rendered() -> None:
    data = session(looked_up(deep_tuple(50_000)), text("ok"))
    bounded(data, lambda: read_pickle(data))
    assert read_session(data) == {"k1": "ok"}  # no RecursionError


@pytest.mark.parametrize("how", ["DICT", "SETITEMS", "SETITEM", "ADDITEMS", "FROZENSET"])
def test_colliding_integer_keys_are_never_hashed(how: str) -> None:
    # 1 MB of them took 44 s: each insertion compared with all before it.
    count = 40_000
    data = session(colliding_keys(count, how), text("ok"))
    bounded(data, lambda: read_pickle(data), memory=False)
    within_the_limits(lambda: read_session(data))
    container = read_pickle(data)["k0"]
    assert len(container) == count
    assert nothing_chosen_is_hashed(container)
    if how in ("ADDITEMS", "FROZENSET"):  # a set is read as a list
        assert type(container) is list
        assert read_session(data) == {
            "k0": [MODULUS * number for number in range(1, count + 1)],
            "k1": "ok",
        }
    else:
        assert all(isinstance(key, Placeholder) for key in container)
        assert read_session(data) == {"k1": "ok"}


def test_colliding_memo_indexes_are_refused() -> None:
    data = session(colliding_keys(40_000, "PUT"))
    bounded(data, lambda: read_pickle(data), memory=False)
    with pytest.raises(Unreadable, match="more than"):
        read_pickle(data)


def test_a_megabyte_of_cheap_instructions_is_read_quickly() -> None:
    # 10 MB took 7 s; 1 MiB is the most that is read.
    data = b"\x80\x05N" + b"p0\n" * ((MAX_ENTRY_BYTES - 10) // 3) + b"."
    bounded(data, lambda: read_pickle(data), memory=False)
    assert read_pickle(data) is None


def test_shared_lists_cannot_blow_up() -> None:
    # Each level refers twice to the one below: 2**40 values once expanded.
    value: list[t.Any] = ["x"]
    for _ in range(40):
        value = [value, value]
    with pytest.raises(Unreadable, match="more than"):
        session_values(read_pickle(pickle.dumps({"bomb": value}, 5)))


def test_a_shared_long_key_is_checked_once_per_budget() -> None:
    data = session(b"(}\x94" + text("é" * 300_000) + b"Ns0" + get(0) * 50_000 + b"l")
    checked = 0
    original = migration._is_text

    def is_text(value: str) -> bool:
        nonlocal checked
        checked += len(value)
        return bool(original(value))

    # Before, every reference checked the key again: 15 billion characters.
    with mock.patch.object(migration, "_is_text", is_text):
        with pytest.raises(Unreadable, match="bytes"):
            session_values(read_pickle(data))
    assert checked <= 2 * MAX_ENTRY_BYTES


def test_deep_values_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    deep: list[t.Any] = []
    for _ in range(100):
        deep = [deep]
    data = read_pickle(pickle.dumps({"deep": deep, "ok": 1}, 5))
    with caplog.at_level(logging.WARNING, LOGGER):
        assert session_values(data) == {"ok": 1}
    assert "levels deep" in caplog.records[0].getMessage()


def test_deeply_nested_tuple_key_is_not_hashed() -> None:
    # TUPLE1 ninety thousand times, then used as a dictionary key.
    data = b"\x80\x05}K\x01" + b"\x85" * 90_000 + b"K\x02s."
    assert session_values(read_pickle(data)) == {}


def test_self_containing_list_is_left_out() -> None:
    loop: list[t.Any] = []
    loop.append(loop)
    assert session_values(read_pickle(pickle.dumps({"loop": loop, "ok": "yes"}))) == {"ok": "yes"}


# Real pickles, damaged.

SESSIONS = st.dictionaries(NAMES, PLAIN, min_size=1, max_size=5)


@settings(max_examples=200, deadline=dt.timedelta(minutes=1))
@given(
    SESSIONS,
    st.integers(0, 5),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.sampled_from(["replace", "insert", "delete"]),
)
def test_damaged_real_pickles_are_refused_quickly(
    data: dict[str, t.Any], protocol: int, edits: list[tuple[int, int]], how: str
) -> None:
    assume(protocol >= 3 or not _holds_bytes(data))
    damaged = bytearray(pickle.dumps(data, protocol))
    for position, byte in edits:
        position %= len(damaged)
        if how == "replace":
            damaged[position] = byte
        elif how == "insert":
            damaged[position:position] = bytes([byte])
        elif len(damaged) > 1:
            del damaged[position]
    logging.disable(logging.WARNING)
    try:
        # Read, or Unreadable: nothing else.
        bounded(bytes(damaged), lambda: read_pickle(bytes(damaged)))
        with contextlib.suppress(Unreadable):
            assert nothing_chosen_is_hashed(read_pickle(bytes(damaged)))
        read_session(bytes(damaged))
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("data", [b"(dp0\nV\\u01\np1\nNs.", b"(dp0\nS'\\q'\np1\nNs."])
def test_a_bad_escape_in_an_old_protocol_string_is_unreadable(data: bytes) -> None:
    # pickletools warns of the escape: under -W error, as in this suite, the
    # warning is raised, and must read as a damaged entry like any other.
    with pytest.raises(Unreadable):
        read_pickle(data)
