"""Seeded fuzzing of every reader of untrusted model files: valid tiny ``.ckpt``, safetensors (LoRA,
transformer, VAE, text encoder) and prompt-cache files are mutated (bit flips, truncation, inserted
and overwritten bytes, header and zip-directory edits, huge declared sizes, hostile pickle opcodes)
and each mutant is read. Every read must:

- run no code from the file (a canary command and a canary module the pickle names stay untouched);
- end in a correct result or a named error (a WanEgoExoError naming the file); any other exception
  is a raw traceback and fails the test. A correct result is what an independent reader makes of
  the same file (torch.load(weights_only=True) for checkpoints, the safetensors library for
  safetensors), and for the prompt cache either a miss or exactly the stored embedding;
- grow the process's peak resident memory by less than MEMORY_BOUND and take less than SECONDS_BOUND.

The cases are fixed by SEED (a failure names its case and mutations, so it reproduces); the module
runs in well under a minute on 2 cores.
"""

import json
import os
import pickle
import random
import struct
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from benchmarks import hostile_files as hostile
from benchmarks import hostile_lora_files as lora18
from benchmarks.common import peak_memory
from wan_egoexo.models.checkpoint_files import load_safetensors
from wan_egoexo.errors import WanEgoExoError
from wan_egoexo.lora import read_lora_file
from wan_egoexo.lora.safe_checkpoint import load_checkpoint_tensors
from wan_egoexo.memory.prompt_cache import load_cached_embedding, save_cached_embedding
from wan_egoexo.models.text_encoder_loader import check_text_encoder
from wan_egoexo.models.transformer_loader import load_transformer
from wan_egoexo.models.vae_loader import read_vae_file

SEED = 11
MEMORY_BOUND = 64 << 20  # peak RSS growth per read; every base file is under 8 MB
SECONDS_BOUND = 10.0  # per read, on a loaded 2-core CI machine
PROMPT = "Transform it into the first-person perspective."
CANARY_MODULE = "wan_fuzz_canary"


class _Calls:
    def __init__(self, target, args):
        self.target, self.args = target, args

    def __reduce__(self):
        return self.target, self.args


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The valid files every mutant starts from, and the canary's marker file."""
    from wan_egoexo.tiny.lora import random_lora_state_dict
    from wan_egoexo.tiny.text_encoder import build_tiny_umt5, save_umt5_fp8_scaled, train_tiny_spiece
    from wan_egoexo.tiny.transformer import build_tiny_transformer, save_transformer_single_file
    from wan_egoexo.tiny.vae import build_tiny_vae, save_vae_single_file

    root = tmp_path_factory.mktemp("fuzz_base")
    marker = root / "canary_ran"
    os.environ["WAN_FUZZ_CANARY"] = str(marker)
    (root / f"{CANARY_MODULE}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\ndef run():\n    pass\n")
    transformer = build_tiny_transformer(0)
    lora = random_lora_state_dict(transformer, rank=2, seed=1, targets=["attn1.to_q", "ffn.net.2"])
    ckpt_lora = {k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
                 for k, v in lora.items()}
    files = {"marker": marker, "root": root}
    files["ckpt"] = root / "lora.ckpt"
    torch.save({"state_dict": {"lora": ckpt_lora}, "epoch": 3, "hyper_parameters": {"lr": 1e-4, "rank": 2}},
               files["ckpt"])
    _deterministic_checkpoint(files["ckpt"])
    sys.path.insert(0, str(root))
    try:
        canary = __import__(CANARY_MODULE)
        # The command names the marker through the environment, so the file's bytes do not depend on tmp paths.
        payloads = {"system": _Calls(os.system, ('touch "$WAN_FUZZ_CANARY"',)), "module": _Calls(canary.run, ())}
        files["canary_ckpt"] = root / "canary.ckpt"
        torch.save({"state_dict": {"lora": ckpt_lora}, "hyper_parameters": payloads}, files["canary_ckpt"])
        _deterministic_checkpoint(files["canary_ckpt"])
        marker.unlink(missing_ok=True)
        sys.modules.pop(CANARY_MODULE, None)
        torch.load(files["canary_ckpt"], weights_only=False)  # the canary is live: an ordinary load runs it
        assert marker.exists() and CANARY_MODULE in sys.modules
    finally:
        sys.path.remove(str(root))
        sys.modules.pop(CANARY_MODULE, None)
    marker.unlink()
    files["safetensors"] = root / "lora.safetensors"
    save_file({f"transformer.{k}": v.contiguous() for k, v in lora.items()}, str(files["safetensors"]))
    files["transformer"] = root / "transformer.safetensors"
    save_transformer_single_file(transformer, files["transformer"], prefix="model.diffusion_model.", dtype=torch.float16)
    files["vae"] = root / "vae.safetensors"
    save_vae_single_file(build_tiny_vae(0), files["vae"])
    files["text_encoder"] = root / "umt5.safetensors"
    save_umt5_fp8_scaled(build_tiny_umt5(0), train_tiny_spiece(root / "spiece"), files["text_encoder"])
    embedding = torch.zeros(512, 32)
    embedding[:6] = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    files["embedding"] = embedding
    files["entry"] = save_cached_embedding(root / "entry.safetensors", embedding, PROMPT)
    for kind in ("safetensors", "transformer", "vae", "text_encoder", "entry"):
        _canonical_safetensors(files[kind])
    yield files
    os.environ.pop("WAN_FUZZ_CANARY", None)


