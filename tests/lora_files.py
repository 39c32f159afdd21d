"""LoRA files in every layout users have, written from one PEFT-named LoRA (diffusers module names):
diffusers/PEFT, original Wan / DiffSynth and kohya / musubi. Shared by the LoRA layout tests and the
native ComfyUI tests. The name table is written from ComfyUI's module definitions
(comfy/ldm/wan/model.py), independently of the core's, and checked against diffusers' single-file
converter in test_lora_layouts.py."""

import torch
from safetensors.torch import save_file

ORIGINAL_NAMES = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}


def original_name(diffusers_module):
    if diffusers_module == "proj_out":
        return "head.head"
    _, index, inner = diffusers_module.split(".", 2)
    return f"blocks.{index}.{ORIGINAL_NAMES[inner]}"


def split_peft(state):
    """{module: (A, B)} from a PEFT-named state dict."""
    modules = {}
    for key, value in state.items():
        module, half = key.rsplit(".lora_", 1)
        modules.setdefault(module, [None, None])["B" in half] = value
    return modules


def write_peft(state, path, prefix="", adapter=""):
    out = {prefix + k.replace(".lora_A.", f".lora_A.{adapter}").replace(".lora_B.", f".lora_B.{adapter}"): v
           for k, v in state.items()}
    save_file(out, path)
    return path


def write_original(state, path, alpha=None, down_up=False):
    out = {}
    for module, (a, b) in split_peft(state).items():
        stem = f"diffusion_model.{original_name(module)}"
        out[f"{stem}.{'lora_down' if down_up else 'lora_A'}.weight"] = a
        out[f"{stem}.{'lora_up' if down_up else 'lora_B'}.weight"] = b
        if alpha is not None:
            out[f"{stem}.alpha"] = torch.tensor(float(alpha))
    save_file(out, path)
    return path


def write_kohya(state, path, alpha):
    out = {}
    for module, (a, b) in split_peft(state).items():
        stem = "lora_unet_" + original_name(module).replace(".", "_")
        out[f"{stem}.lora_down.weight"] = a
        out[f"{stem}.lora_up.weight"] = b
        out[f"{stem}.alpha"] = torch.tensor(float(alpha))
    save_file(out, path)
    return path
