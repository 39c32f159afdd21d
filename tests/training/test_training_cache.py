"""The latent cache: prepare stores the VAE posterior (mean, std) of several windows per clip and every
prompt; each epoch then draws a window and a fresh posterior sample (as the authors' trainer does at
every visit), reproducibly for a seed; training from it loads no VAE or text encoder and equals a run
straight from the videos; a failed prepare leaves nothing behind."""

import contextlib
import io
import json
import shutil

import pytest
import torch

from wan_egoexo_training.step.batches import encode_posteriors
from wan_egoexo_training.data.cache import LatentCache
from wan_egoexo_training.data.clips import spread_starts
from wan_egoexo_training.data.dataset import CachedLatentDataset, VideoTripletDataset
from wan_egoexo_training.run.loop import train
from wan_egoexo_training.prepare import prepare_cache
from wan_egoexo_training.run.session import build_session, checked_discovery, window_settings
from wan_egoexo_training.run.distributed import DistributedContext
from wan_egoexo.errors import InputError, ModelFileError
from wan_egoexo.in_context.tasks import EGO2EXO, EXO2EGO
from wan_egoexo.models.vae_loader import load_vae

LATENT = (48, 3, 4, 4)  # 9 frames of 64x64


def test_prepared_cache_holds_the_posterior_of_every_window_and_each_prompt(tiny_root, make_config):
    cache = LatentCache(tiny_root / "cache")
    assert [s["stem"] for s in cache.samples] == ["pair00", "pair01", "pair02"]
    # 18 frames, 9 at stride 2 span 17: starts 0 and 1, both kept (prepare.windows 4)
    assert all(s["starts"] == [0, 1] and s["frames"] == 18 and s["has_reference"] for s in cache.samples)
    assert cache.settings["windows"] == 4 and cache.settings["mirrored"] is False
    table = cache.prompt_table()
    assert set(table.texts()) == {EXO2EGO.prompt, EGO2EXO.prompt, ""}
    assert table.batch([EXO2EGO.prompt]).shape == (1, 512, 32)

    # the stored mean / std are the VAE posterior of exactly that window's pixels, normalised
    config = make_config()
    discovery, geometry = checked_discovery(config, DistributedContext(), True)
    videos = VideoTripletDataset(discovery.triplets, geometry, window_settings(config), config.seed, True)
    vae = load_vae(tiny_root / "models" / "vae" / "wan2.2_vae.safetensors", device="cpu")
    posterior = encode_posteriors(vae, videos.pixels(1, 1, False, True))
    stored = cache.posteriors("pair01", 1, False, with_reference=True)
    for view in ("ego", "exo", "reference"):
        for got, want in zip(stored[view], posterior[view]):
            assert torch.equal(got, want), view
    assert stored["ego"][0].shape == LATENT and stored["reference"][0].shape == (48, 1, 4, 4)
    latent_dist = vae.encode(videos.pixels(1, 1, False, False)["ego"][None]).latent_dist
    std = torch.tensor(vae.config.latents_std).view(-1, 1, 1, 1)
    torch.testing.assert_close(stored["ego"][1], latent_dist.std[0] / std)
    assert not torch.equal(stored["ego"][0], cache.posteriors("pair01", 0, False, False)["ego"][0])


def test_windows_spread_over_long_clips():
    assert spread_starts(100, 49, 2, 4) == [0, 1, 2, 3]  # the authors' ~100-frame clips: every start
    assert spread_starts(200, 49, 2, 4) == [0, 34, 69, 103]
    assert spread_starts(200, 49, 2, 1) == [0]
    assert spread_starts(97, 49, 2, 8) == [0]


def test_each_epoch_draws_a_new_window_and_a_new_posterior_sample(tiny_root):
    cache = LatentCache(tiny_root / "cache")
    dataset = CachedLatentDataset(cache, need_reference=True, seed=7)
    clip = 1
    visits = [dataset[epoch * len(dataset) + clip] for epoch in range(12)]
    starts = [v["start"] for v in visits]
    assert set(starts) == {0, 1} and 3 <= starts.count(0) <= 9, starts  # windows vary, uniform over those kept
    for a in range(len(visits)):
        for b in range(a + 1, len(visits)):
            assert not torch.equal(visits[a]["ego"], visits[b]["ego"]), (a, b)  # a fresh sample every visit
    # a sample is mean + std * N(0, 1): standardised residuals of many draws look like unit Gaussian noise
    residuals = []
    for visit in visits:
        mean, std = cache.posteriors("pair01", visit["start"], False, True)["exo"]
        residuals.append(((visit["exo"] - mean) / std).flatten())
    residuals = torch.cat(residuals)
    assert abs(float(residuals.mean())) < 0.05 and abs(float(residuals.std()) - 1.0) < 0.05
    # the same seed reproduces every draw; another seed draws others
    again = CachedLatentDataset(cache, need_reference=True, seed=7)
    assert all(torch.equal(again[e * 3 + clip]["ego"], visits[e]["ego"]) for e in range(12))
    other = CachedLatentDataset(cache, need_reference=True, seed=8)[clip]
    assert not torch.equal(other["ego"], visits[0]["ego"])