# ------------------------------------------------------------------ mutations

def _flip_bits(data: bytes, rng: random.Random, start: int = 0) -> tuple[bytes, str]:
    out = bytearray(data)
    spots = [rng.randrange(start, len(out)) for _ in range(rng.randint(1, 8))]
    for spot in spots:
        out[spot] ^= 1 << rng.randrange(8)
    return bytes(out), f"flip bits at {spots}"


def _byte_mutation(data: bytes, rng: random.Random, start: int = 0) -> tuple[bytes, str]:
    kind = rng.choice(["flip", "flip", "truncate", "overwrite", "insert", "zero"])
    if kind == "flip":
        return _flip_bits(data, rng, start)
    at = rng.randrange(start, len(data))
    if kind == "truncate":
        return data[:at], f"truncate to {at}"
    span = rng.randint(1, 64)
    noise = bytes(rng.randrange(256) for _ in range(span))
    if kind == "overwrite":
        return data[:at] + noise + data[at + span:], f"overwrite {span} bytes at {at}"
    if kind == "zero":
        return data[:at] + b"\0" * span + data[at + span:], f"zero {span} bytes at {at}"
    return data[:at] + noise + data[at:], f"insert {span} bytes at {at}"


_HUGE = [2**31 - 1, 2**32 - 1, 2**40, 2**63 - 1, 2**64 + 5, -1, 0, 3]


def _header_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """An edit of a safetensors header: dtype, shape, offsets, key, metadata or the length field."""
    (length,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8: 8 + length]), data[8 + length:]
    keys = [k for k in header if k != "__metadata__"]
    key = rng.choice(keys)
    kind = rng.choice(["dtype", "shape", "offsets", "offsets", "drop", "metadata", "length", "nested", "swap"])
    if kind == "dtype":
        header[key]["dtype"] = rng.choice(["F4", "Q4_K", "F8_E8M0", "", 5, None, "U8", "BF16", "F64", "BOOL"])
    elif kind == "shape":
        header[key]["shape"] = rng.choice([[2**40], [2**40, 2**40], [], [-1], [1.5], "2", [[2]], [0], [1] * 100])
    elif kind == "offsets":
        begin, end = header[key]["data_offsets"]
        header[key]["data_offsets"] = rng.choice([[end, begin], [0, end], [begin, rng.choice(_HUGE)],
                                                  [rng.choice(_HUGE), rng.choice(_HUGE)], [begin + 1, end + 1], [begin]])
    elif kind == "drop":
        del header[key][rng.choice(["dtype", "shape", "data_offsets"])]
    elif kind == "metadata":
        header["__metadata__"] = rng.choice([{"a": 1}, [1], "x", {"a": "b" * 1000}])
    elif kind == "swap":
        other = rng.choice(keys)
        header[key]["shape"], header[other]["shape"] = header[other]["shape"], header[key]["shape"]
    raw = json.dumps(header).encode()
    if kind == "nested":
        raw = b"[" * 100_000 + b"]" * 100_000
    declared = rng.choice(_HUGE[:5] + [len(raw) + 1, len(raw) - 1]) if kind == "length" else len(raw)
    return struct.pack("<Q", declared % 2**64) + raw + body, f"header {kind} on {key!r}"


def _zip_members(data: bytes) -> dict[str, bytes]:
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _rezip(path: Path, members: dict[str, bytes]) -> None:
    """A stored zip of ``members`` with fixed timestamps (so a case's bytes are the same on every run)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), payload)


def _deterministic_checkpoint(path: Path) -> None:
    """torch.save writes a random serialization id and the time: fix both, so mutations reproduce."""
    members = _zip_members(path.read_bytes())
    for name in members:
        if name.endswith("serialization_id"):
            members[name] = b"0" * len(members[name])
    _rezip(path, members)


def _canonical_safetensors(path: Path) -> Path:
    """Rewrite a safetensors header with sorted keys (safetensors writes metadata in hash order)."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    raw = json.dumps(json.loads(data[8: 8 + length]), sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length:])
    return path


