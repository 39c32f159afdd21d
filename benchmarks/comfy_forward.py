"""ComfyUI 0.3.64's own Wan forward (``comfy/ldm/wan/model.py``) on the in-context sequence, for the
benchmarks to compare against: imported from a temporary copy of a ComfyUI folder (never from this
repository), with the weights of a diffusers transformer renamed to the original Wan keys.

ComfyUI computes the modulation per latent frame in the model's dtype (its WAN22 model turns the
denoise mask into one timestep per frame); here the frame timesteps are 0 on the clean frames and t
on the target frames, as in predict_flow. Its rotary positions are consecutive, which is
predict_flow's "uniform" layout, so the two outputs can be compared as well as timed. Attention is
PyTorch SDPA (ComfyUI's --use-pytorch-cross-attention), as in our forward.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch

_PARTS = ("comfy", "comfy_api", "comfy_execution", "folder_paths.py")


def copy_comfyui(source) -> Path:
    """The parts of a ComfyUI folder its model code imports, copied to a temporary folder."""
    source = Path(source)
    if not (source / "comfy" / "ldm" / "wan" / "model.py").is_file():
        raise SystemExit(f"--comfyui: {source} is not a ComfyUI folder with comfy/ldm/wan/model.py")
    target = Path(tempfile.mkdtemp(prefix="comfyui_copy_"))
    for part in _PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part)
        elif (source / part).is_file():
            shutil.copy2(source / part, target / part)
    return target


def _import_wan(root: Path):
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.cli_args  # noqa: PLC0415

    comfy.cli_args.args.cpu = not torch.cuda.is_available()
    comfy.cli_args.args.use_pytorch_cross_attention = True
    import comfy.ldm.wan.model as wan  # noqa: PLC0415
    import comfy.ops  # noqa: PLC0415

    return wan, comfy.ops


def comfy_wan_model(root: Path, transformer, dtype: torch.dtype, device):
    """ComfyUI's WanModel with ``transformer``'s weights (a diffusers WanTransformer3DModel)."""
    from wan_egoexo.tiny.transformer import original_key

    wan, ops = _import_wan(root)
    cfg = transformer.config
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    model = wan.WanModel(model_type="t2v", patch_size=tuple(cfg.patch_size), text_len=512, in_dim=cfg.in_channels,
                         dim=dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=cfg.text_dim,
                         out_dim=cfg.out_channels, num_heads=cfg.num_attention_heads, num_layers=cfg.num_layers,
                         qk_norm=True, cross_attn_norm=cfg.cross_attn_norm, eps=cfg.eps, device=device, dtype=dtype,
                         operations=ops.disable_weight_init)
    own = model.state_dict()
    weights = {original_key(name): tensor for name, tensor in transformer.state_dict().items()}
    missing = set(own) - set(weights)
    if missing:
        raise RuntimeError(f"ComfyUI's WanModel has keys the diffusers model lacks: {sorted(missing)[:5]}")
    model.load_state_dict({k: weights[k].to(device=device, dtype=own[k].dtype) for k in own}, strict=True)
    return model.eval().requires_grad_(False)


def comfy_in_context_flow(model, target, timestep, text, source, reference=None):
    """The flow prediction for the target frames through ComfyUI's forward (uniform positions)."""
    dtype = model.blocks[0].self_attn.q.weight.dtype
    parts = ([reference] if reference is not None else []) + [source, target]
    hidden = torch.cat([part.to(dtype) for part in parts], dim=2)
    frames = target.shape[2]
    clean = hidden.shape[2] - frames
    per_frame = torch.cat([torch.zeros(target.shape[0], clean, device=hidden.device),
                           timestep.float()[:, None].expand(-1, frames).to(hidden.device)], dim=1)
    out = model(hidden, per_frame, text.to(dtype))
    return out[:, :, -frames:]