def test_training_from_cache_equals_training_from_videos(make_config, tiny_root, tmp_path):
    steps = {"max_steps": 3, "batch_size": 2}  # 6 samples: two epochs, each with new windows and samples
    from_cache = train(make_config(tmp_path / "cache_run", data={"cache": str(tiny_root / "cache")}, train=steps))
    from_video = train(make_config(tmp_path / "video_run", train=steps))
    assert from_video.losses == from_cache.losses
    for key, value in from_video.lora_state.items():
        assert torch.equal(from_cache.lora_state[key], value), key


@pytest.fixture(scope="module")
def two_pairs(tmp_path_factory, config_for):
    """A second, smaller dataset for the prepare tests (2 pairs of 18 frames) and a cache of it with
    mirrored windows (one window per clip, bf16); returns (data, cache, what prepare printed)."""
    from wan_egoexo_training.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("two")
    data = write_synthetic_dataset(root / "data", pairs=2, frames=18, size=64, seed=3)
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        prepare_cache(config_for(root / "unused", data={"root": str(data), "cache": str(root / "cache"), "hflip": 0.5},
                                 prepare={"windows": 1, "dtype": "bf16"}))
    return data, root / "cache", printed.getvalue()


def test_prepare_prints_disk_use_per_clip(two_pairs):
    _data, folder, err = two_pairs
    # per clip: 1 window x 2 orientations x (ego, exo) x (mean, std) of 48x3x4x4 bf16, plus the reference's
    per_clip = 2 * 2 * 2 * 48 * 3 * 4 * 4 * 2 + 2 * 2 * 48 * 4 * 4 * 2
    index = json.loads((folder / "index.json").read_text())
    assert [s["bytes"] for s in index["samples"]] == [per_clip] * 2
    assert [s["starts"] for s in index["samples"]] == [[0]] * 2
    line = f"pair01: 18 frames, 1 window(s) x 2 orientations of ego+exo+reference: {per_clip / 1e6:.2f} MB"
    assert line in err and f"total {2 * per_clip / 1e6:.2f} MB for 2 clips" in err
    assert sorted(p.name for p in folder.parent.iterdir()) == ["cache", "data"]  # no lock or temporary folder left


def test_mirrored_windows_are_cached_when_hflip_is_on(two_pairs):
    cache = LatentCache(two_pairs[1])
    assert cache.settings["mirrored"] is True
    plain, mirrored = (cache.posteriors("pair00", 0, flip, True) for flip in (False, True))
    assert not torch.equal(plain["ego"][0], mirrored["ego"][0]) and mirrored["reference"] is not None
    dataset = CachedLatentDataset(cache, need_reference=False, seed=7, hflip=0.5)
    assert {dataset[i * 2]["mirrored"] for i in range(16)} == {False, True}


def test_failed_prepare_leaves_nothing_and_keeps_the_old_cache(make_config, two_pairs, tmp_path, monkeypatch):
    import wan_egoexo_training.prepare as prepare_module

    data, prepared, _ = two_pairs
    calls = []

    def fail_on_third(vae, sample):
        calls.append(sample["stem"])
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return encode_posteriors(vae, sample)

    monkeypatch.setattr(prepare_module, "encode_posteriors", fail_on_third)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_cache(make_config(data={"root": str(data), "cache": str(tmp_path / "new")}))
    assert list(tmp_path.iterdir()) == []  # no folder, no shard, no lock

    shutil.copytree(prepared, tmp_path / "old")
    before = (tmp_path / "old" / "index.json").read_text()
    calls.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_cache(make_config(data={"root": str(data), "cache": str(tmp_path / "old")},
                                  prepare={"overwrite": True}))
    assert (tmp_path / "old" / "index.json").read_text() == before
    assert LatentCache(tmp_path / "old").samples[0]["starts"] == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_cache_guards(make_config, tiny_root, tmp_path):
    with pytest.raises(InputError, match="already holds a cache"):
        prepare_cache(make_config(data={"cache": str(tiny_root / "cache")}))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds other files \(todo.txt"):
        prepare_cache(make_config(data={"cache": str(tmp_path / "notes")}, prepare={"overwrite": True}))
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    with pytest.raises(InputError, match=r"data\.num_frames: cache 9, config 5"):
        build_session(make_config(data={"cache": str(tiny_root / "cache"), "num_frames": 5}))
    with pytest.raises(InputError, match=r"data\.hflip: 0\.5 needs mirrored windows"):
        build_session(make_config(data={"cache": str(tiny_root / "cache"), "hflip": 0.5}))
    with pytest.raises(InputError, match=r"\['pair01'\] are in the training cache"):
        build_session(make_config(data={"cache": str(tiny_root / "cache")},
                                  validation={"every": 5, "stems": ["pair01"]}))
    old = tmp_path / "old_cache"
    old.mkdir()
    (old / "index.json").write_text(json.dumps({"format": "worldwander-latent-cache/1"}))
    with pytest.raises(ModelFileError, match="one frozen sample per clip.*run prepare again"):
        LatentCache(old)