_HOSTILE_OPS = [
    b"r\xff\xff\xff\x7f", b"\x8e" + struct.pack("<Q", 1 << 40), b"X\xff\xff\xff\xff", b"(" * 1000,
    b"c" + CANARY_MODULE.encode() + b"\nrun\n)R", b"cposix\nsystem\nX\x04\x00\x00\x00true\x85R",
    b"\x82\x01", b"h\xfe", b"j\xff\xff\xff\x00", b"]q\x00" + b"cbuiltins\nlist\nh\x00\x85R0" * 50,
    b"\x8b" + struct.pack("<i", 1 << 30), b"0" * 50, b"b", b"R", b"s", b"u", b"e", b"\x81", b"\x92",
    # issue 18: keys that hash alike, memo slots and text integers beyond their bounds
    b"}(" + b"".join(lora18._long1(k) + b"N" for k in lora18.colliding_keys(50)) + b"u0",
    b"\x8f(" + b"".join(lora18._long1(k) for k in lora18.colliding_keys(50)) + b"\x900",
    b"N" + b"".join(b"p%d\n" % k for k in lora18.colliding_keys(20)) + b"0", b"Np" + b"9" * 30 + b"\n0",
    b"I0x" + b"f" * 400 + b"\n0", b"L" + b"7" * 300 + b"L\n0", b"}G" + struct.pack(">d", 2.0**61) + b"Ns0",
    b"}(K\x01K\x02tNs0", b"}(X\x01\x00\x00\x00a\x8a\x01\x05tNs0",
]


def _pickle_edit(pickled: bytes, rng: random.Random) -> tuple[bytes, str]:
    """An edit of a checkpoint's pickle: bit flips, a hostile opcode sequence at an opcode boundary, or a
    number (a storage size, a tensor size, stride or offset) replaced by a huge or negative one."""
    import pickletools

    ops = list(pickletools.genops(pickled))
    kind = rng.choice(["bytes", "insert", "number", "number"])
    if kind == "bytes":
        return _byte_mutation(pickled, rng, 2)
    if kind == "insert":
        at = rng.choice(ops)[2]
        op = rng.choice(_HOSTILE_OPS)
        return pickled[:at] + op + pickled[at:], f"insert {op[:24]!r} at {at}"
    numbers = [(pos, op) for op, arg, pos in ops if op.name in ("BININT", "BININT1", "BININT2", "LONG1")]
    pos, op = rng.choice(numbers)
    value = rng.choice(_HUGE)
    size = {"BININT": 5, "BININT1": 2, "BININT2": 3}.get(op.name) or 2 + pickled[pos + 1]
    encoded = pickle.dumps(value, protocol=2)[2:-1]  # the opcode pickle itself picks for the value
    return pickled[:pos] + encoded + pickled[pos + size:], f"number {op.name} at {pos} -> {value}"


def _ckpt_mutant(data: bytes, path: Path, rng: random.Random) -> str:
    kind = rng.choice(["bytes", "pickle", "pickle", "pickle", "directory", "record"])
    if kind == "bytes":
        mutated, what = _byte_mutation(data, rng)
        path.write_bytes(mutated)
        return what
    members = _zip_members(data)
    pkl = next(n for n in members if n.endswith("data.pkl"))
    records = [n for n in members if "/data/" in n]
    if kind == "pickle":
        members[pkl], what = _pickle_edit(members[pkl], rng)
    elif kind == "record":
        name = rng.choice(records)
        members[name] = rng.choice([members[name][:-4], members[name] + b"\0" * 4, b""])
        what = f"record {name} resized to {len(members[name])}"
    _rezip(path, members)
    if kind == "directory":
        name = rng.choice([pkl] + records)
        edit = rng.choice([{"size": rng.choice(_HUGE[:2])}, {"file_size": rng.choice(_HUGE[:2])}, {"flags": 1},
                           {"method": rng.choice([12, 14, 98, 93])}, {"size": 1}])
        hostile.patch_zip_member(path, name, **edit)
        what = f"directory edit {edit} on {name}"
    return what


# ------------------------------------------------------------------ the checks

