"""The bounded pickle interpreter: plain data reads back exactly as the standard unpickler reads it,
nothing named in a pickle is imported or called, and every amplifying construct hits a stated limit."""

import collections
import os
import pickle
import struct
import sys

import pytest

from wan_egoexo.lora.bounded_unpickler import (Hook, InertGlobal, InertObject, PickleLimits, PickleRefused,
                                               load_bounded)

PLAIN_VALUES = [
    0, -1, 255, 65535, 2**31, -2**63, 2**200, 1.5, -0.0, float("inf"), "", "é\n\\ \x00 ☃", b"", b"\x00\xff" * 3,
    bytearray(b"ab"), (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, [2, [3]]], {}, {"a": 1, 2: (3, 4)},
    collections.OrderedDict([("b", 1), ("a", 2)]), {1, 2, "x", -2**61 + 2}, frozenset({("a", b"b", None)}), True,
    False, None,
    complex(1, -2), slice(1, None, 2), {"shared": [[0]] * 3, "nested": {"k": {"l": [b"x", "y"]}}},
]


def _load(data, resolve=lambda module, name: None, persistent_load=None, **limits):
    return load_bounded(data, resolve, persistent_load or (lambda pid: pid), PickleLimits(**limits) if limits else None)


@pytest.mark.parametrize("protocol", range(6))
def test_plain_data_reads_back_as_the_standard_unpickler_reads_it(protocol):
    for value in PLAIN_VALUES:
        data = pickle.dumps(value, protocol=protocol)
        expected = pickle.loads(data)
        got = _load(data)
        assert type(got) is type(expected) and got == expected, (protocol, value)
    shared = [1]
    got = _load(pickle.dumps([shared, shared], protocol=protocol))
    assert got[0] is got[1]  # the memo keeps shared references shared


class _Calls:
    def __init__(self, target, args):
        self.target, self.args = target, args

    def __reduce__(self):
        return self.target, self.args


