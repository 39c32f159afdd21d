"""The values that travel on the pack's own sockets (WW_*). They are immutable: a node that
"changes" one returns a new handle, so ComfyUI's output cache never sees an input change under it.
The large objects inside (the transformer, VAE, text encoder) are shared, never copied.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.tasks import Task
from wan_egoexo.video.fit import FitInfo

MODEL = "WW_MODEL"
VAE = "WW_VAE"
TEXT_ENCODER = "WW_TEXT_ENCODER"
TEXT = "WW_TEXT"
CONTEXT = "WW_CONTEXT"
FIT = "WW_FIT"


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """The transformer and the LoRAs (file path, strength) to have active when it samples."""

    transformer: torch.nn.Module
    name: str
    loras: tuple[tuple[str, float], ...] = ()
    memory: str = "auto"  # "auto" / "resident" / "offload": how many blocks stay on the GPU while sampling

    def with_lora(self, path: str, strength: float) -> "ModelHandle":
        return replace(self, loras=self.loras + ((str(path), float(strength)),))


@dataclass(frozen=True, eq=False)
class TextEncoderHandle:
    """A checked UMT5 file and where it runs: it is loaded only when a prompt is not in the on-disk
    prompt cache, used on ``device`` and released again."""

    path: str
    device: torch.device
    dtype: torch.dtype


@dataclass(frozen=True, eq=False)
class TextHandle:
    """Prompt embeddings [1, 512, D] on the CPU; ``task`` is set when the task's fixed prompt was used."""

    positive: torch.Tensor
    negative: torch.Tensor | None
    task: str | None = None

    def check_task(self, task: Task) -> None:
        if self.task is not None and self.task != task.name:
            raise InputError(f"text: was encoded with the {self.task} prompt but the context is {task.name}; "
                             f"set task to {task.name} on WorldWander Text Encode too.")

    def check_width(self, width: int) -> None:
        got = int(self.positive.shape[-1])
        if got != width:
            raise InputError(f"text: the embeddings are {got} wide but the transformer reads {width}-wide UMT5-XXL "
                             "states; for WorldWander Conditioning Bridge, load the CLIP (umt5_xxl) with type 'wan'.")


@dataclass(frozen=True, eq=False)
class ContextHandle:
    """The clean in-context parts as normalised latents on the CPU, and what is needed to finish."""

    task: Task
    positions: str
    source: torch.Tensor  # [1, 48, f, h, w]
    reference: torch.Tensor | None  # [1, 48, 1, h, w] for ego->exo
    vae: torch.nn.Module  # for the latent statistics (raw <-> normalised)
    fit: FitInfo | None