def _read(reader, path: Path, case: str):
    """(result or None, named error or None); asserts the memory and time bounds. Raw errors propagate."""
    with peak_memory("cpu", collect=False) as memory:
        start = time.perf_counter()
        try:
            result, error = reader(path), None
        except WanEgoExoError as exc:
            result, error = None, exc
        seconds = time.perf_counter() - start
    measured = memory["kind"] == "cpu_peak_rss"  # the kernel's high-water mark could be reset
    assert not measured or memory["delta_bytes"] < MEMORY_BOUND, \
        f"{case}: peak memory grew by {memory['delta_bytes']:,} bytes"
    assert seconds < SECONDS_BOUND, f"{case}: took {seconds:.1f} s"
    if error is not None:
        assert str(path) in str(error), f"{case}: the error does not name the file: {error}"
    return result, error


def _assert_no_code_ran(base, case):
    assert not base["marker"].exists() and CANARY_MODULE not in sys.modules, f"{case}: the canary ran"


def _independent_checkpoint(path: Path):
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch refuses files we still read (e.g. unknown classes beside the LoRA)
        return None
    return checkpoint.get("state_dict", {}).get("lora") if isinstance(checkpoint, dict) else None


@pytest.mark.parametrize("case", range(90))
def test_fuzzed_checkpoints(base, tmp_path, case):
    rng = random.Random(SEED * 1000 + case)
    source = base["canary_ckpt"] if case % 3 == 0 else base["ckpt"]
    path = tmp_path / "mutant.ckpt"
    what = f"ckpt case {case} ({source.name}): " + _ckpt_mutant(source.read_bytes(), path, rng)
    _read(read_lora_file, path, what)
    _assert_no_code_ran(base, what)
    tensors, error = _read(load_checkpoint_tensors, path, what)
    if error is None and source == base["ckpt"]:
        expected = _independent_checkpoint(path)
        if expected is not None:
            for key, value in tensors.items():
                assert value.dtype == expected[key].dtype and torch.equal(value, expected[key]), f"{what}: {key}"


@pytest.mark.parametrize("case", range(60))
def test_fuzzed_lora_safetensors(base, tmp_path, case):
    rng = random.Random(SEED * 2000 + case)
    data = base["safetensors"].read_bytes()
    mutated, what = _header_edit(data, rng) if case % 2 else _byte_mutation(data, rng)
    path = tmp_path / "mutant.safetensors"
    path.write_bytes(mutated)
    what = f"safetensors case {case}: {what}"
    _read(read_lora_file, path, what)
    tensors, error = _read(load_safetensors, path, what)
    if error is None:
        expected = load_file(str(path))
        assert set(tensors) == set(expected) and all(torch.equal(tensors[k], expected[k]) for k in tensors), what


@pytest.mark.parametrize("case", range(36))
def test_fuzzed_model_files(base, tmp_path, case):
    """Header edits reach each loader's architecture inference (shapes, layer counts, dtypes); byte
    mutations also reach the weights and the text encoder's embedded tokenizer."""
    kind = ["transformer", "vae", "text_encoder"][case % 3]
    readers = {"transformer": lambda p: load_transformer(p, device="cpu"), "vae": read_vae_file,
               "text_encoder": check_text_encoder}
    rng = random.Random(SEED * 3000 + case)
    mutated, what = _header_edit(base[kind].read_bytes(), rng) if case % 2 else _byte_mutation(base[kind].read_bytes(), rng)
    path = tmp_path / f"{kind}.safetensors"
    path.write_bytes(mutated)
    _read(readers[kind], path, f"{kind} case {case}: {what}")


@pytest.mark.parametrize("case", range(60))
def test_fuzzed_prompt_cache_entries(base, tmp_path, case):
    """A damaged entry is a miss (None), never an error and never different numbers."""
    rng = random.Random(SEED * 4000 + case)
    data = base["entry"].read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    kind = rng.choice(["data", "data", "anywhere", "nan", "header"])
    if kind == "data":
        mutated, what = _flip_bits(data, rng, 8 + length)
    elif kind == "nan":
        at = 8 + length + 4 * rng.randrange((len(data) - 8 - length) // 4)
        mutated, what = data[:at] + struct.pack("<f", float("nan")) + data[at + 4:], f"NaN at {at}"
    elif kind == "header":
        mutated, what = _header_edit(data, rng)
    else:
        mutated, what = _byte_mutation(data, rng)
    path = tmp_path / "entry.safetensors"
    path.write_bytes(mutated)
    what = f"prompt-cache case {case}: {what}"
    result, error = _read(lambda p: load_cached_embedding(p, PROMPT, 512, 32), path, what)
    assert error is None, f"{what}: a damaged entry raised {error!r} instead of being a miss"
    assert result is None or torch.equal(result, base["embedding"]), f"{what}: damaged numbers were returned"
    if mutated != data and kind in ("data", "nan"):
        assert result is None, f"{what}: changed tensor bytes were not detected"
