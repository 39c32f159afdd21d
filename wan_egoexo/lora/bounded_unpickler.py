"""A pickle interpreter for untrusted files whose cost is bounded by the file: it never runs code
from the pickle, and every opcode, copy and named global is counted against stated limits.

Why our own interpreter instead of ``pickle.Unpickler`` with an overridden ``find_class``: the
standard unpickler runs allowed callables and builds objects in C with no hook to count work, so a
tiny file can still cost gigabytes or minutes. Measured on issue 11's files: a ``LONG_BINPUT`` to
memo slot 2**28 makes the C unpickler size its memo table to 4 GiB of pointers (a 20-byte pickle);
a million ``GLOBAL`` opcodes (7.8-24 KB deflated) cost 12 s and 2.2 GB; and copying constructors
(``tuple(memo[i])`` repeated) or ``BUILD`` with a memoised state do work quadratic in the file size.
Here the memo is a dict, nothing is ever called except the small set of constructors below and the
caller's own hooks, and:

- every opcode counts against ``max_opcodes``;
- every element a constructor copies counts against ``max_copied_items``;
- each distinct global named counts against ``max_globals`` (the rest are memoised look-ups);
- memo slots are numbered below the count of opcodes read (a pickler numbers them 0, 1, 2, ...);
- dict keys and set members are None, bools, ints of magnitude below 2**61 - 1, strings, or short
  flat tuples of strings (``pickle_opcodes.check_key``): hashing is never deep, and no family of
  keys that hash alike exists (Python hashes ints modulo 2**61 - 1, so 40,000 keys ``1 + k*(2**61-1)``
  once took 9.5 s and 160,000 of them 750 s; below the modulus every int hashes to itself);
- text integers are at most 256 characters, binary ones 255 bytes (sizes and messages stay cheap).

What a pickle can build: None, bools, numbers, str, bytes, bytearray, list, tuple, dict, set,
frozenset, ``collections.OrderedDict``, complex and slice values; whatever the caller's ``resolve``
returns for a global (a value, or a ``Hook`` the pickle may call); and ``InertObject`` records for
every other global: calling, building or filling one only records its arguments.
"""

from __future__ import annotations

import collections
import reprlib
import struct
from dataclasses import dataclass

from .pickle_opcodes import CONTAINERS, DISPATCH, STOP, PickleRefused, check_key

_brief = reprlib.Repr()
_brief.maxstring = _brief.maxother = 60


@dataclass(frozen=True)
class PickleLimits:
    """Bounds on one pickle. A real WorldWander Lightning checkpoint with its Adam state (600 LoRA
    tensors + 1,800 optimizer tensors) is a 221 KB pickle of 75,000 opcodes naming 12 globals,
    read here in about 0.12 s; at the opcode limit a pickle costs a few seconds at most."""

    max_bytes: int = 64 << 20
    max_opcodes: int = 2_000_000
    max_copied_items: int = 8_000_000
    max_globals: int = 10_000


class Hook:
    """A function of ours that a pickle may call (e.g. a tensor rebuild). It must bound its own work."""

    __slots__ = ("name", "function")

    def __init__(self, name: str, function):
        self.name, self.function = name, function


class InertGlobal:
    """A global the pickle names and we do not resolve: nothing is imported."""

    __slots__ = ("origin",)

    def __init__(self, origin: str):
        self.origin = origin

    def __repr__(self):
        return f"<global {self.origin}>"


class InertObject:
    """What calling or instantiating an InertGlobal gives: a record of the arguments and of every
    state, item and element the pickle then sets on it."""

    __slots__ = ("origin", "args", "kwargs", "state", "items", "elements")

    def __init__(self, origin: str, args=(), kwargs=None):
        self.origin, self.args, self.kwargs = origin, args, kwargs or {}
        self.state, self.items, self.elements = None, {}, []

    def __repr__(self):
        return f"<inert {self.origin}>"


