"""Reading the plain data in a pickle without unpickling it.

Flask-Session's ``filesystem`` and ``cachelib`` backends stored sessions as
pickles. Unpickling data from a store would let whoever can write to it run
code in the app, so :func:`read_pickle` walks the pickle's instructions,
described by :mod:`pickletools`, and carries out only those that build plain
data; what only running code could build is left as a :class:`Placeholder`.

Whoever can write to the store also chooses the pickle, so reading one costs
time and memory in proportion to its size, whatever it holds:

* An entry larger than :data:`MAX_ENTRY_BYTES` (1 MiB) is not read at all.
* A pickle may make at most :data:`MAX_VALUES` (100,000) values, counting every
  value it pushes again from its memo or by ``DUP``, and its memo may hold as
  many; no list, tuple or dictionary can hold more. A pickle that goes past
  this is not read.
* A number written out in digits (protocols 0 and 1) may have at most
  :data:`MAX_DIGITS` (4,300) digits, Python's own limit for turning text into
  an ``int``, checked before the text is converted.
* Nesting is not limited here, because nothing in the reader recurses: a
  pickle nested a million deep costs what a flat one of that size does.
  Whoever uses the result must walk it with a depth limit (the migration stops
  at :data:`~flask_prancer_session.serializer.MAX_DEPTH`, 64 levels).

Nothing the pickle holds is rendered as text (``repr``, ``str``, an f-string)
except a global's name, cut short, and no value the pickle chooses is hashed
unless Python randomises its hash: a ``set`` or ``frozenset`` is read as a
list of its items, and a dictionary key that is not a ``str`` is replaced by a
:class:`Placeholder` (integers hash to themselves, so a pickle could choose
thousands that collide). Session keys are strings anyway.
"""

from __future__ import annotations

import io
import pickletools
import struct
import typing as t

#: The largest entry that is read, in bytes; a larger one is not read at all.
#: Sessions are far smaller: Flask's own cookie session holds 4 KB.
MAX_ENTRY_BYTES = 1024 * 1024

#: More values than any real session holds. A pickle may make at most this
#: many values, counting each value again every time it is pushed from the
#: memo or by ``DUP``, so this also bounds the items of any one container and
#: the work and memory of reading an entry. The migration counts the values it
#: converts against the same limit, each shared value once per reference.
MAX_VALUES = 100_000

#: The most digits of a number written out as text (protocols 0 and 1):
#: Python's default limit for converting text to ``int``, which
#: ``sys.set_int_max_str_digits`` can lift; converting takes time that grows
#: faster than the number of digits, so the pickle's length is checked first.
MAX_DIGITS = 4300

#: How much of a global's name (module and qualified name) a placeholder
#: keeps, for the log.
_NAME_LENGTH = 100


class Unreadable(Exception):
    """An entry that holds no session we can read."""


class Placeholder:
    """Stands for what a pickle holds but is not read, such as an object
    that only running code could build, or a dictionary key that is not a
    string.

    Placeholders compare and hash by identity, so they can be dictionary keys
    without hashing anything the pickle chose.
    """

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        #: What it stands for, for the log.
        self.what = what


def brief(text: str, limit: int = _NAME_LENGTH) -> str:
    """Return ``text`` cut to ``limit`` characters, for a log line."""
    return text if len(text) <= limit else f"{text[:limit]}..."


def _built_by_code(name: str) -> Placeholder:
    return Placeholder(f"a {brief(name)} object, which only running code could build")


_NOT_A_STRING_KEY = "a dictionary key that is not a string"

# What each instruction does; the others are carried out by _placeholder.
_PUSH_ARG = 1  # pushes the value it carries
_PUSH_NEW = 2  # pushes a constant or a new empty container
_MARK = 3
_POP_MARK_INTO = 4  # LIST, TUPLE, DICT, FROZENSET
_TUPLE_N = 5
_APPEND = 6
_APPENDS = 7
_SETITEM = 8
_SETITEMS = 9
_PUT = 10
_MEMOIZE = 11
_GET = 12
_DUP = 13
_GLOBAL = 14
_STACK_GLOBAL = 15
_OLD_STRING = 16  # Python 2's str, which Python 3 pickles never hold
_NOTHING = 17  # PROTO, FRAME: no effect on the data
_STOP = 18
_OTHER = 19

