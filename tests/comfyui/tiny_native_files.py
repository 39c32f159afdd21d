"""Tiny models that ComfyUI's own loaders accept, for the native workflows and the text comparison.

ComfyUI builds Wan2.2-5B's WanModel with a text width of 4096 whatever the file says. So beside the
pack's tiny models (text width 32) the server's models folder gets a tiny transformer with text width
4096 and a UMT5 of 24 blocks of width 4096 (4 heads of 8, a feed-forward of 32, 300 words: 23 M
parameters), under names of their own; the native workflows load that UMT5 with the pack's loader and
are pointed at both (test_e2e_workflows.prepared_workflow).

Stock CLIPLoader "wan" (test_text_conditioning.py) recognises a file as UMT5-XXL by its 24th block, by a
rule that depends on the host: ComfyUI before 0.9 by the block's input width 4096, later ones by its
feed-forward width 10240. A UMT5 both 4096 and 10240 wide would have 3 G parameters, so the widths are
the host's own: ``umt5_xxl_widths`` asks the host's detect_te_model (on shapes only) which of the tiny
candidates it takes for UMT5-XXL.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

NATIVE_TRANSFORMER = "tiny_text4096_wan2.2_ti2v_5B.safetensors"
NATIVE_TEXT_ENCODER = "tiny_umt5_d4096_fp8_scaled.safetensors"
DETECTABLE_UMT5 = dict(d_model=4096, num_layers=24, num_heads=4, d_kv=8, d_ff=32)
# Tiny UMT5 widths that some ComfyUI takes for UMT5-XXL, first preferred: 4096 wide (ComfyUI < 0.9), then a
# feed-forward 10240 wide (ComfyUI >= 0.9; 24 blocks of 3 x 10240 x 32 weights: 24 M parameters).
UMT5_XXL_CANDIDATES = (DETECTABLE_UMT5, dict(d_model=32, num_layers=24, num_heads=4, d_kv=8, d_ff=10240))
_ASK_THE_HOST = """
import json, sys
sys.path.insert(0, sys.argv[1])
import comfy.options
comfy.options.enable_args_parsing(False)
from comfy.cli_args import args
args.cpu = True
import torch
import comfy.sd
found = []
for widths in json.loads(sys.argv[2]):
    last = widths["num_layers"] - 1
    shape = (widths["d_ff"], widths["d_model"])
    state = {f"encoder.block.{last}.layer.1.DenseReluDense.{name}.weight": torch.empty(shape, device="meta")
             for name in ("wi_0", "wi_1")}
    found.append(comfy.sd.detect_te_model(state) == comfy.sd.TEModel.T5_XXL)
print(json.dumps(found))
"""


def umt5_xxl_widths(comfy_dir) -> dict:
    """The first of UMT5_XXL_CANDIDATES that the ComfyUI at comfy_dir recognises as UMT5-XXL (asked in a
    fresh process: its own comfy.sd.detect_te_model, on empty tensors of the candidates' shapes)."""
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    done = subprocess.run([sys.executable, "-c", _ASK_THE_HOST, str(comfy_dir), json.dumps(UMT5_XXL_CANDIDATES)],
                          capture_output=True, text=True, timeout=600, cwd=str(comfy_dir))
    if done.returncode != 0:
        raise RuntimeError(f"could not ask {comfy_dir} how it recognises UMT5-XXL:\n{done.stderr[-4000:]}")
    recognised = json.loads(done.stdout.strip().splitlines()[-1])
    for widths, taken in zip(UMT5_XXL_CANDIDATES, recognised):
        if taken:
            return dict(widths)
    raise RuntimeError(f"{comfy_dir} recognises none of the tiny UMT5 candidates {UMT5_XXL_CANDIDATES} as "
                       "UMT5-XXL: read its comfy/sd.py detect_te_model and add one that it does.")


def write_detectable_umt5(path, other_dtype=torch.float16, widths=DETECTABLE_UMT5) -> dict:
    """A random UMT5 of the given widths (one that ComfyUI detects as UMT5-XXL: see umt5_xxl_widths), in
    the released file's layout (fp8 linear weights with per-tensor scales, the rest in ``other_dtype``,
    the tokenizer inside); returns its config."""
    from transformers import UMT5Config, UMT5EncoderModel  # noqa: PLC0415

    from wan_egoexo.tiny.text_encoder import TINY_UMT5_CONFIG, save_umt5_fp8_scaled, train_tiny_spiece  # noqa: PLC0415

    config = dict(TINY_UMT5_CONFIG, **widths)
    torch.manual_seed(0)
    model = UMT5EncoderModel(UMT5Config(**config)).eval()
    # T5's own initialisation for the linears and embeddings keeps 24 blocks well conditioned (float32 is
    # within 1.5e-6 of float64, so 1e-5 separates a real difference from rounding); the layer norms and
    # relative-position biases, which it sets to 1 and near 0, are made clearly non-trivial.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.uniform_(0.5, 1.5)
            elif "relative_attention_bias" in name:
                param.normal_(0.0, 1.0)
    with tempfile.TemporaryDirectory() as work:
        spiece = train_tiny_spiece(work)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_umt5_fp8_scaled(model, spiece, path, other_dtype=other_dtype)
    return config


def add_native_models(models_dir: Path) -> None:
    """The transformer and UMT5 above, beside the tiny models folder's own files (same LoRAs: their
    shapes do not depend on the text width)."""
    from wan_egoexo.tiny.transformer import build_tiny_transformer, save_transformer_single_file  # noqa: PLC0415

    transformer = build_tiny_transformer(0, text_dim=4096)
    save_transformer_single_file(transformer, Path(models_dir) / "diffusion_models" / NATIVE_TRANSFORMER,
                                 prefix="model.diffusion_model.", dtype=torch.float16)
    write_detectable_umt5(Path(models_dir) / "text_encoders" / NATIVE_TEXT_ENCODER)
