"""The latent cache: prepare writes shards + index with every prompt, training from it loads no VAE
or text encoder, and gives exactly the losses and LoRA of a run straight from the videos."""

import json

import pytest
import torch

from training.cache import LatentCache, latent_name
from training.loop import train
from training.prepare import prepare_cache
from training.session import build_session
from wan_egoexo.errors import InputError
from wan_egoexo.tasks import EGO2EXO, EXO2EGO


def test_prepared_cache_holds_every_clip_variant_and_prompt(tiny_root):
    cache = LatentCache(tiny_root / "cache")
    assert [s["stem"] for s in cache.samples] == ["pair00", "pair01", "pair02"]
    assert all(s["has_reference"] for s in cache.samples)
    assert cache.settings["variants"] == 2 and cache.settings["num_frames"] == 9
    ego0, ego1 = (cache.latents("pair00", v)["ego"] for v in (0, 1))
    assert ego0.shape == (48, 3, 4, 4) and cache.latents("pair00", 0)["reference"].shape == (48, 1, 4, 4)
    assert not torch.equal(ego0, ego1)  # another window / posterior sample per variant
    table = cache.prompt_table()
    assert set(table.texts()) == {EXO2EGO.prompt, EGO2EXO.prompt, ""}
    assert table.batch([EXO2EGO.prompt]).shape == (1, 512, 32)
    index = json.loads((tiny_root / "cache" / "index.json").read_text())
    assert index["tensors"][latent_name("pair02", 1, "exo")].endswith(".safetensors")


def test_training_from_cache_equals_training_from_videos(make_config, tiny_root, tmp_path):
    steps = {"max_steps": 3, "batch_size": 2}  # 6 samples: the cache's 2 variants cover both epochs
    from_cache = train(make_config(tmp_path / "cache_run", data={"cache": str(tiny_root / "cache")}, train=steps))
    from_video = train(make_config(tmp_path / "video_run", train=steps))
    assert from_video.losses == from_cache.losses
    for key, value in from_video.lora_state.items():
        assert torch.equal(from_cache.lora_state[key], value), key


def test_cache_guards(make_config, tiny_root, tmp_path):
    with pytest.raises(InputError, match="already holds a cache"):
        prepare_cache(make_config(data={"cache": str(tiny_root / "cache")}))
    with pytest.raises(InputError, match=r"data\.num_frames: cache 9, config 5"):
        build_session(make_config(data={"cache": str(tiny_root / "cache"), "num_frames": 5}))
    with pytest.raises(InputError, match=r"\['pair01'\] are in the training cache"):
        build_session(make_config(data={"cache": str(tiny_root / "cache")},
                                  validation={"every": 5, "stems": ["pair01"]}))
