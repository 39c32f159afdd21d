"""Seeded fuzzing of diffusers' lora_adapter_metadata (issue 18): random LoraConfig fields, some of
them hostile (backtracking regexes as pattern keys, "nan", huge numbers, wrong types), each read
under test_fuzz_files' bounds on memory and time: a named error, or exactly the alpha PEFT's own
matcher gives the module."""

import random

import pytest

from benchmarks import hostile_lora_files as lora18
from test_fuzz_files import SEED, _read
from wan_egoexo.lora import read_lora_file

# (valid values, hostile values) of each field; each value is hostile with probability 0.1
_METADATA_VALUES = {
    "lora_alpha": ([4, 0.5, 0, 16, None], [-1, "nan", "8", float("nan"), float("inf"), 1e300, 10**40, [4], {"a": 1},
                                          True]),
    "r": ([4, 1, None], [0, -4, 2**70, 2.5, "4", False]),
    "use_rslora": ([True, False, None], ["yes", 1, 0]),
    "target_modules": ([["to_q"], "to_q", ".*", None], [7, [1, 2], {"a": "b"}]),
}
_PATTERN_KEYS = (["to_q", "attn1.to_q", "blocks.0.attn1.to_q", "^blocks.0.attn1.to_q", "blocks\\.0\\.attn1\\.to_q",
                  "transformer.blocks.0.attn1.to_q", "0.attn1.to_q", "ffn.net.2", "q", "attn1.to_q$", "^to_q"],
                 ["", "((.*)*)*Z", "(a|aa)*$", ".*", "(", "to_[qk]", "x" * 300, "\\d+", "a b"])
_PATTERN_VALUES = ([2, 0.25, 7], [-3, "x", float("nan"), 10**30, None, [1]])


def _pick(rng: random.Random, pools):
    return rng.choice(pools[1] if rng.random() < 0.1 else pools[0])


def _metadata_case(rng: random.Random) -> dict:
    metadata = {name: _pick(rng, pools) for name, pools in _METADATA_VALUES.items() if rng.random() < 0.7}
    for field in ("alpha_pattern", "rank_pattern"):
        roll = rng.random()
        if roll < 0.7:
            metadata[field] = {_pick(rng, _PATTERN_KEYS): _pick(rng, _PATTERN_VALUES) for _ in range(rng.randint(0, 4))}
        elif roll < 0.75:
            metadata[field] = rng.choice([[1, 2], "to_q", 3])
    return metadata


def _expected_alpha(metadata: dict, module: str, rank: int) -> float | None:
    """PEFT's own resolution (get_pattern_key over the keys in file order) for keys our reader accepted."""
    from peft.utils.other import get_pattern_key

    pattern = {}
    for key, value in (metadata.get("alpha_pattern") or {}).items():
        pattern.setdefault(key.removeprefix("transformer."), value)  # the reader drops diffusers' prefix
    alpha = pattern.get(get_pattern_key(list(pattern), module), metadata.get("lora_alpha"))
    if alpha is None:
        return None
    return float(alpha) * (rank ** 0.5 if metadata.get("use_rslora") else 1.0)


@pytest.mark.parametrize("case", range(60))
def test_fuzzed_adapter_metadata(tmp_path, case):
    """Random LoraConfig fields (hostile regexes, "nan", huge numbers, wrong types): a named error, or
    exactly the alpha PEFT gives the module."""
    rng = random.Random(SEED * 5000 + case)
    metadata = _metadata_case(rng)
    what = f"metadata case {case}: {metadata!r}"[:400]
    path = lora18.metadata_lora_safetensors(tmp_path / "meta.safetensors", metadata)
    weights, error = _read(read_lora_file, path, what)
    if error is None:
        assert _expected_alpha(metadata, lora18.MODULE, 1) == weights.modules[lora18.MODULE].alpha, what
    else:
        assert "lora_adapter_metadata" in str(error), f"{what}: {error}"