_KINDS: dict[str, int] = {
    **dict.fromkeys(
        "INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT UNICODE"
        " SHORT_BINUNICODE BINUNICODE BINUNICODE8 SHORT_BINBYTES BINBYTES"
        " BINBYTES8".split(),
        _PUSH_ARG,
    ),
    **dict.fromkeys(
        "NONE NEWTRUE NEWFALSE EMPTY_LIST EMPTY_DICT EMPTY_TUPLE EMPTY_SET".split(), _PUSH_NEW
    ),
    "MARK": _MARK,
    **dict.fromkeys("LIST TUPLE DICT FROZENSET".split(), _POP_MARK_INTO),
    **dict.fromkeys("TUPLE1 TUPLE2 TUPLE3".split(), _TUPLE_N),
    "APPEND": _APPEND,
    # A set is read as a list, so ADDITEMS is APPENDS.
    **dict.fromkeys("APPENDS ADDITEMS".split(), _APPENDS),
    "SETITEM": _SETITEM,
    "SETITEMS": _SETITEMS,
    **dict.fromkeys("PUT BINPUT LONG_BINPUT".split(), _PUT),
    "MEMOIZE": _MEMOIZE,
    **dict.fromkeys("GET BINGET LONG_BINGET".split(), _GET),
    "DUP": _DUP,
    "GLOBAL": _GLOBAL,
    "STACK_GLOBAL": _STACK_GLOBAL,
    **dict.fromkeys("STRING BINSTRING SHORT_BINSTRING".split(), _OLD_STRING),
    **dict.fromkeys("PROTO FRAME".split(), _NOTHING),
    "STOP": _STOP,
}
# Sets become lists: their items are never hashed.
_NEW: dict[str, t.Callable[[], t.Any]] = {
    "NONE": lambda: None,
    "NEWTRUE": lambda: True,
    "NEWFALSE": lambda: False,
    "EMPTY_LIST": list,
    "EMPTY_DICT": dict,
    "EMPTY_TUPLE": tuple,
    "EMPTY_SET": list,
}
#: Arguments written as a line of digits, whose length is checked first.
_DIGIT_LINES = frozenset(
    {pickletools.decimalnl_short, pickletools.decimalnl_long, pickletools.floatnl}
)


class _Instruction(t.NamedTuple):
    opcode: pickletools.OpcodeInfo
    kind: int
    reader: t.Callable[[io.BytesIO], t.Any] | None
    digits: bool


_INSTRUCTIONS: dict[int, _Instruction] = {
    ord(opcode.code): _Instruction(
        opcode,
        _KINDS.get(opcode.name, _OTHER),
        opcode.arg.reader if opcode.arg is not None else None,
        opcode.arg in _DIGIT_LINES,
    )
    for opcode in pickletools.opcodes
}


class _TooMany(Exception):
    """The pickle makes more values than :data:`MAX_VALUES`."""


def read_pickle(data: bytes) -> t.Any:
    """Return the plain data in a pickle, without unpickling it.

    Only the instructions that build strings, bytes, numbers, lists, tuples,
    dictionaries and sets are carried out; sets come back as lists, and
    dictionary keys that are not strings as :class:`Placeholder` objects.
    Nothing is imported or called: an instruction that would look up a class
    or function, or call one, leaves a :class:`Placeholder` instead, which the
    value check refuses. The work is in proportion to ``len(data)``; see the
    module docstring for the limits.

    :raise Unreadable: if ``data`` is not a well-formed pickle, or goes past
        a limit.
    """
    if len(data) > MAX_ENTRY_BYTES:
        raise Unreadable(f"it is larger than {MAX_ENTRY_BYTES} bytes")
    try:
        return _read(data)
    except _TooMany:
        raise Unreadable(f"it holds more than {MAX_VALUES} values") from None
    except (ValueError, IndexError, KeyError, TypeError, struct.error, DeprecationWarning) as error:
        # The message may quote the pickle: it is cut short. A string with a
        # bad escape makes pickletools warn, an error where warnings are.
        raise Unreadable(f"it is not a well-formed pickle ({brief(str(error))})") from None
    except (RecursionError, MemoryError) as error:
        # Neither can happen within the limits; should one all the same, the
        # entry is unreadable rather than the request failing.
        raise Unreadable(f"it could not be read ({type(error).__name__})") from None


def _read(data: bytes) -> t.Any:
    file = io.BytesIO(data)
    read = file.read
    stack: list[t.Any] = []
    # The stacks under each mark, as pickle's own unpickler keeps them: an
    # instruction sees only what was pushed since the last mark.
    marks: list[list[t.Any]] = []
    # Memo indexes are small and dense in every pickle Python writes, and a
    # list needs no hashing.
    memo: list[t.Any] = []
    made = 0
    while True:
        code = read(1)
        if not code:
            raise ValueError("the pickle ends before its STOP instruction")
        instruction = _INSTRUCTIONS.get(code[0])
        if instruction is None:
            raise ValueError(f"unknown instruction {code!r}")
        opcode, kind, reader, digits = instruction
        arg: t.Any = None
        if reader is not None:
            if digits:
                _check_digit_line(data, file.tell())
            arg = reader(file)
        if kind == _STOP:
            if not stack:
                raise IndexError("STOP with an empty stack")
            return stack.pop()
        if kind in (_PUT, _MEMOIZE, _NOTHING, _APPEND, _SETITEM, _APPENDS, _SETITEMS):
            # Instructions that make no new value.
            if kind == _PUT or kind == _MEMOIZE:
                index = arg if kind == _PUT else len(memo)
                _put(memo, index, stack[-1])
            elif kind == _APPEND or kind == _SETITEM:
                _store_one(opcode, stack)
            elif kind == _APPENDS or kind == _SETITEMS:
                items = stack
                if not marks:
                    raise IndexError("no mark on the stack")
                stack = marks.pop()
                _store_many(opcode, stack, items)
            continue
        made += 1
        if made > MAX_VALUES:
            raise _TooMany
        if kind == _PUSH_ARG:
            stack.append(arg)
        elif kind == _PUSH_NEW:
            stack.append(_NEW[opcode.name]())
        elif kind == _GET:
            if not 0 <= arg < len(memo) or memo[arg] is _MISSING:
                raise KeyError(f"memo entry {brief(str(arg))} does not exist")
            stack.append(memo[arg])
        elif kind == _DUP:
            stack.append(stack[-1])
        elif kind == _MARK:
            marks.append(stack)
            stack = []
        elif kind == _POP_MARK_INTO:
            items = stack
            if not marks:
                raise IndexError("no mark on the stack")
            stack = marks.pop()
            stack.append(_from_items(opcode.name, items))
        elif kind == _TUPLE_N:
            count = int(opcode.name[-1])
            if len(stack) < count:
                raise IndexError("stack underflow")
            last = tuple(stack[-count:])
            del stack[-count:]
            stack.append(last)
        elif kind == _GLOBAL:
            stack.append(_built_by_code(str(arg).replace(" ", ".")))
        elif kind == _STACK_GLOBAL:
            qualname = stack.pop()
            module = stack.pop()
            if type(module) is str and type(qualname) is str:
                # Cut before joining: the names may be a megabyte long.
                stack.append(_built_by_code(f"{brief(module)}.{brief(qualname)}"))
            else:
                stack.append(Placeholder("an object looked up by a name that is not a string"))
        elif kind == _OLD_STRING:
            stack.append(Placeholder("a Python 2 string"))
        else:
            stack = _placeholder(opcode, stack, marks)


