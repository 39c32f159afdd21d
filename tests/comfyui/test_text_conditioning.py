"""WorldWander Text Encode's CONDITIONING outputs equal what ComfyUI's stock text path gives
(CLIPLoader type "wan" + CLIPTextEncode) on the same UMT5 file, and repeat runs come from the
prompt cache without loading UMT5.

Stock ComfyUI builds UMT5 from a fixed XXL config (comfy/text_encoders/umt5_config_xxl.json) and
recognises the file by its 24th block: by a width of 4096 (ComfyUI < 0.9) or by a feed-forward width
of 10240 (later). So the UMT5 here keeps 24 blocks and the width the host under test looks at, and is
tiny otherwise (tiny_native_files.umt5_xxl_widths asks the host which), and only the temporary ComfyUI
copy's config is changed to match. The file has the released file's layout: fp8 linear weights with
per-tensor scales, the other tensors in fp16, the tokenizer inside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .server import REPO_ROOT, copy_comfyui
from .tiny_native_files import umt5_xxl_widths, write_detectable_umt5


@pytest.fixture(scope="module")
def figures(comfy_path, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("conditioning")
    comfy_dir = copy_comfyui(comfy_path, root / "ComfyUI")
    widths = umt5_xxl_widths(comfy_dir)
    text_file = f"tiny_umt5_d{widths['d_model']}_ff{widths['d_ff']}_fp8_scaled.safetensors"
    config = write_detectable_umt5(root / "models" / "text_encoders" / text_file, widths=widths)
    xxl = comfy_dir / "comfy" / "text_encoders" / "umt5_config_xxl.json"  # the temporary copy's, never the project's
    settings = json.loads(xxl.read_text())
    settings.update({key: config[key] for key in ("d_model", "num_layers", "num_heads", "d_kv", "d_ff", "vocab_size")})
    xxl.write_text(json.dumps(settings, indent=2))
    done = subprocess.run([sys.executable, str(REPO_ROOT / "tests/comfyui/conditioning_probe.py"), str(comfy_dir),
                           str(root / "models"), str(REPO_ROOT), str(root / "cache"), text_file],
                          capture_output=True, text=True, timeout=900, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["umt5_config"] = config
    print(f"\nUMT5 the host takes for UMT5-XXL: width {config['d_model']}, feed-forward {config['d_ff']}", end="")
    for task, rows in figures["tasks"].items():  # shown with pytest -s
        for which in ("positive", "negative"):
            row = rows[which]
            print(f"\n{task} {which}: max |ours - stock| {row['max_abs_diff']:.3g} of max |stock| "
                  f"{row['max_abs_stock']:.3g} (relative {row['max_abs_diff'] / row['max_abs_stock']:.2g})", end="")
    return figures


def test_comfyui_builds_it_as_it_builds_the_released_file(figures):
    assert figures["comfy_compute_dtypes"] == ["torch.float16"]  # from the file's unquantised tensors


@pytest.mark.parametrize("task", ["exo2ego", "ego2exo"])
@pytest.mark.parametrize("which", ["positive", "negative"])
def test_text_encode_gives_the_stock_conditioning(figures, task, which):
    row = figures["tasks"][task][which]
    assert row["ours_shape"] == row["stock_shape"] == [1, 512, figures["umt5_config"]["d_model"]]
    assert row["entries"] == [1, 1] and row["ours_keys"] == row["stock_keys"] == ["pooled_output"]
    assert row["stock_pooled_output_is_none"] and row["stock_dtype"] == "torch.float32"
    assert row["real_tokens"][0] == row["real_tokens"][1] >= 1  # same tokens, padding zeroed on both sides
    assert row["max_abs_diff"] <= 1e-5 * row["max_abs_stock"], row


@pytest.mark.parametrize("task", ["exo2ego", "ego2exo"])
def test_repeat_runs_come_from_the_prompt_cache(figures, task):
    row = figures["tasks"][task]
    assert row["umt5_loads"] == [1, 0]  # loaded on the first run only
    assert row["positive"]["cached_equal"] and row["negative"]["cached_equal"]
