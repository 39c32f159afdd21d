"""Non-finite numbers stop the run instead of becoming a black video.

Two halves:

- option ranges: every number a user gives (cfg, shift, denoise, steps, seed, LoRA strength) must be
  finite and inside a stated range, checked before any model loads. The ranges are ComfyUI's own
  widget ranges for the same quantities (KSampler cfg 0-100, ModelSamplingSD3 shift 0-100,
  LoraLoader strength -100-100), so a value the node pack accepts is one ComfyUI accepts too;
- tensor checks: the sampler's latents are checked for NaN/Inf cheaply (a per-step flag kept on the
  device, read back every CHECK_EVERY steps and at the end, so there is no GPU sync per step), and
  the decoded video before it is written. A failure names the step and the likely cause, found
  after the fact by looking at the weights (base model, each LoRA) and the settings.
"""

from __future__ import annotations

import math
import operator

import torch

from .errors import InputError, NonFiniteError

CFG_RANGE = (0.0, 100.0)
SHIFT_RANGE = (0.0, 100.0)  # the low end excluded: shift must be > 0
LORA_STRENGTH_RANGE = (-100.0, 100.0)
STEPS_RANGE = (1, 1000)
SEED_RANGE = (0, 2**64 - 1)
CHECK_EVERY = 5  # sampler steps between reads of the device-side finite flags


def finite_number(name: str, value, low: float, high: float, *, low_open: bool = False, hint: str = "") -> float:
    """``value`` as a float when it is a finite real number in [low, high] ((low, high] with
    ``low_open``); else InputError naming ``name``, the value and the range."""
    try:
        number = float(value) if not isinstance(value, (bool, str, bytes)) else math.nan
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    inside = (number > low if low_open else number >= low) and number <= high
    if not math.isfinite(number) or not inside:
        bracket = "(" if low_open else "["
        raise InputError(f"{name}: expected a finite number in {bracket}{low:g}, {high:g}]{hint}, got {value!r}.")
    return number


def whole_number(name: str, value, low: int, high: int) -> int:
    """``value`` as an int when it is a whole number (not a bool, not a float) in [low, high]."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or not low <= number <= high:
        raise InputError(f"{name}: expected a whole number from {low} to {high}, got {value!r}.")
    return number


def check_lora_strength(strength) -> float:
    """A LoRA strength: finite, within LORA_STRENGTH_RANGE (0 switches the LoRA off)."""
    return finite_number("strength", strength, *LORA_STRENGTH_RANGE, hint=" (e.g. 1.0; 0 turns the LoRA off)")


def all_finite(tensor: torch.Tensor) -> torch.Tensor:
    """A 0-d bool tensor on the tensor's device (no host sync)."""
    if not tensor.is_floating_point() and not tensor.is_complex():
        return torch.ones((), dtype=torch.bool, device=tensor.device)
    return torch.isfinite(tensor).all()


def require_finite(tensor: torch.Tensor | None, what: str, cause: str) -> None:
    """NonFiniteError "<what> holds NaN/Inf: <cause>" unless every value is finite (one host sync)."""
    if tensor is not None and not bool(all_finite(tensor)):
        raise NonFiniteError(f"{what} holds NaN or Inf values: {cause}.")


def _first_bad_parameter(model) -> str | None:
    for name, param in model.named_parameters():
        if param.is_meta or not param.is_floating_point():
            continue
        if not bool(all_finite(param.detach().float() if param.dtype.itemsize == 1 else param.detach())):
            return name
    return None


def likely_cause(transformer, settings) -> str:
    """Why a run's latents became non-finite, judged after the fact (the weights are scanned only now)."""
    bad = _first_bad_parameter(transformer)
    if bad is not None and ".lora_" in bad:
        adapter = bad.split(".lora_", 1)[1].split(".")[1]
        return (f"the LoRA {adapter!r} has NaN/Inf weights ({bad}): the LoRA file is damaged (or was saved from a "
                "diverged training run)")
    if bad is not None:
        bad = bad.replace(".base_layer.", ".")  # a layer wrapped by a LoRA: name the weight as in the model
        return f"the transformer's weights hold NaN/Inf ({bad}): the model file is damaged; download it again"
    strengths = getattr(transformer, "__dict__", {}).get("_wan_egoexo_lora_strengths", {})
    dtype = next((p.dtype for p in transformer.parameters() if p.is_floating_point()), None)
    suspects = [f"cfg {settings.cfg:g}", f"shift {settings.shift:g}"]
    if strengths:
        suspects.append("LoRA strength " + ", ".join(f"{name}={value:g}" for name, value in strengths.items()))
    if dtype == torch.float16:
        suspects.append("float16 compute (its range ends at 65504; bf16 or fp32 has more room)")
    return ("every weight is finite, so the values overflowed during sampling; lower one of: " + "; ".join(suspects))


class LatentWatch:
    """Watches the sampler's latents for NaN/Inf without a host sync on every step.

    Each step writes one flag (are the latents finite?) into a small device tensor; the flags are read
    back every CHECK_EVERY steps and at the end, and the first bad step is named in the error."""

    def __init__(self, transformer, settings, total: int, device, every: int = CHECK_EVERY):
        self.transformer, self.settings, self.total, self.every = transformer, settings, total, every
        self.flags = torch.ones(max(total, 1), dtype=torch.bool, device=device)
        self.checked = 0

    @staticmethod
    def check_inputs(text_embeds, negative_embeds, source, reference, init_latents) -> None:
        """The sampler's inputs, once before the first step: a bad input is named as the cause."""
        prompt_cause = ("the prompt embedding is damaged (a damaged prompt-cache entry, or text-encoder weights "
                        "with NaN/Inf)")
        require_finite(text_embeds, "text_embeds", prompt_cause)
        require_finite(negative_embeds, "negative_embeds", prompt_cause)
        vae_cause = "the VAE encoder produced them (damaged VAE weights, or a video with NaN/Inf pixels)"
        require_finite(source, "the source latents", vae_cause)
        require_finite(reference, "the reference latents", vae_cause)
        require_finite(init_latents, "init_latents", "the latents given to start from are damaged")

    def after_step(self, step: int, latents: torch.Tensor) -> None:
        """Record step ``step`` (1-based); read the flags back every ``every`` steps."""
        self.flags[step - 1] = all_finite(latents)
        if step - self.checked >= self.every:
            self._read_back(step)

    def finish(self, step: int | None = None) -> None:
        self._read_back(self.total if step is None else step)

    def _read_back(self, step: int) -> None:
        bad = (~self.flags[self.checked: step]).nonzero()
        if len(bad):
            first = self.checked + int(bad[0]) + 1
            raise NonFiniteError(f"sampling produced NaN/Inf latents at step {first} of {self.total}: "
                                 f"{likely_cause(self.transformer, self.settings)}.")
        self.checked = step


def check_decoded_video(video: torch.Tensor) -> None:
    """Before a decoded video is used or written: NaN/Inf would become black frames."""
    require_finite(video, "the decoded video", "the VAE decoded NaN/Inf from finite latents (damaged VAE weights, "
                   "or a float16 overflow: decode in float32)")