_MISSING: t.Any = object()


def _check_digit_line(data: bytes, start: int) -> None:
    """Refuse a line of more than :data:`MAX_DIGITS` digits before it is
    converted to a number."""
    # A sign, the digits, pickle's "L" suffix and the newline.
    if data.find(b"\n", start, start + MAX_DIGITS + 3) < 0:
        raise ValueError(f"a number of more than {MAX_DIGITS} digits, or no newline after it")


def _put(memo: list[t.Any], index: t.Any, value: t.Any) -> None:
    if type(index) is not int or index < 0:
        raise ValueError("a memo index that is not a natural number")
    if index >= MAX_VALUES:
        raise _TooMany
    if index >= len(memo):
        memo.extend([_MISSING] * (index - len(memo)))
        memo.append(value)
    else:
        memo[index] = value


def _key(value: t.Any) -> t.Any:
    """Return ``value`` as a dictionary key: a string, or a placeholder for
    anything else, whose hash the pickle cannot choose."""
    if type(value) is str or isinstance(value, Placeholder):
        return value
    return Placeholder(_NOT_A_STRING_KEY)


def _from_items(name: str, items: list[t.Any]) -> t.Any:
    """Return the container that LIST, TUPLE, DICT or FROZENSET makes of ``items``."""
    if name == "LIST" or name == "FROZENSET":  # a frozenset is read as a list
        return items
    if name == "TUPLE":
        return tuple(items)
    return dict(zip(map(_key, items[::2]), items[1::2], strict=True))


def _store_one(opcode: pickletools.OpcodeInfo, stack: list[t.Any]) -> None:
    """Carry out APPEND or SETITEM."""
    count = 3 if opcode.name == "SETITEM" else 2
    if len(stack) < count:
        raise IndexError("stack underflow")
    target = stack[-count]
    if isinstance(target, Placeholder):  # an object only code builds
        del stack[-count + 1 :]
    elif opcode.name == "APPEND" and type(target) is list:
        target.append(stack.pop())
    elif opcode.name == "SETITEM" and type(target) is dict:
        value = stack.pop()
        target[_key(stack.pop())] = value
    else:
        raise TypeError(f"{opcode.name} on a {type(target).__name__}")


def _store_many(opcode: pickletools.OpcodeInfo, stack: list[t.Any], items: list[t.Any]) -> None:
    """Carry out APPENDS, ADDITEMS or SETITEMS with the ``items`` above the mark."""
    if not stack:
        raise IndexError("stack underflow")
    target = stack[-1]
    if isinstance(target, Placeholder):
        return
    if opcode.name != "SETITEMS" and type(target) is list:
        target.extend(items)
    elif opcode.name == "SETITEMS" and type(target) is dict:
        target.update(zip(map(_key, items[::2]), items[1::2], strict=True))
    else:
        raise TypeError(f"{opcode.name} on a {type(target).__name__}")


def _placeholder(
    opcode: pickletools.OpcodeInfo, stack: list[t.Any], marks: list[list[t.Any]]
) -> list[t.Any]:
    """Take what ``opcode`` consumes off the stack and push placeholders for
    what it would produce, without doing what it does (look up a global, call
    something, build an object, fetch an out-of-band buffer); return the stack,
    which is another list if ``opcode`` pops a mark."""
    before = opcode.stack_before
    popped: list[t.Any] = []
    if pickletools.markobject in before:
        if not marks:
            raise IndexError("no mark on the stack")
        popped = stack
        stack = marks.pop()
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
    return stack
