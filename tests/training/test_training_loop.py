"""The training loop on the tiny model (CPU, from the prepared cache unless said otherwise): it learns,
an interrupted run resumes bit-identically, the saved LoRA loads through apply_lora and changes
predict_flow, validation renders an mp4, and a faulty dataset stops the run before any model loads."""

import pytest
import torch
from safetensors import safe_open

from wan_egoexo_training.step.batches import task_batch
from wan_egoexo_training.run.checkpoints import list_checkpoints
from wan_egoexo_training.data.dataset_checks import DatasetError
from wan_egoexo_training.run.distributed import load_trainable_state
from wan_egoexo_training.run.loop import train
from wan_egoexo_training.run.metrics_log import read_metrics
from wan_egoexo_training.step.objective import flow_matching_loss
from wan_egoexo_training.run.session import build_session
from wan_egoexo.in_context.predict_flow import predict_flow
from wan_egoexo.lora import apply_lora
from wan_egoexo.models.transformer_loader import load_transformer
from wan_egoexo.video.read_write import read_video


def fixed_draw_loss(session) -> float:
    """Mean loss over every cached sample with 8 fixed draws of timestep and noise (no prompt dropout)."""
    samples = [session.dataset[i] for i in range(len(session.dataset))]
    batch = task_batch(session.task, samples, "cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return sum(float(flow_matching_loss(session.model.forward, batch, session.prompts, session.table, generator))
                   for _ in range(8)) / 8


@pytest.fixture(scope="module")
def trained(tiny_root, config_for, tmp_path_factory):
    config = config_for(tmp_path_factory.mktemp("trained"), data={"cache": str(tiny_root / "cache")})
    return config, train(config)


def test_twenty_steps_lower_the_loss(trained):
    config, result = trained
    assert result.step == 20 and len(result.losses) == 20
    session = build_session(config)
    assert session.vae is None  # from the cache: no VAE, no text encoder
    before = fixed_draw_loss(session)
    load_trainable_state(session.model, result.lora_state)
    after = fixed_draw_loss(session)
    assert after < 0.95 * before, (before, after)
    logged = read_metrics(config.output_dir + "/metrics.jsonl")
    assert [r["step"] for r in logged] == list(range(1, 21))
    assert [r["loss"] for r in logged] == pytest.approx(result.losses)
    assert {"lr", "steps_per_s", "samples_seen"} <= set(logged[0])


def test_interrupted_run_resumes_bit_identically(trained, make_config, tiny_root, tmp_path):
    _, uninterrupted = trained

    class Crash(Exception):
        pass

    def crash_at_13(session, loss):
        if session.step == 13:
            raise Crash

    config = make_config(tmp_path / "interrupted", data={"cache": str(tiny_root / "cache")})
    with pytest.raises(Crash):
        train(config, callbacks=[crash_at_13])
    assert [p.name for p in list_checkpoints(config.output_dir)] == ["step-00000010"]
    # resumed with a DataLoader worker: the data position does not depend on the worker count
    resumed_config = make_config(tmp_path / "interrupted", data={"cache": config.data.cache, "num_workers": 1})
    resumed = train(resumed_config)
    assert resumed.resumed_from.name == "step-00000010" and resumed.step == 20
    assert resumed.losses == uninterrupted.losses[10:]
    assert resumed.lora_state.keys() == uninterrupted.lora_state.keys()
    for key, value in uninterrupted.lora_state.items():
        assert torch.equal(resumed.lora_state[key], value), key


def test_saved_lora_loads_through_apply_lora_and_changes_predict_flow(trained, tiny_root):
    config, result = trained
    with safe_open(str(result.lora_path), framework="pt") as handle:
        keys = set(handle.keys())
    # ComfyUI's native loader reads diffusion_model.<module>.lora_up/lora_down(.alpha) on original Wan names
    assert "diffusion_model.blocks.0.self_attn.q.lora_down.weight" in keys
    assert "diffusion_model.blocks.1.cross_attn.o.lora_up.weight" in keys
    assert "diffusion_model.blocks.0.ffn.2.alpha" in keys
    assert sum(k.endswith(".lora_down.weight") for k in keys) == 10 * 2  # ten linears in each of 2 blocks

    base = load_transformer(tiny_root / "models" / "diffusion_models" / "wan2.2_ti2v_5B_fp16.safetensors", "cpu")
    generator = torch.Generator().manual_seed(1)
    target, source = (torch.randn(1, 48, 3, 4, 4, generator=generator) for _ in range(2))
    text = torch.randn(1, 16, 32, generator=generator)
    with torch.no_grad():
        plain = predict_flow(base, target, 500.0, text, source)
        apply_lora(base, result.lora_path)
        adapted = predict_flow(base, target, 500.0, text, source)
        session = build_session(config)
        load_trainable_state(session.model, result.lora_state)
        trained_model = predict_flow(session.model.inner, target, 500.0, text, source)
    assert (adapted - plain).abs().max() > 1e-3
    torch.testing.assert_close(adapted, trained_model, rtol=1e-4, atol=1e-5)


def test_validation_renders_and_scores_a_held_out_pair(make_config, tmp_path):
    config = make_config(tmp_path / "val", train={"max_steps": 2, "batch_size": 1},
                         validation={"every": 1, "stems": ["pair02"], "steps": 2, "cfg": 2.0, "lpips": "off"},
                         checkpoint={"every": 0})
    result = train(config)
    folder = tmp_path / "val" / "validation"
    videos = sorted(folder.glob("*.mp4"))
    assert [v.name for v in videos] == ["step-00000001_pair02.mp4", "step-00000002_pair02.mp4"]
    clip = read_video(videos[0])
    assert clip.frames.shape[:3] == (9, 64, 3 * 64)  # source | generated | ground truth
    assert result.step == 2
    # PSNR / SSIM of the generated target against the ground-truth view, one line per pair and render
    rows = read_metrics(folder / "metrics.jsonl")
    assert [(r["step"], r["stem"], r["video"]) for r in rows] == [(1, "pair02", videos[0].name),
                                                                   (2, "pair02", videos[1].name)]
    assert all(0 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1 and "lpips" not in r for r in rows)
    assert rows[0]["psnr"] != rows[1]["psnr"]  # the LoRA changed between the renders


def test_faulty_dataset_stops_before_loading_models(make_config, tmp_path):
    from wan_egoexo_training.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "data", pairs=2, frames=12, size=64, frame_folders=True)
    config = make_config(tmp_path / "bad", data={"root": str(root)}, model={"models_dir": str(tmp_path / "none")})
    with pytest.raises(DatasetError, match="has 12 frames; 9 frames at stride 2 need at least 17"):
        train(config)
