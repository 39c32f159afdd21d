"""The authors' WorldWander transformer forward (showlab/WorldWander, ``models/wan2/transformer_wan.py``:
``CustomWanTransformer3DModel``), imported from a checkout the user provides (never from this
repository) and given the weights of a diffusers transformer, for the CFG benchmark's two-pass row.

Their pipeline (``models/wan2/custom_pipeline.py``) runs, per step, the forward on the conditional
prompt and then on the negative one, with the clean parts in ``attention_kwargs`` and per-token
timesteps: 0 on the reference and source tokens, t on the target's.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch

_FILES = ("transformer_wan.py", "wan_block.py", "wan_embedder.py")


def authors_model(checkout, transformer, dtype: torch.dtype, device):
    """``CustomWanTransformer3DModel`` from ``checkout`` with ``transformer``'s weights."""
    from benchmarks.common import cast_like_loader

    source = Path(checkout) / "models" / "wan2"
    if not all((source / name).is_file() for name in _FILES):
        raise SystemExit(f"--authors-repo: {checkout} has no models/wan2/{{{','.join(_FILES)}}}; clone "
                         "https://github.com/showlab/WorldWander there.")
    root = Path(tempfile.mkdtemp(prefix="worldwander_authors_"))
    (root / "models" / "wan2").mkdir(parents=True)
    for name in _FILES:
        shutil.copy2(source / name, root / "models" / "wan2" / name)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from models.wan2.transformer_wan import CustomWanTransformer3DModel  # noqa: PLC0415

    with torch.device(device):
        model = CustomWanTransformer3DModel(**{k: v for k, v in transformer.config.items() if not k.startswith("_")})
    result = model.load_state_dict(transformer.state_dict(), strict=False)
    if result.missing_keys:
        raise RuntimeError(f"the authors' model has weights ours lacks: {result.missing_keys[:5]}")
    return cast_like_loader(model, dtype).eval().requires_grad_(False)


def authors_flow(model, target, timestep, text, source, reference=None):
    """One forward of the authors' model: the target's flow, collaborative positions."""
    dtype = model.patch_embedding.weight.dtype
    patch = model.config.patch_size
    per_frame = (target.shape[3] // patch[1]) * (target.shape[4] // patch[2])
    clean = (source.shape[2] + (0 if reference is None else 1)) * per_frame
    per_token = torch.cat([torch.zeros(target.shape[0], clean, device=target.device),
                           timestep.float()[:, None].expand(-1, target.shape[2] * per_frame)], dim=1)
    kwargs = {"encoder_condition_states": source.to(dtype), "use_collaborative_position_encoding": True,
              "encoder_ref_states": None if reference is None else reference.to(dtype)}
    return model(hidden_states=target.to(dtype), timestep=per_token, encoder_hidden_states=text.to(dtype),
                 attention_kwargs=kwargs, return_dict=False)[0]
