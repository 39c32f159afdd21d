"""Non-finite numbers stop the run instead of becoming a black video.

Two halves:

- option ranges (in option_ranges, which imports no torch so the command line can parse with it):
  every number a user gives (cfg, shift, denoise, steps, seed, LoRA strength) must be finite and
  inside a stated range, checked before any model loads;
- tensor checks: the sampler's latents are checked for NaN/Inf cheaply (a per-step flag kept on the
  device, read back every CHECK_EVERY steps and at the end, so there is no GPU sync per step), and
  the decoded video before it is written. A failure names the step and the likely cause, found
  after the fact by looking at the weights (base model, each LoRA) and the settings.
"""

from __future__ import annotations

import torch

from .errors import NonFiniteError

CHECK_EVERY = 5  # sampler steps between reads of the device-side finite flags


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
