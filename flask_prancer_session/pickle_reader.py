"""Reading the plain data in a pickle without unpickling it.

Flask-Session's ``filesystem`` and ``cachelib`` backends stored sessions as
pickles. Unpickling data from a store would let whoever can write to it run
code in the app, so :func:`read_pickle` walks the pickle's instructions with
:mod:`pickletools` and carries out only those that build plain data; what
only running code could build is left as a :class:`Placeholder`.
"""

from __future__ import annotations

import pickletools
import typing as t

#: More values than any real session holds. A pickle can refer to one list
#: many times, so this bounds the work of reading one.
MAX_VALUES = 100_000


class Unreadable(Exception):
    """An entry that holds no session we can read."""


class Placeholder:
    """Stands for what a pickle holds but is not read, such as an object
    that only running code could build."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        #: What it stands for, for the log.
        self.what = what


def _built_by_code(name: str) -> Placeholder:
    return Placeholder(f"a {name} object, which only running code could build")


_MARK = object()
#: The instructions that push the value they carry.
_LITERALS = frozenset(
    "INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT UNICODE SHORT_BINUNICODE"
    " BINUNICODE BINUNICODE8 SHORT_BINBYTES BINBYTES BINBYTES8".split()
)
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_EMPTY: dict[str, t.Callable[[], t.Any]] = {
    "EMPTY_LIST": list,
    "EMPTY_DICT": dict,
    "EMPTY_TUPLE": tuple,
    "EMPTY_SET": set,
}


def read_pickle(data: bytes) -> t.Any:
    """Return the plain data in a pickle, without unpickling it.

    The pickle's instructions are parsed by :mod:`pickletools` and only those
    that build strings, bytes, numbers, lists, tuples and dictionaries are
    carried out. Nothing is imported or called: an instruction that would
    look up a class or function, or call one, leaves a :class:`Placeholder`
    placeholder instead, which the value check refuses.

    :raise Unreadable: if ``data`` is not a well-formed pickle.
    """
    stack: list[t.Any] = []
    memo: dict[t.Any, t.Any] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name == "STOP":
                return stack.pop()
            if name in _LITERALS:
                stack.append(arg)
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name in _EMPTY:
                stack.append(_EMPTY[name]())
            elif name == "MARK":
                stack.append(_MARK)
            elif name == "LIST":
                stack.append(_pop_mark(stack))
            elif name == "TUPLE":
                stack.append(tuple(_pop_mark(stack)))
            elif name == "FROZENSET":
                stack.append(frozenset(map(_key, _pop_mark(stack))))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                count = int(name[-1])
                if len(stack) < count:
                    raise IndexError("stack underflow")
                last = tuple(stack[-count:])
                del stack[-count:]
                stack.append(last)
            elif name == "DICT":
                items = _pop_mark(stack)
                stack.append(dict(zip(map(_key, items[::2]), items[1::2], strict=True)))
            elif name == "APPEND" and len(stack) > 1 and type(stack[-2]) is list:
                stack[-2].append(stack.pop())
            elif name == "SETITEM" and len(stack) > 2 and type(stack[-3]) is dict:
                value = stack.pop()
                key = stack.pop()
                stack[-1][_key(key)] = value
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                items = _pop_mark(stack)
                target = stack[-1]
                if name == "APPENDS" and type(target) is list:
                    target.extend(items)
                elif name == "ADDITEMS" and type(target) is set:
                    target.update(map(_key, items))
                elif name == "SETITEMS" and type(target) is dict:
                    target.update(zip(map(_key, items[::2]), items[1::2], strict=True))
                else:
                    stack[-1] = target if isinstance(target, Placeholder) else _built_by_code(name)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "GLOBAL":
                stack.append(_built_by_code(str(arg).replace(" ", ".")))
            elif name == "STACK_GLOBAL":
                qualname = stack.pop()
                module = stack.pop()
                stack.append(_built_by_code(f"{module}.{qualname}"))
            else:
                _placeholder(opcode, stack)
    except (ValueError, IndexError, KeyError, TypeError) as error:
        raise Unreadable(f"it is not a well-formed pickle ({error})") from error
    raise Unreadable("it is not a well-formed pickle")  # genops raises before this


def _pop_mark(stack: list[t.Any]) -> list[t.Any]:
    """Pop and return the items above the topmost mark, and the mark."""
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is _MARK:
            items = stack[index + 1 :]
            del stack[index:]
            return items
    raise IndexError("no mark on the stack")


def _key(value: t.Any) -> t.Any:
    """Return ``value`` as a dictionary key or set item, or a placeholder if
    it is not a scalar: hashing a tuple nested a million deep would exhaust
    the C stack."""
    if type(value) in (str, int, float, bool, bytes) or value is None:
        return value
    if isinstance(value, Placeholder):
        return value
    return Placeholder(f"a {type(value).__name__} as a dictionary key or set item")


def _placeholder(opcode: pickletools.OpcodeInfo, stack: list[t.Any]) -> None:
    """Take what ``opcode`` consumes off the stack and push placeholders for
    what it would produce, without doing what it does (look up a global, call
    something, build an object, fetch an out-of-band buffer)."""
    before = opcode.stack_before
    popped: list[t.Any] = []
    if pickletools.markobject in before:
        popped = _pop_mark(stack)
        count = before.index(pickletools.markobject)
    else:
        count = len(before)
    if count > len(stack):
        raise IndexError("stack underflow")
    if count:
        popped = stack[-count:] + popped
        del stack[-count:]
    made = next((item for item in popped if isinstance(item, Placeholder)), None)
    for _ in opcode.stack_after:
        stack.append(made or _built_by_code(opcode.name))


class Budget:
    """Counts the values read from one entry."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise Unreadable(f"it holds more than {MAX_VALUES} values")
