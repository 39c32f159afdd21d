"""The native nodes' own logic without a ComfyUI host (their numbers inside ComfyUI are in
tests/comfyui/test_native_parity.py): the rope patch re-indexes whole frames and leaves other calls
alone, Keep Target and WorldWander Noise read the target from the noise_mask, Restore Clip Size
undoes Load Video's fit as WorldWander Decode does, and bad inputs are named before any work."""

import types

import numpy as np
import pytest
import torch

from stub_comfy_host import call  # first: puts ComfyUI's comfy_api (the nodes' V3 schema) within reach
from nodes.context import WorldWanderInContext
from nodes.native_context import InContextRope, WorldWanderInContextNative, WorldWanderKeepTarget
from nodes.native_sampling import WorldWanderNoise, WorldWanderSigmas, _sigma_for_timestep
from nodes.native_video import WorldWanderRestoreClip
from wan_egoexo.comfy_interop import restore_frames
from wan_egoexo.errors import InputError
from wan_egoexo.in_context.layout import InContextLayout
from wan_egoexo.sampling.sampler import initial_noise
from wan_egoexo.sampling.solvers import reference_sigmas
from wan_egoexo.video.fit import FitOptions, fit_video


def frame_numbering_rope(t, h, w, t_start=0, steps_t=None, steps_h=None, steps_w=None, device=None, dtype=None):
    """Stands in for WanModel.rope_encode: a [1, tokens, 1, 2] table whose entries are (frame, token in frame)."""
    frames = torch.arange(t_start, t_start + t, dtype=torch.float32)
    tokens = torch.arange((h // 2) * (w // 2), dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(frames, tokens, indexing="ij"), dim=-1)
    return grid.reshape(1, -1, 1, 2)


@pytest.mark.parametrize("has_reference", [False, True])
def test_rope_patch_gives_each_frame_its_layout_index(has_reference):
    rope = InContextRope(frame_numbering_rope, has_reference, "collaborative")
    layout = InContextLayout(3, has_reference, "collaborative")
    table = rope(layout.total_frames, 4, 6)
    frames = table[0, :, 0, 0].view(layout.total_frames, -1)
    tokens = table[0, :, 0, 1].view(layout.total_frames, -1)
    assert frames[:, 0].tolist() == layout.frame_index().float().tolist()
    assert (frames == frames[:, :1]).all() and (tokens == torch.arange(6.0)).all()  # whole frames moved


def test_rope_patch_passes_other_calls_through_and_names_foreign_latents():
    rope = InContextRope(frame_numbering_rope, True, "collaborative")
    assert torch.equal(rope(1, 4, 6, t_start=-3), frame_numbering_rope(1, 4, 6, t_start=-3))
    with pytest.raises(InputError, match="latent: 6 latent frames cannot be the in-context sequence"):
        rope(6, 4, 6)  # 1 reference + 2F frames is odd


def test_rope_patch_passes_on_every_argument_it_does_not_know():
    """Newer hosts add keywords to rope_encode (transformer_options, source_id, ...): each one reaches the
    wrapped function, and the table is the same as without them."""
    seen = []

    def newer_host_rope(t, h, w, t_start=0, steps_t=None, steps_h=None, steps_w=None, device=None, dtype=None,
                        transformer_options={}, source_id=0, **future):  # noqa: B006 (the host's own default)
        seen.append({"t": t, "transformer_options": transformer_options, "source_id": source_id, **future})
        return frame_numbering_rope(t, h, w, t_start, steps_t, steps_h, steps_w, device, dtype)

    layout = InContextLayout(3, True, "collaborative")
    plain = InContextRope(frame_numbering_rope, True, "collaborative")(layout.total_frames, 4, 6, device="cpu")
    rope = InContextRope(newer_host_rope, True, "collaborative")
    options = {"rope_options": None}
    table = rope(layout.total_frames, 4, 6, device="cpu", dtype=None, transformer_options=options,
                 a_keyword_of_tomorrow=7)
    assert torch.equal(table, plain)
    assert seen[-1]["transformer_options"] is options and seen[-1]["a_keyword_of_tomorrow"] == 7
    assert seen[-1]["t"] == int(layout.frame_index().max()) + 1  # only the frame count was replaced
    # positional arguments are named by the wrapped signature: t_start=-3 keeps the plain table
    assert torch.equal(rope(1, 4, 6, -3, transformer_options=options), frame_numbering_rope(1, 4, 6, t_start=-3))
    # a context stream (source_id > 0) is not the in-context sequence: its plain table, its source_id
    assert torch.equal(rope(2, 4, 6, source_id=1, transformer_options=options), frame_numbering_rope(2, 4, 6))
    assert seen[-1]["source_id"] == 1 and seen[-1]["t"] == 2


def _in_context_latent(has_reference=True, frames=3, batch=1):
    layout = InContextLayout(frames, has_reference)
    samples = torch.randn(batch, 48, layout.total_frames, 4, 6)
    mask = layout.denoise_mask().view(1, 1, -1, 1, 1).repeat(batch, 1, 1, 4, 6)
    return layout, {"samples": samples, "noise_mask": mask, "batch_index": [0]}


def test_keep_target_returns_only_the_target_frames():
    layout, latent = _in_context_latent()
    (kept,) = call(WorldWanderKeepTarget, latent).result
    assert torch.equal(kept["samples"], latent["samples"][:, :, layout.target])
    assert "noise_mask" not in kept and kept["batch_index"] == [0]
    with pytest.raises(InputError, match="samples: has no video noise_mask"):
        call(WorldWanderKeepTarget, {"samples": latent["samples"]})


def test_worldwander_noise_is_the_samplers_noise_on_the_target():
    layout, latent = _in_context_latent(batch=2)
    (source,) = call(WorldWanderNoise, 1234).result
    noise = source.generate_noise(latent)
    assert source.seed == 1234 and noise.shape == latent["samples"].shape
    assert torch.equal(noise[:, :, layout.target], initial_noise((2, 48, 3, 4, 6), 1234))
    assert torch.equal(noise[:, :, :layout.clean_frames], torch.zeros(2, 48, layout.clean_frames, 4, 6))
    plain = {"samples": torch.zeros(1, 48, 2, 4, 6)}  # no mask: the whole latent is the target
    assert torch.equal(source.generate_noise(plain), initial_noise((1, 48, 2, 4, 6), 1234))


def test_sigmas_node_is_the_reference_schedule():
    (sigmas,) = call(WorldWanderSigmas, 7, 5.0, "unipc", 1.0).result
    assert torch.equal(sigmas, reference_sigmas("unipc", 7, 5.0)) and sigmas.dtype == torch.float32


def test_model_sigma_gives_comfyuis_timestep_to_the_last_bit():
    # ComfyUI computes the timestep as float32(sigma * 1000); for a few integers (127, say) no float32 sigma
    # lands exactly on it, and the nearest product is one float32 step away
    exact = 0
    for timestep in [float(t) for t in range(1, 1001)] + [999.9990234375, 0.5]:
        sigma = _sigma_for_timestep(timestep)
        product = float(sigma * 1000)
        assert sigma.dtype == torch.float32 and abs(product - timestep) <= np.spacing(np.float32(timestep))
        exact += product == timestep
    assert exact >= 990


def _fitted_clip():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, size=(11, 70, 50, 3), dtype=np.uint8)  # odd size, 11 frames at 8 fps
    return fit_video(clip, 8.0, FitOptions(width=64, height=96, max_frames=None, fps=None, mode="pad"))


def test_restore_clip_undoes_the_fit_like_worldwander_decode():
    video, fit = _fitted_clip()
    decoded = ((video.permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)  # an IMAGE batch of the fitted frames
    frames, fps = call(WorldWanderRestoreClip, decoded, fit).result
    assert frames.shape == (11, 70, 50, 3) and fps == fit.output_fps
    assert torch.equal(frames, restore_frames(video[None], fit))
    with pytest.raises(InputError, match=r"images: 13 frames of 32x96, but the fit describes 13 frames of 64x96 "
                                         r"\(11 of them real\)"):
        call(WorldWanderRestoreClip, decoded[:, :, :32], fit)
    with pytest.raises(InputError, match="images: 10 frames of 64x96"):
        call(WorldWanderRestoreClip, decoded[:10], fit)


def test_in_context_native_names_a_missing_reference_before_touching_the_model():
    message = WorldWanderInContext.validate_inputs("ego2exo")
    assert WorldWanderInContextNative.validate_inputs("ego2exo") == message and "reference" in message
    assert WorldWanderInContextNative.validate_inputs("exo2ego") is True
    with pytest.raises(InputError, match="reference: the ego2exo task needs a reference image"):
        call(WorldWanderInContextNative, None, None, torch.rand(5, 64, 64, 3), "ego2exo", "collaborative")


def test_in_context_native_names_a_model_or_vae_that_is_not_wan22():
    source = torch.rand(5, 64, 64, 3)
    wan21 = types.SimpleNamespace(get_model_object=lambda name: types.SimpleNamespace(
        latent_channels=16, rope_encode=frame_numbering_rope, patch_size=(1, 2, 2)))
    with pytest.raises(InputError, match="model: expected the Wan2.2-TI2V-5B MODEL .* with 16 latent channels"):
        call(WorldWanderInContextNative, wan21, None, source, "exo2ego", "collaborative")
    wan22 = types.SimpleNamespace(get_model_object=lambda name: types.SimpleNamespace(
        latent_channels=48, rope_encode=frame_numbering_rope, patch_size=(1, 2, 2)))
    with pytest.raises(InputError, match="vae: has 16 latent channels; expected the Wan2.2 VAE"):
        call(WorldWanderInContextNative, wan22, types.SimpleNamespace(latent_channels=16), source, "exo2ego",
             "collaborative")
    with pytest.raises(InputError, match="source: 6 frames of 64x64 are not on the model grid"):
        call(WorldWanderInContextNative, wan22, None, torch.rand(6, 64, 64, 3), "exo2ego", "collaborative")


def test_lora_file_reads_are_kept_across_runs_until_the_file_changes(tmp_path, monkeypatch):
    """A V3 node has no instance to keep its last read on (it runs on a locked class copy): the module
    keeps the last few files, by path, size and modification time."""
    import nodes.native_lora as native_lora

    reads = []
    monkeypatch.setattr(native_lora, "read_original_wan_modules", lambda path: reads.append(path) or (path, len(reads)))
    monkeypatch.setattr(native_lora, "_READ_CACHE", type(native_lora._READ_CACHE)())
    files = [tmp_path / f"lora{i}.safetensors" for i in range(native_lora.READ_CACHE_FILES + 1)]
    for path in files:
        path.write_bytes(b"x")
    first = native_lora.read_cached(str(files[0]))
    assert native_lora.read_cached(str(files[0])) is first and len(reads) == 1  # e.g. a strength change
    files[0].write_bytes(b"xy")  # the file changed: read again
    assert native_lora.read_cached(str(files[0])) != first and len(reads) == 2
    for path in files[1:]:
        native_lora.read_cached(str(path))
    assert len(native_lora._READ_CACHE) == native_lora.READ_CACHE_FILES  # the oldest file was let go
    native_lora.read_cached(str(files[-1]))
    assert len(reads) == 2 + len(files) - 1
