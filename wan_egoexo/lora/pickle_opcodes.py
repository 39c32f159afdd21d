"""The pickle opcodes the bounded unpickler (bounded_unpickler.py) accepts, one small handler each,
written from the opcode descriptions in the standard library's ``pickletools``. A handler reads its
argument from the machine's input, works on its stack and memo, and calls back into the machine for
everything that costs more than one step (calls, copies, globals), so the machine can count it.
"""

from __future__ import annotations

import codecs
from typing import Protocol


class Machine(Protocol):
    """What a handler may use of the machine that runs it (bounded_unpickler's): its input, its stack
    and memo, and the calls it counts. Declared here, so that the opcodes need nothing of the machine's
    module and the machine's module imports this one, never the reverse."""

    stack: list
    metastack: list
    memo: dict
    opcodes: int  # read so far, this one included

    def take(self, count: int) -> bytes: ...
    def unpack(self, fmt: str): ...
    def line(self) -> bytes: ...
    def pop_mark(self) -> list: ...
    def top(self): ...
    def pop(self): ...
    def find_global(self, module, name): ...
    def persistent_load(self, pid): ...
    def call(self, target, args, kwargs=None): ...
    def set_items(self, target, pairs: list) -> None: ...
    def append(self, target, values: list) -> None: ...
    def build(self, target, state) -> None: ...


class PickleRefused(Exception):
    """The pickle breaks a rule (malformed, or over a limit); the message says which."""


CONTAINERS = (list, dict, set, frozenset, tuple, bytearray)

# Python hashes an int modulo this prime (sys.hash_info.modulus), so every int of the family
# 1 + k * (2**61 - 1) hashes to 1 and a dict of n of them costs n**2 / 2 probes (40,000 keys in a 1 MB
# file: 9.5 s). Below it an int hashes to itself (-1 excepted, which shares -2's hash): no two keys
# in that range share a hash, beyond that one pair, so no family of colliding int keys exists.
INT_KEY_LIMIT = 2**61 - 1
MAX_TUPLE_KEY_ITEMS = 16
MAX_TEXT_INT_CHARS = 256  # a text INT / LONG argument; binary LONGs are held to 255 bytes alike


def check_key(key) -> None:
    """Dict keys and set members must hash cheaply and without crafted collisions: None, bools, ints
    of magnitude below INT_KEY_LIMIT (whose hashes are all different), str and bytes (hashed with
    SipHash under a per-process secret, so collisions cannot be prepared in a file, and once per
    object), or short tuples / frozensets of None, bools, str and bytes. Numbers inside a tuple or
    frozenset are refused: their hash is computed from the items' hashes, unkeyed, so int pairs can
    be solved for a common hash as easily as ints; floats and complex numbers hash modulo the same
    prime as ints and are refused as keys too. Objects hashed by identity (the reader's own records
    of globals and tensors) are distinct objects with distinct hashes. Checkpoints key their dicts
    by str (and the optimizer state by small ints)."""
    kind = type(key)
    if key is None or kind in (bool, str, bytes) or kind.__hash__ is object.__hash__:
        return  # the last: records of ours (inert objects, tensor references), hashed by identity
    if kind is int:
        if -INT_KEY_LIMIT < key < INT_KEY_LIMIT:
            return
        raise PickleRefused(f"a dict key or set member is an integer of {key.bit_length()} bits; keys of magnitude "
                            "2**61 - 1 or more hash alike modulo that prime (a file of such keys costs quadratic time)")
    if kind in (tuple, frozenset):
        if len(key) > MAX_TUPLE_KEY_ITEMS:
            raise PickleRefused(f"a dict key or set member is a {kind.__name__} of {len(key)} items; at most "
                                f"{MAX_TUPLE_KEY_ITEMS} are read")
        if all(item is None or type(item) in (bool, str, bytes) for item in key):
            return
        raise PickleRefused(f"a dict key or set member is a {kind.__name__} holding something other than strings "
                            "(numbers or containers, whose combined hashes can be made to collide)")
    raise PickleRefused(f"a dict key or set member is a {kind.__name__}; only None, bools, ints below 2**61 - 1, "
                        "strings and flat tuples of strings are read")


STOP = object()  # what the STOP handler returns


