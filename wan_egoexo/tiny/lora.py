"""Tiny random LoRAs for a Wan transformer, and writing them in the released WorldWander ``.ckpt``
layout (a PyTorch Lightning checkpoint) for tests and demos."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import torch

# The module kinds WorldWander trains, in every block (diffusers names).
WORLDWANDER_TARGETS = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "ffn.net.0.proj", "ffn.net.2",
)


class TrainingHyperParameters:
    """Stands for the non-tensor objects a Lightning checkpoint pickles (AttributeDict, omegaconf
    configs...): a class outside torch's weights_only allowlist."""

    def __init__(self, **values):
        self.__dict__.update(values)


def random_lora_state_dict(transformer, rank: int = 4, seed: int = 0, targets="worldwander") -> dict[str, torch.Tensor]:
    """A random LoRA for ``transformer`` in diffusers-PEFT names (``blocks.0.attn1.to_q.lora_A.weight``).

    ``targets``: "worldwander" (the ten WorldWander linears of every block) or a list of module
    names or block-relative suffixes. B is non-zero, so the LoRA changes the output.
    """
    suffixes = WORLDWANDER_TARGETS if targets == "worldwander" else tuple(targets)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear) or not any(name == s or name.endswith("." + s) for s in suffixes):
            continue
        down = torch.randn(rank, module.in_features, generator=generator) / module.in_features ** 0.5
        up = torch.randn(module.out_features, rank, generator=generator) * 0.05
        state[f"{name}.lora_A.weight"] = down
        state[f"{name}.lora_B.weight"] = up
    if not state:
        raise ValueError(f"targets {targets!r} match no linear layer of the transformer")
    return state


def save_worldwander_ckpt(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a PEFT-named LoRA state dict as the released WorldWander checkpoints are laid out:
    ``checkpoint["state_dict"]["lora"]`` with ``...lora_A.default.weight`` names, beside the
    other things a Lightning checkpoint holds (hyper-parameters object, optimizer state, loops)."""
    lora = collections.OrderedDict()
    for key, value in state_dict.items():
        for half in (".lora_A.", ".lora_B."):
            if half in key and f"{half}default." not in key:
                key = key.replace(half, f"{half}default.")
        lora[key] = value.detach().clone()
    first = next(iter(lora.values()))
    checkpoint = {
        "epoch": 0,
        "global_step": 8001,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": {"lora": lora},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1}}}},
        "callbacks": {},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(8001.0), "exp_avg": torch.zeros_like(first),
                                            "exp_avg_sq": torch.zeros_like(first)}},
                              "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.95), "eps": 1e-8,
                                                "weight_decay": 0.01, "params": [0]}]}],
        "lr_schedulers": [{"last_epoch": 8001}],
        "hyper_parameters": TrainingHyperParameters(rank=80, learning_rate=1e-4, task="three2one",
                                                    prompt="Transform it into the first-person perspective."),
    }
    path = Path(path)
    torch.save(checkpoint, path)
    return path
