"""diffusers' ``lora_adapter_metadata`` (a PEFT ``LoraConfig`` as JSON in a safetensors header),
read as data: every field this project uses is checked (type, finite, range) and refused with a
ModelFileError naming the file, the field and the rule, and pattern keys are module names, never
compiled as regular expressions.

Why: PEFT compiles each ``rank_pattern`` / ``alpha_pattern`` key into ``(.*\\.)?(KEY)$`` and matches
it against every module name (``peft.utils.other.get_pattern_key``). A key is meant to be a module
name, or the tail of one (``attn1.to_q`` for every block's), and that is what diffusers and PEFT
write; but compiled, a key from a downloaded file is a program: ``((.*)*)*Z`` (a 321-byte LoRA)
backtracks for hours inside ``re.fullmatch``, holding the GIL. Here a key must be a dotted module
name (letters, digits, ``_``, ``-``; an optional leading ``^`` anchors it to the whole name, and
``\\.`` / ``\\-`` / ``\\_`` as ``re.escape`` writes them are read as the characters), and it matches a
module whose name equals it or ends with ``.`` + it: PEFT's semantics for such keys, with the dots
literal. Matching is a dictionary look-up per dotted suffix, so its cost is linear in the name.
Any other key (a real regular expression) is refused by name, as are wrong types, ``NaN`` / ``Inf``
/ strings such as ``"nan"`` for numbers, ranks outside 1..65536 and alphas outside 0..1e6.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from ..errors import ModelFileError

MAX_RANK = 1 << 16
MAX_ALPHA = 1e6
MAX_PATTERNS = 100_000
MAX_NAME_CHARS = 256  # no Wan module name comes near (the longest is under 50 characters)
_EXPECTED = "lora_adapter_metadata as diffusers and PEFT write it: a LoraConfig as a JSON object"
# Our own pattern for a module name: a sequence of segments, linear in the key's length.
_MODULE_NAME = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*")
_ESCAPED = re.compile(r"\\([.\-_])")


@dataclass(frozen=True)
class AdapterMetadata:
    """The fields of the metadata this project uses, checked."""

    lora_alpha: float | None = None
    use_rslora: bool = False
    # alpha_pattern: module name (or tail) -> (its order in the file, alpha); anchored keys apart
    alpha_suffixes: dict[str, tuple[int, float]] = field(default_factory=dict)
    alpha_exact: dict[str, tuple[int, float]] = field(default_factory=dict)

    def alpha_for(self, module: str, rank: int) -> float | None:
        """The alpha PEFT would give ``module``: the first alpha_pattern key (in file order) that names
        it or a dotted tail of it, else lora_alpha; scaled by sqrt(rank) under use_rslora."""
        alpha = self.lora_alpha
        if (self.alpha_suffixes or self.alpha_exact) and len(module) <= MAX_NAME_CHARS:
            hits = [self.alpha_exact[module]] if module in self.alpha_exact else []
            tail = module
            while True:
                if tail in self.alpha_suffixes:
                    hits.append(self.alpha_suffixes[tail])
                dot = tail.find(".")
                if dot < 0:
                    break
                tail = tail[dot + 1:]
            if hits:
                alpha = min(hits)[1]
        if alpha is None:
            return None
        return alpha * math.sqrt(rank) if self.use_rslora else alpha  # rsLoRA: scale alpha / sqrt(r)


def _fail(path, field_name: str, problem: str, rule: str):
    raise ModelFileError(path, f"lora_adapter_metadata: {field_name} {problem}.", rule)


def _number(path, field_name: str, value, low: float, high: float, whole: bool = False) -> float:
    kind = "a whole number" if whole else "a finite number"
    ok_type = type(value) is int if whole else type(value) in (int, float)
    if not ok_type or not (math.isfinite(value) if type(value) is float else True) or not low <= value <= high:
        shown = json.dumps(value)[:60] if _dumpable(value) else repr(value)[:60]
        _fail(path, field_name, f"is {shown}", f"{kind} from {low:g} to {high:g}")
    return float(value)


def _dumpable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def pattern_key(path, field_name: str, key) -> tuple[str, bool]:
    """(module name or tail, anchored) of one pattern key; a ModelFileError for anything else."""
    if not isinstance(key, str) or len(key) > MAX_NAME_CHARS + 2:
        _fail(path, field_name, f"has a key {str(key)[:60]!r}", f"module names of at most {MAX_NAME_CHARS} characters")
    name = key.removeprefix("transformer.")
    anchored = name.startswith("^")
    name = _ESCAPED.sub(r"\1", name[1:] if anchored else name).removesuffix("$")
    if not _MODULE_NAME.fullmatch(name):
        _fail(path, field_name, f"has the key {key[:60]!r}, which is not a module name",
              "keys that are module names or their dotted tails (e.g. 'blocks.0.attn1.to_q' or 'attn1.to_q'), "
              "matched as text; regular expressions are not evaluated")
    return name, anchored


def _patterns(path, field_name: str, value, check_value) -> list[tuple[str, bool, float]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        _fail(path, field_name, f"is a {type(value).__name__}", "a map from module names to numbers")
    if len(value) > MAX_PATTERNS:
        _fail(path, field_name, f"has {len(value):,} keys", f"at most {MAX_PATTERNS:,}")
    out = []
    for key, item in value.items():
        name, anchored = pattern_key(path, field_name, key)
        out.append((name, anchored, check_value(f"{field_name}[{key[:60]!r}]", item)))
    return out


def parse_adapter_metadata(path, raw: str | None) -> AdapterMetadata | None:
    """Check the ``lora_adapter_metadata`` string of the safetensors file ``path`` (None: the file has none)."""
    if not raw:
        return None
    try:
        metadata = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(path, f"lora_adapter_metadata is not JSON ({str(exc)[:120]}).", _EXPECTED) from None
    if not isinstance(metadata, dict):
        _fail(path, "(the whole entry)", f"is a JSON {type(metadata).__name__}", "a JSON object")
    # A pipeline-level save prefixes every field with the component name.
    prefixed = {k.removeprefix("transformer."): v for k, v in metadata.items() if k.startswith("transformer.")}
    metadata = prefixed or metadata

    def alpha(name, value):
        return _number(path, name, value, 0, MAX_ALPHA)

    def rank(name, value):
        return _number(path, name, value, 1, MAX_RANK, whole=True)

    lora_alpha = metadata.get("lora_alpha")
    lora_alpha = None if lora_alpha is None else alpha("lora_alpha", lora_alpha)
    if metadata.get("r") is not None:
        rank("'r'", metadata["r"])
    _patterns(path, "rank_pattern", metadata.get("rank_pattern"), rank)  # checked; ranks come from the tensors
    alphas = _patterns(path, "alpha_pattern", metadata.get("alpha_pattern"), alpha)
    use_rslora = metadata.get("use_rslora")
    if use_rslora is not None and not isinstance(use_rslora, bool):
        _fail(path, "use_rslora", f"is {str(use_rslora)[:40]!r}", "true or false")
    targets = metadata.get("target_modules")  # never matched here; PEFT would compile a string as a regex
    if targets is not None and not isinstance(targets, str) and not (
            isinstance(targets, list) and len(targets) <= MAX_PATTERNS and all(isinstance(t, str) for t in targets)):
        _fail(path, "target_modules", f"is {str(targets)[:60]}", "a list of module names or one string")
    exact: dict[str, tuple[int, float]] = {}
    suffixes: dict[str, tuple[int, float]] = {}
    for order, (name, anchored, value) in enumerate(alphas):
        (exact if anchored else suffixes).setdefault(name, (order, value))
    return AdapterMetadata(lora_alpha=lora_alpha, use_rslora=bool(use_rslora), alpha_suffixes=suffixes,
                           alpha_exact=exact)