def _decode_str(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def _int_text(raw: bytes):
    if len(raw) > MAX_TEXT_INT_CHARS:
        raise PickleRefused(f"it holds a text integer of {len(raw):,} characters; at most {MAX_TEXT_INT_CHARS} "
                            "are read")
    if raw in (b"00", b"01"):
        return raw == b"01"
    return int(raw.rstrip(b"L"), 0)


def _long(machine: Machine, size: int) -> int:
    if size > 255:
        raise PickleRefused(f"it holds a {size}-byte integer; at most 255 bytes are read")
    return int.from_bytes(machine.take(size), "little", signed=True)


def _string_text(raw: bytes) -> str:
    if len(raw) < 2 or raw[:1] != raw[-1:] or raw[:1] not in (b"'", b'"'):
        raise PickleRefused("a STRING opcode's argument is not quoted")
    return codecs.escape_decode(raw[1:-1])[0].decode("utf-8")


def _make_tuple(machine: Machine, count: int):
    items = machine.stack[-count:] if count else []
    if len(items) != count:
        raise PickleRefused("a TUPLE opcode needs more values than the stack holds")
    del machine.stack[len(machine.stack) - count:]
    machine.stack.append(tuple(items))


def _memo_get(machine: Machine, index: int):
    if index not in machine.memo:
        raise PickleRefused(f"it reads memo slot {index}, which was never written")
    machine.stack.append(machine.memo[index])


def _memo_put(machine: Machine, index: int):
    # A pickler numbers its memo slots 0, 1, 2, ... one per PUT, so no slot of a real pickle is beyond
    # the number of opcodes read so far. Held to that, memo indices are distinct small ints, which
    # hash to themselves: no memo slots that hash alike (text PUT takes any integer otherwise).
    value = machine.top()
    if not 0 <= index < machine.opcodes:
        raise PickleRefused(f"it writes memo slot {_brief_int(index)} after {machine.opcodes:,} opcodes; a pickle "
                            "numbers its memo slots from 0, one per PUT")
    machine.memo[index] = value


def _brief_int(value: int) -> str:
    return f"{value:,}" if abs(value) < 10**30 else f"of {value.bit_length()} bits"


def _memo_index_text(raw: bytes) -> int:
    if len(raw) > 20:
        raise PickleRefused(f"it names a memo slot with {len(raw):,} characters")
    return int(raw)


def _dict_from(machine: Machine, items: list) -> dict:
    result = {}
    machine.set_items(result, items)
    return result


def _frozenset_from(machine: Machine, items: list) -> frozenset:
    for item in items:
        check_key(item)
    return frozenset(items)


def _add_items(machine: Machine):
    items = machine.pop_mark()
    target = machine.top()
    if not isinstance(target, set):
        raise PickleRefused("ADDITEMS on something that is not a set")
    for item in items:
        check_key(item)
    target.update(items)


def _refuse(reason: str):
    def handler(machine: Machine):
        raise PickleRefused(reason)
    return handler


def _proto(m: Machine):
    if m.take(1)[0] > 5:
        raise PickleRefused("it uses a pickle protocol above 5")


def _mark(m: Machine):
    m.metastack.append(m.stack)
    m.stack = []


def _pop(m: Machine):
    if m.stack:
        m.stack.pop()
    else:
        m.pop_mark()


def _append(m: Machine):
    value = m.pop()
    m.append(m.top(), [value])


def _appends(m: Machine):
    items = m.pop_mark()
    m.append(m.top(), items)


def _setitem(m: Machine):
    value, key = m.pop(), m.pop()
    m.set_items(m.top(), [key, value])


def _setitems(m: Machine):
    items = m.pop_mark()
    m.set_items(m.top(), items)


def _global(m: Machine):
    module = _decode_str(m.line())
    m.stack.append(m.find_global(module, _decode_str(m.line())))


def _stack_global(m: Machine):
    name, module = m.pop(), m.pop()
    m.stack.append(m.find_global(module, name))


def _reduce(m: Machine):  # REDUCE and NEWOBJ: both are a call here
    args, target = m.pop(), m.pop()
    m.stack.append(m.call(target, args))


def _newobj_ex(m: Machine):
    kwargs, args, target = m.pop(), m.pop(), m.pop()
    m.stack.append(m.call(target, args, kwargs))


def _inst(m: Machine):
    module = _decode_str(m.line())
    target = m.find_global(module, _decode_str(m.line()))
    args = tuple(m.pop_mark())
    m.stack.append(m.call(target, args))


def _obj(m: Machine):
    items = m.pop_mark()
    if not items:
        raise PickleRefused("an OBJ opcode has no class")
    m.stack.append(m.call(items[0], tuple(items[1:])))


def _build(m: Machine):
    state = m.pop()
    m.build(m.top(), state)


def _push(read):
    def handler(m: Machine):
        value = read(m)  # first: reading may replace m.stack (opcodes that pop a MARK)
        m.stack.append(value)
    return handler


_PUSH = {
    "N": lambda m: None, 0x88: lambda m: True, 0x89: lambda m: False,
    "I": lambda m: _int_text(m.line()), "L": lambda m: _int_text(m.line()),
    "J": lambda m: m.unpack("<i"), "K": lambda m: m.take(1)[0], "M": lambda m: m.unpack("<H"),
    0x8A: lambda m: _long(m, m.take(1)[0]), 0x8B: lambda m: _long(m, m.unpack("<i")),
    "F": lambda m: float(m.line()), "G": lambda m: m.unpack(">d"),
    "S": lambda m: _string_text(m.line()),
    "T": lambda m: _decode_str(m.take(m.unpack("<i"))),
    "U": lambda m: _decode_str(m.take(m.take(1)[0])),
    "V": lambda m: m.line().decode("raw-unicode-escape"),
    "X": lambda m: _decode_str(m.take(m.unpack("<I"))),
    0x8C: lambda m: _decode_str(m.take(m.take(1)[0])),
    0x8D: lambda m: _decode_str(m.take(m.unpack("<Q"))),
    "B": lambda m: m.take(m.unpack("<I")),
    "C": lambda m: m.take(m.take(1)[0]),
    0x8E: lambda m: m.take(m.unpack("<Q")),
    0x96: lambda m: bytearray(m.take(m.unpack("<Q"))),
    ")": lambda m: (), "]": lambda m: [], "}": lambda m: {}, 0x8F: lambda m: set(),
    "t": lambda m: tuple(m.pop_mark()), "l": lambda m: m.pop_mark(),
    "d": lambda m: _dict_from(m, m.pop_mark()), 0x91: lambda m: _frozenset_from(m, m.pop_mark()),
    "2": lambda m: m.top(),
    "P": lambda m: m.persistent_load(m.line().decode("ascii")),
    "Q": lambda m: m.persistent_load(m.pop()),
}
_OTHER = {
    0x80: _proto, 0x95: lambda m: m.unpack("<Q"),  # FRAME: the whole pickle is in memory already
    ".": lambda m: STOP, "(": _mark, "0": _pop, "1": lambda m: m.pop_mark(),
    0x85: lambda m: _make_tuple(m, 1), 0x86: lambda m: _make_tuple(m, 2), 0x87: lambda m: _make_tuple(m, 3),
    "a": _append, "e": _appends, "s": _setitem, "u": _setitems, 0x90: _add_items,
    "g": lambda m: _memo_get(m, _memo_index_text(m.line())), "h": lambda m: _memo_get(m, m.take(1)[0]),
    "j": lambda m: _memo_get(m, m.unpack("<I")),
    "p": lambda m: _memo_put(m, _memo_index_text(m.line())), "q": lambda m: _memo_put(m, m.take(1)[0]),
    "r": lambda m: _memo_put(m, m.unpack("<I")), 0x94: lambda m: _memo_put(m, len(m.memo)),
    "c": _global, 0x93: _stack_global, "R": _reduce, 0x81: _reduce, 0x92: _newobj_ex, "i": _inst, "o": _obj,
    "b": _build,
    0x82: _refuse("it uses the copyreg extension registry (EXT1), which this reader does not"),
    0x83: _refuse("it uses the copyreg extension registry (EXT2), which this reader does not"),
    0x84: _refuse("it uses the copyreg extension registry (EXT4), which this reader does not"),
    0x97: _refuse("it uses out-of-band buffers (NEXT_BUFFER), which this reader does not"),
    0x98: _refuse("it uses out-of-band buffers (READONLY_BUFFER), which this reader does not"),
}
DISPATCH = {(ord(k) if isinstance(k, str) else k): _push(v) for k, v in _PUSH.items()}
DISPATCH.update({(ord(k) if isinstance(k, str) else k): v for k, v in _OTHER.items()})
