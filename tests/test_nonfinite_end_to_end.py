"""Issue 11's non-finite cases end to end through ``python -m wan_egoexo translate`` on the tiny
real-layout models: each stops with exit 1 and a message naming the cause, and nothing is written
(no output, no partial file); a damaged prompt-cache entry is re-encoded and the run succeeds."""

import math
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import wan_egoexo.cli.main as cli
from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt
from wan_egoexo.tiny.models_folder import build_tiny_models_folder, make_demo_clip
from wan_egoexo.tiny.transformer import build_tiny_transformer
from wan_egoexo.video.read_write import read_video

SMALL = ["--width", "64", "--height", "64", "--frames", "5", "--steps", "2", "--task", "exo2ego"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_demo_clip(tmp_path_factory.mktemp("clip") / "in.mp4", frames=12, width=64, height=64)


@pytest.fixture
def models(tmp_path):
    files = build_tiny_models_folder(tmp_path / "models", tasks=["exo2ego"])["exo2ego"]
    return tmp_path / "models", files


def _translate(models_dir, clip, out, *extra):
    return cli.main(["translate", "--video", str(clip), "--out", str(out), "--models-dir", str(models_dir),
                     "--no-prompt-cache", *SMALL, *extra])


def _nothing_written(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]


@pytest.mark.parametrize("lora, message", [
    ("--no-lora", "NaN/Inf latents at step 1 of 2"),  # found by the sampler's latent watch
    ("--lora-mode=merged", "No LoRA was merged"),  # found when the LoRA is merged into that weight
])
def test_nan_weights_stop_the_run(models, clip, tmp_path, capsys, lora, message):
    models_dir, files = models
    tensors = load_file(str(files.transformer))
    key = "model.diffusion_model.blocks.0.self_attn.q.weight"
    tensors[key][0, 0] = math.nan
    save_file(tensors, str(files.transformer))
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    assert _translate(models_dir, clip, out, lora) == 1
    err = capsys.readouterr().err
    assert message in err and "blocks.0.attn1.to_q.weight" in err and "model file is damaged" in err, err
    _nothing_written(out)


def test_a_nan_lora_stops_the_run(models, clip, tmp_path, capsys):
    models_dir, files = models
    state = random_lora_state_dict(build_tiny_transformer(0), rank=4, seed=1)
    state[next(iter(state))][0, 0] = math.nan
    save_worldwander_ckpt(state, files.lora)
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    assert _translate(models_dir, clip, out) == 1
    err = capsys.readouterr().err
    assert "has NaN/Inf weights" in err and "the LoRA" in err, err
    _nothing_written(out)


@pytest.mark.parametrize("option, value, message", [
    ("--cfg", "inf", "argument --cfg: 'inf' is invalid; expected a finite number from 0.0 to 100.0"),
    ("--shift", "1e300", "argument --shift: '1e300' is invalid; expected a finite number > 0.0 and <= 100.0"),
    ("--lora-strength", "1e30", "argument --lora-strength: '1e30' is invalid; expected a finite number from -100.0 "
                                "to 100.0"),
])
def test_out_of_range_numbers_stop_the_run(models, clip, tmp_path, capsys, option, value, message):
    """The command line refuses them while it parses (usage error, exit 2), before any file is opened."""
    models_dir, _ = models
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    with pytest.raises(SystemExit) as stopped:
        _translate(models_dir, clip, out, option, value)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
    _nothing_written(out)


def test_a_damaged_prompt_cache_entry_is_reencoded_and_rewritten(models, clip, tmp_path):
    models_dir, _ = models
    cache = tmp_path / "cache"
    outs = []
    for index in range(3):
        out = tmp_path / f"o{index}.mp4"
        assert cli.main(["translate", "--video", str(clip), "--out", str(out), "--models-dir", str(models_dir),
                         "--prompt-cache", str(cache), *SMALL]) == 0
        outs.append(read_video(out).frames)
        if index == 0:
            entries = sorted(cache.glob("*.safetensors"))
            clean = {p: p.read_bytes() for p in entries}
            embeddings = {p: load_file(str(p))["embedding"].clone() for p in entries}  # not a view of the file
            for entry in entries:  # a NaN in the data, the header intact
                data = bytearray(clean[entry])
                (length,) = struct.unpack("<Q", data[:8])
                data[8 + length: 12 + length] = struct.pack("<f", math.nan)
                entry.write_bytes(bytes(data))
        if index == 1:  # every entry was rewritten with the same numbers (its metadata order may differ)
            assert all(torch.equal(load_file(str(p))["embedding"], embeddings[p]) for p in entries)
            entries[0].unlink()
            entries[0].mkdir()  # a directory in an entry's place
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    # encoded alone this time, not batched with the other prompt: equal up to float rounding
    assert entries[0].is_file()
    torch.testing.assert_close(load_file(str(entries[0]))["embedding"], embeddings[entries[0]], rtol=1e-5, atol=1e-6)