def test_nothing_is_imported_or_called(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    canary = tmp_path / "wan_canary_module.py"
    canary.write_text(f"open({str(marker)!r}, 'w').write('imported')\ndef touch():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    payloads = [_Calls(os.system, (f"touch {marker}",)), _Calls(eval, ("1+1",)), _Calls(exec, ("x = 1",)),
                _Calls(getattr, ("text", "upper")), _Calls(__import__, ("wan_canary_module",))]
    import wan_canary_module  # noqa: F401  (imported here only to pickle a reference to it)
    payloads.append(_Calls(sys.modules["wan_canary_module"].touch, ()))
    pickles = [pickle.dumps({"x": payload}, protocol=protocol) for payload in payloads for protocol in (0, 2, 4)]
    marker.unlink()
    del sys.modules["wan_canary_module"]
    for data in pickles:
        assert isinstance(_load(data)["x"], InertObject)
    assert not marker.exists() and "wan_canary_module" not in sys.modules
    pickle.loads(pickles[-1])  # the canary is live: the standard unpickler imports the module
    assert marker.exists()
    del sys.modules["wan_canary_module"]
    # The inert record keeps what the pickle asked for, for diagnostics.
    record = _load(pickle.dumps(_Calls(os.system, ("echo hi",)), protocol=2))
    assert record.origin in ("posix.system", "nt.system") and record.args == ("echo hi",)


def test_hooks_are_the_only_callables_and_their_errors_are_refusals():
    calls = []
    hook = Hook("record", lambda *args: calls.append(args) or "done")

    def resolve(module, name):
        return hook if (module, name) == ("mine", "record") else None

    assert _load(b"\x80\x02cmine\nrecord\nK\x01K\x02\x86R.", resolve) == "done" and calls == [(1, 2)]
    with pytest.raises(PickleRefused, match="malformed"):
        _load(b"\x80\x02cmine\nrecord\nK\x01K\x02K\x03\x87R.", lambda m, n: Hook("one", lambda a: a))  # TypeError
    with pytest.raises(PickleRefused, match="not a plain container"):
        _load(b"\x80\x02cbuiltins\ndict\nK\x01\x85R.")
    with pytest.raises(PickleRefused, match="not callable"):
        _load(b"\x80\x02N)R.")
    # BUILD on something that is not an inert record changes nothing.
    assert _load(b"\x80\x02cmine\nrecord\n}(X\x01\x00\x00\x00aK\x01ub.", resolve) is hook
    assert not hasattr(hook, "a")


@pytest.mark.parametrize("data, rule", [
    (b"\x80\x02" + b"N0" * 600 + b"N.", "more than 1,000 opcodes"),
    (b"\x80\x02" + b"".join(b"cmod\nname%d\n0" % i for i in range(11)) + b"N.", "more than 10 different globals"),
    (b"\x80\x02]" + b"K\x01a" * 50 + b"q\x00" + b"cbuiltins\ntuple\nh\x00\x85R0" * 5 + b".", "copies more than 100"),
    (b"\x80\x02r\xff\xff\xff\x7f.", "empty"),  # LONG_BINPUT 2**31-1 with nothing to store
    (b"\x80\x02N" + b"r\xff\xff\xff\x7fh\x05.", "memo slot 2,147,483,647 after 3 opcodes"),
    (b"\x80\x02N" + b"q\x05h\x05.", "memo slot 5 after 3 opcodes"),
    (b"\x80\x02\x8e" + struct.pack("<Q", 1 << 40) + b".", "truncated"),
    (b"\x80\x02X" + struct.pack("<I", 0xFFFFFFFF) + b".", "truncated"),
    (b"\x80\x02\x8b" + struct.pack("<i", 1 << 20) + b"\x00" * 8 + b".", "at most 255 bytes"),
    (b"\x80\x02\x82\x01.", "extension registry"),
    (b"\x80\x05\x97.", "out-of-band"),
    (b"\x80\x02K\x01K\x02\x86\x85}(h\x00K\x01u.", "never written"),
    (b"\x80\x02}K\x01K\x02\x86\x85K\x03s.", "tuple holding something other than strings"),
    (b"\x80\x02}G" + struct.pack(">d", 2.0**61) + b"Ns.", "key or set member is a float"),
    (b"\x80\x02\x8f(\x8a\x08" + (2**61 - 1).to_bytes(8, "little") + b"\x90.", "integer of 61 bits"),
    (b"\x80\x02I0x" + b"f" * 300 + b"\n.", "text integer of 302 characters"),
    (b"\x80\x02}]K\x03s.", "is a list"),
    (b"\x80\x02K\x01", "no STOP"),
    (b"\x80\x02\xff.", "not a pickle opcode"),
    (b"\x80\x09N.", "protocol above 5"),
])
def test_limits_and_malformed_pickles_are_refused_by_rule(data, rule):
    with pytest.raises(PickleRefused, match=rule):
        _load(data, max_opcodes=1000, max_globals=10, max_copied_items=100)


def test_repeated_copies_are_bounded_not_quadratic():
    # One 10,000-element list copied by tuple() 1,000 times would be 10 M element copies.
    body = b"]q\x00(" + b"K\x01" * 10_000 + b"e" + b"cbuiltins\ntuple\nh\x00\x85R0" * 1000 + b"N."
    with pytest.raises(PickleRefused, match="copies more than"):
        _load(b"\x80\x02" + body, max_copied_items=1_000_000)


def test_inert_records_collect_state_items_and_elements():
    data = pickle.dumps(collections.Counter(a=2), protocol=2)
    got = _load(data)
    assert isinstance(got, InertObject) and got.origin == "collections.Counter" and got.args[0] == {"a": 2}
    assert isinstance(_load(b"\x80\x02cmod\nName\n."), InertGlobal)


def test_keys_that_cannot_collide_are_read():
    """Inside the key bounds: ints below 2**61 - 1 hash to themselves, strings hash with a secret,
    our inert records by identity."""
    keys = [2**61 - 2, -(2**61 - 2), 2**40, "a", b"b", ("a", b"b", None, True)]
    assert _load(pickle.dumps({k: i for i, k in enumerate(keys)}, protocol=2)) == {k: i for i, k in enumerate(keys)}
    (key, value), = _load(b"\x80\x02}cmod\nName\n)RK\x01s.").items()
    assert isinstance(key, InertObject) and key.origin == "mod.Name" and value == 1