_BUILTINS = {(module, name): name for module in ("builtins", "__builtin__")  # __builtin__: protocols 0-2
             for name in ("dict", "list", "tuple", "set", "frozenset", "complex", "slice", "bytes", "bytearray")}
_BUILTINS[("collections", "OrderedDict")] = "OrderedDict"
_BUILTINS[("_codecs", "encode")] = "encode"  # protocol 2 writes bytes as _codecs.encode(str, "latin1")


class _Machine:
    def __init__(self, data: bytes, resolve, persistent_load, limits: PickleLimits):
        self.data, self.resolve, self.persistent_load, self.limits = data, resolve, persistent_load, limits
        self.pos, self.stack, self.metastack, self.memo = 0, [], [], {}
        self.opcodes = self.copied = 0
        self.globals: dict[tuple[str, str], object] = {}

    # -- input
    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise PickleRefused(f"it is truncated: an opcode at byte {self.pos} needs {count} more bytes")
        chunk = self.data[self.pos: self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def line(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise PickleRefused(f"it is truncated: a text argument at byte {self.pos} has no end of line")
        chunk = self.data[self.pos: end]
        self.pos = end + 1
        return chunk

    # -- bookkeeping
    def charge(self, items: int) -> None:
        self.copied += items
        if self.copied > self.limits.max_copied_items:
            raise PickleRefused(f"it copies more than {self.limits.max_copied_items:,} elements while being read "
                                "(a file that costs far more to read than its size)")

    def pop_mark(self) -> list:
        if not self.metastack:
            raise PickleRefused("an opcode needs a MARK that is not there")
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def top(self):
        if not self.stack:
            raise PickleRefused("an opcode needs a value and the stack is empty")
        return self.stack[-1]

    def pop(self):
        value = self.top()
        self.stack.pop()
        return value

    # -- globals and calls
    def find_global(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise PickleRefused("a global is named by something other than two strings")
        key = (module, name)
        if key not in self.globals:
            if len(self.globals) >= self.limits.max_globals:
                raise PickleRefused(f"it names more than {self.limits.max_globals:,} different globals")
            builtin = _BUILTINS.get(key)
            resolved = None if builtin else self.resolve(module, name)
            self.globals[key] = Hook(builtin, None) if builtin else (
                resolved if resolved is not None else InertGlobal(f"{module}.{name}"))
        return self.globals[key]

    def call(self, target, args, kwargs=None):
        if not isinstance(args, tuple) or (kwargs is not None and not isinstance(kwargs, dict)):
            raise PickleRefused("a call's arguments are not a tuple (and a dict)")
        self.charge(len(args) + len(kwargs or ()))
        if isinstance(target, InertGlobal):
            return InertObject(target.origin, args, kwargs)
        if not isinstance(target, Hook):
            raise PickleRefused(f"it calls {_brief.repr(target)}, which is not callable here")
        if target.function is not None:
            return target.function(*args, **(kwargs or {}))
        return self.construct(target.name, args)

    def iterable(self, value) -> list:
        if not isinstance(value, (list, tuple, set, frozenset, str, bytes, dict)):
            raise PickleRefused(f"a constructor is given {_brief.repr(value)} to copy, not a plain container")
        self.charge(len(value))
        return list(value.items() if isinstance(value, dict) else value)

    def construct(self, kind: str, args: tuple):
        """The builtin constructors a checkpoint's plain data is pickled with, with their copies counted."""
        if kind in ("encode", "bytes", "bytearray"):
            return self.encode(kind, args)
        if kind == "complex":
            if not all(isinstance(a, (int, float)) for a in args) or len(args) > 2:
                raise PickleRefused("complex() is given something other than numbers")
            return complex(*args)
        if kind == "slice":
            if len(args) > 3 or any(isinstance(a, CONTAINERS) for a in args):
                raise PickleRefused("slice() is given something other than scalars")
            return slice(*args)
        if len(args) > 1:
            raise PickleRefused(f"{kind}() is given {len(args)} arguments")
        items = self.iterable(args[0]) if args else []
        if kind in ("dict", "OrderedDict"):
            result = collections.OrderedDict() if kind == "OrderedDict" else {}
            for pair in items:
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise PickleRefused(f"{kind}() is given an item that is not a key/value pair")
                check_key(pair[0])
                result[pair[0]] = pair[1]
            return result
        if kind in ("set", "frozenset"):
            for item in items:
                check_key(item)
            return set(items) if kind == "set" else frozenset(items)
        return items if kind == "list" else tuple(items)

    def encode(self, kind: str, args: tuple):
        """_codecs.encode(str, "latin1"), bytes() and bytearray(bytes) / bytearray(str, "latin1"): how
        protocols 0-2 write bytes."""
        if kind != "encode" and (not args or isinstance(args[0], (bytes, bytearray))) and len(args) < 2:
            self.charge(len(args[0]) // 8 + 1 if args else 1)
            return bytearray(*args) if kind == "bytearray" else bytes(*args)
        text, *rest = args
        encoding = str(rest[0]) if rest else "utf-8"
        if not isinstance(text, str) or len(rest) > 1 or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
            raise PickleRefused(f"it calls {kind}() other than with a string and 'latin1'")
        self.charge(len(text) // 8 + 1)
        data = text.encode("latin1")
        return bytearray(data) if kind == "bytearray" else data  # "bytes"(str, "latin1") too

    def set_items(self, target, pairs: list) -> None:
        if len(pairs) % 2:
            raise PickleRefused("a SETITEMS has an odd number of values")
        if isinstance(target, InertObject):
            target = target.items
        if not isinstance(target, dict):
            raise PickleRefused(f"it sets items on {_brief.repr(target)}, which is not a dict")
        for index in range(0, len(pairs), 2):
            check_key(pairs[index])
            target[pairs[index]] = pairs[index + 1]

    def append(self, target, values: list) -> None:
        if isinstance(target, InertObject):
            target = target.elements
        if not isinstance(target, list):
            raise PickleRefused(f"it appends to {_brief.repr(target)}, which is not a list")
        target.extend(values)

    def build(self, target, state) -> None:
        # Only an inert record keeps a state; real containers and our own values ignore it (it cannot
        # change what a tensor reference or a plain value is).
        if isinstance(target, InertObject):
            target.state = state

    def run(self):
        dispatch = DISPATCH
        data = self.data
        while self.pos < len(data):
            self.opcodes += 1
            if self.opcodes > self.limits.max_opcodes:
                raise PickleRefused(f"it has more than {self.limits.max_opcodes:,} opcodes")
            code = data[self.pos]
            self.pos += 1
            handler = dispatch.get(code)
            if handler is None:
                raise PickleRefused(f"opcode {bytes([code])!r} at byte {self.pos - 1} is not a pickle opcode this "
                                    "reader accepts")
            if handler(self) is STOP:
                return self.pop()
        raise PickleRefused("it is truncated: no STOP opcode")


def load_bounded(data: bytes, resolve, persistent_load, limits: PickleLimits | None = None):
    """Interpret the pickle ``data``. ``resolve(module, name)`` returns what a global stands for (a
    value, a Hook, or None for an inert record); ``persistent_load(pid)`` returns what a persistent id
    stands for. Raises PickleRefused for every malformed pickle and every limit it breaks; an
    exception a hook raises for bad arguments is turned into PickleRefused as well."""
    limits = limits or PickleLimits()
    if len(data) > limits.max_bytes:
        raise PickleRefused(f"its pickle is {len(data):,} bytes, more than the {limits.max_bytes:,} read")
    machine = _Machine(data if isinstance(data, bytes) else bytes(data), resolve, persistent_load, limits)
    try:
        return machine.run()
    except PickleRefused:
        raise
    except (IndexError, KeyError, TypeError, ValueError, OverflowError, UnicodeError, struct.error) as exc:
        raise PickleRefused(f"it is malformed near byte {machine.pos} ({type(exc).__name__}: "
                            f"{_brief.repr(str(exc))})") from None
