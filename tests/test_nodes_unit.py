"""The ComfyUI nodes run without a ComfyUI host (stub_comfy_host stands in for the few host modules
they import), on the tiny real-layout models, and their results are compared with the core
pipeline computed independently."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import wan_egoexo.lora
from wan_egoexo.errors import InputError, ModelFileError
from wan_egoexo.in_context.latents import denormalize_latents
from wan_egoexo.models.model_files import lora_wanted
from wan_egoexo.pipeline.translation import encode_task_prompts, translate_frames
from wan_egoexo.sampling.sampler import SamplingSettings, sample_target
from wan_egoexo.in_context.tasks import EGO2EXO, EXO2EGO
from wan_egoexo.models.text_encoder_loader import load_text_encoder
from wan_egoexo.models.text_encoding import encode_prompts
from wan_egoexo.models.transformer_loader import load_transformer
from wan_egoexo.models.vae_loader import load_vae
from wan_egoexo.video.fit import FitOptions
from wan_egoexo.video.read_write import read_video

from node_info_compat import all_differences, differences, v1_object_info
from stub_comfy_host import (  # noqa: F401  (host, lora_calls, models_dir, nodes: fixtures)
    CLIP,
    COMFYUI,
    CURRENT_FOLDERS,
    LORA_FILE,
    MODEL,
    OLD_FOLDERS,
    REPO,
    SIZE,
    TEXT_FILE,
    VAE_FILE,
    Host,
    Interrupted,
    PreviewMethod,
    exo2ego_inputs,
    host,
    load_models,
    load_pack,
    lora_calls,
    models_dir,
    nodes,
    run,
    call,
    choices,
    sampler_args,
    schema,
)

# ---------------------------------------------------------------- registration

def test_importing_the_pack_loads_neither_comfyui_nor_diffusers_until_comfyui_asks_for_the_nodes():
    code = ("import sys, asyncio, importlib.util as u; import torch; "
            f"s = u.spec_from_file_location('ComfyUI-WorldWander', {str(REPO / '__init__.py')!r}); "
            "m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); "
            "heavy = lambda: [k for k in ('folder_paths', 'comfy', 'comfy_api', 'diffusers', 'transformers', 'peft') "
            "if k in sys.modules]; print(hasattr(m, 'NODE_CLASS_MAPPINGS'), heavy()); "
            f"sys.path.append({str(COMFYUI)!r}); "
            "e = asyncio.run(m.comfy_entrypoint()); print(len(asyncio.run(e.get_node_list())), heavy())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    # no V1 mapping (ComfyUI would take it and never call comfy_entrypoint), nothing of ComfyUI imported;
    # the entry point (18 nodes + In-Context Windows (native)) then brings ComfyUI's comfy_api (which ComfyUI has imported long before) and no model code
    assert out.stdout.splitlines() == ["False []", "19 ['folder_paths', 'comfy', 'comfy_api']"]


def test_every_node_is_registered_documented_and_namespaced(host, nodes):
    builtin = {"IMAGE", "LATENT", "CONDITIONING", "FLOAT", "INT", "STRING", "AUDIO", "COMBO", "BOOLEAN",
               "MODEL", "VAE", "SAMPLER", "SIGMAS", "NOISE"}  # the native nodes work on ComfyUI's own types
    for key, cls in nodes.items():
        node = schema(cls)  # what ComfyUI checks at start-up: a schema error would drop this and every later node
        assert key == cls.__name__ == node.node_id and key.startswith("WorldWander")
        assert node.display_name.startswith("WorldWander ") and node.description
        assert node.category.startswith("WorldWander/")
        for item in node.inputs:
            assert item.tooltip, f"{key}.{item.id} has no tooltip"
            assert item.get_io_type() in builtin or item.get_io_type().startswith("WW_"), (key, item.id)
        for item in node.outputs:
            assert item.display_name and item.tooltip, (key, item)  # the V1 RETURN_NAMES and OUTPUT_TOOLTIPS
            assert item.io_type in builtin or item.io_type.startswith("WW_"), (key, item.io_type)


def test_every_node_serves_the_v1_object_info(host, nodes):
    """ComfyUI's /object_info of each node (built from its V3 schema) against the V1 pack's, which saved
    workflows and API prompts were made with; the folder menus are compared where they hold the same files."""
    info = {key: json.loads(json.dumps(cls.GET_NODE_INFO_V1())) for key, cls in nodes.items()}
    for entry in info.values():
        entry["python_module"] = "custom_nodes.ComfyUI-WorldWander"
    assert all_differences(info, strict_lists={"vae_name"}) == []


def test_the_object_info_comparison_sees_what_would_break_a_workflow():
    old = v1_object_info()["WorldWanderSampler"]
    assert differences("S", old, copy.deepcopy(old)) == []
    for change, expected in [
        (lambda n: n["input"]["required"]["steps"][1].update(default=20), "S.steps.default: 50 -> 20"),
        (lambda n: n["input_order"]["required"].reverse(), "S.input_order.required"),
        (lambda n: n["input"]["required"].update(cfg=["INT", n["input"]["required"]["cfg"][1]]), "S.cfg: type"),
        (lambda n: n["input"]["optional"]["lora_mode"][0].append("x"), "S.lora_mode: menu"),
        (lambda n: n["input"]["optional"]["cfg_batch"][1].update(multiline=True), "S.cfg_batch.multiline: added"),
        (lambda n: n.update(output_name=["latent"]), "S.output_name"),
    ]:
        new = copy.deepcopy(old)
        change(new)
        assert any(line.startswith(expected) for line in differences("S", old, new)), expected


# ---------------------------------------------------------------- model lists

def test_model_lists_serve_current_and_2024_folder_names_and_diffusers_folders(tmp_path, models_dir, monkeypatch,
                                                                                nodes):
    pipeline = models_dir / "diffusers" / "Wan2.2-TI2V-5B-Diffusers"
    pipeline.mkdir(parents=True, exist_ok=True)
    (pipeline / "model_index.json").write_text("{}")
    for folders in (CURRENT_FOLDERS, OLD_FOLDERS):
        fake = Host(tmp_path / str(len(folders)), models_dir, folders)
        for name, module in fake.modules().items():
            monkeypatch.setitem(sys.modules, name, module)
        models = choices(nodes["WorldWanderModelLoader"], "model_name")
        assert models == [MODEL, "[diffusers] Wan2.2-TI2V-5B-Diffusers"]
        encoders = choices(nodes["WorldWanderTextEncoderLoader"], "text_encoder_name")
        assert TEXT_FILE in encoders
        loras = choices(nodes["WorldWanderLoraLoader"], "lora_name")
        assert loras == sorted(lora_wanted(task).names[0] for task in (EXO2EGO, EGO2EXO))
        from_host = sys.modules[f"{load_pack().__name__}.nodes.host"]
        assert from_host.model_path(from_host.TRANSFORMER_FOLDERS, "[diffusers] Wan2.2-TI2V-5B-Diffusers",
                                    "model_name") == str(pipeline)


def test_missing_and_wrong_model_files_name_the_file_and_input(host, models_dir, nodes):
    where = "models/diffusion_models/, models/unet/ or models/diffusers/"
    with pytest.raises(ModelFileError, match=f"gone.safetensors: is not in {where}, so model_name cannot load it"):
        run(nodes, "WorldWanderModelLoader", "gone.safetensors", "auto", "sdpa")
    with pytest.raises(ModelFileError, match=r"gone.ckpt: is not in models/loras/, so lora_name cannot load it\."):
        run(nodes, "WorldWanderLoraLoader", None, "gone.ckpt", 1.0)
    wrong = models_dir / "diffusion_models" / "actually_a_vae.safetensors"
    wrong.write_bytes((models_dir / "vae" / VAE_FILE).read_bytes())
    try:
        with pytest.raises(ModelFileError, match="actually_a_vae.safetensors"):
            run(nodes, "WorldWanderModelLoader", wrong.name, "auto", "sdpa")
    finally:
        wrong.unlink()
    assert host.unloads == 0  # loading never unloads ComfyUI's own models wholesale


# ---------------------------------------------------------------- the whole graph against the core

def test_exo2ego_graph_matches_the_core_pipeline(host, nodes, models_dir, lora_calls):
    model, vae, encoder = load_models(nodes)
    text = run(nodes, "WorldWanderTextEncode", encoder, "exo2ego", "  ", "")[0]
    frames, fit, fps, _ = run(nodes, "WorldWanderLoadVideo", CLIP, fit="crop", **SIZE)
    assert frames.shape == (9, 64, 64, 3) and fps == 8.0
    context = run(nodes, "WorldWanderInContext", vae, "exo2ego", frames, "collaborative", fit=fit)[0]
    latent = run(nodes, "WorldWanderSampler", model, context, text, **sampler_args())[0]
    images, out_fps = run(nodes, "WorldWanderDecode", vae, latent, fit)
    assert lora_calls == [[]]
    # ComfyUI's model management loaded each model before its use, whole, with working memory for sampling
    assert [name for name, _, _ in host.loads] == ["WorldWanderAutoencoderKLWan", "WorldWanderWanTransformer3DModel",
                                                   "WorldWanderAutoencoderKLWan"]
    assert all(full for _, _, full in host.loads) and host.loads[1][1] > 0

    # Independently: the core pipeline on separately loaded models.
    transformer = load_transformer(models_dir / "diffusion_models" / MODEL, "cpu", "fp32")
    core_vae = load_vae(models_dir / "vae" / VAE_FILE, "cpu")
    cond, uncond = encode_task_prompts(load_text_encoder(models_dir / "text_encoders" / TEXT_FILE, "cpu"), EXO2EGO)
    clip = read_video(host.input / CLIP)
    result = translate_frames(transformer, core_vae, cond, uncond, clip.frames, clip.fps, "exo2ego",
                              fit=FitOptions(width=64, height=64, max_frames=9, fps=8.0, mode="crop"),
                              settings=SamplingSettings(steps=3, seed=7))
    assert torch.allclose(latent["samples"], denormalize_latents(result.latents, core_vae), atol=1e-5)
    assert np.abs(images.numpy() * 255 - result.frames).max() <= 1.0
    assert out_fps == result.fps == 8.0


def test_ego2exo_needs_a_reference_at_validation_and_at_run_time(host, nodes):
    in_context = nodes["WorldWanderInContext"]
    message = in_context.validate_inputs("ego2exo")  # reference not connected
    assert isinstance(message, str) and message.startswith("reference:") and "Load Image" in message
    assert in_context.validate_inputs("ego2exo", reference=None) is True  # linked: value unknown yet
    assert in_context.validate_inputs("exo2ego") is True
    assert "task" in in_context.validate_inputs("sideways")
    _, vae, _ = load_models(nodes)
    frames, fit, _, _ = run(nodes, "WorldWanderLoadVideo", CLIP, fit="crop", **SIZE)
    with pytest.raises(InputError, match="^reference: the ego2exo task needs a reference image"):
        run(nodes, "WorldWanderInContext", vae, "ego2exo", frames, "collaborative", fit=fit)
    reference = torch.rand(1, 48, 40, 3)
    context = run(nodes, "WorldWanderInContext", vae, "ego2exo", frames, "collaborative", reference, fit)[0]
    assert context.reference.shape == (1, 48, 1, 4, 4) and context.source.shape == (1, 48, 3, 4, 4)


def test_text_task_must_match_the_context(host, nodes, lora_calls):
    model, vae, encoder = load_models(nodes)
    text = run(nodes, "WorldWanderTextEncode", encoder, "exo2ego", "", "")[0]
    frames, fit, _, _ = run(nodes, "WorldWanderLoadVideo", CLIP, fit="crop", **SIZE)
    context = run(nodes, "WorldWanderInContext", vae, "ego2exo", frames, "uniform", torch.rand(1, 32, 32, 3))[0]
    with pytest.raises(InputError, match="^text: was encoded with the exo2ego prompt but the context is ego2exo"):
        run(nodes, "WorldWanderSampler", model, context, text, **sampler_args())
    custom = run(nodes, "WorldWanderTextEncode", encoder, "exo2ego", "a person seen from behind", "")[0]
    assert custom.task is None  # a custom prompt belongs to no task
    run(nodes, "WorldWanderSampler", model, context, custom, **sampler_args(steps=1))
    clip_l = run(nodes, "WorldWanderConditioningBridge", [[torch.randn(1, 77, 768), {}]])[0]  # not UMT5
    with pytest.raises(InputError, match="^text: the embeddings are 768 wide but the transformer reads 32-wide"):
        run(nodes, "WorldWanderSampler", model, context, clip_l, **sampler_args())


def test_conditioning_bridge_equals_the_pack_encoder_on_the_same_states(host, nodes):
    _, _, encoder = load_models(nodes)
    text = run(nodes, "WorldWanderTextEncode", encoder, "ego2exo", "", "")[0]
    states = encode_prompts(load_text_encoder(encoder.path, device="cpu", dtype=encoder.dtype), [EGO2EXO.prompt])
    real_tokens = int(states[0].abs().sum(-1).gt(0).sum())
    comfy_conditioning = [[states[:, :real_tokens], {"pooled_output": None}]]  # as ComfyUI hands it over
    bridged = run(nodes, "WorldWanderConditioningBridge", comfy_conditioning)[0]
    assert torch.equal(bridged.positive, text.positive)
    assert bridged.negative is None and bridged.task is None
    with pytest.raises(InputError, match="^negative: "):
        run(nodes, "WorldWanderConditioningBridge", comfy_conditioning, negative=[["not a tensor", {}]])


# ---------------------------------------------------------------- LoRAs, progress and cancel

def test_lora_handles_are_immutable_and_strengths_never_accumulate(host, nodes, models_dir, lora_calls):
    model, vae, text, _, context = exo2ego_inputs(nodes)
    half = run(nodes, "WorldWanderLoraLoader", model, LORA_FILE, 0.5)[0]
    full = run(nodes, "WorldWanderLoraLoader", model, LORA_FILE, 1.0)[0]
    lora_path = str(models_dir / "loras" / LORA_FILE)
    assert model.loras == () and half.loras == ((lora_path, 0.5),) and full.loras == ((lora_path, 1.0),)
    assert half.transformer is model.transformer  # shared, never copied
    outputs = [run(nodes, "WorldWanderSampler", handle, context, text, **sampler_args(steps=2))[0]["samples"]
               for handle in (half, full, half, model)]
    assert lora_calls == [[(lora_path, 0.5)], [(lora_path, 1.0)], [(lora_path, 0.5)], []]
    assert torch.equal(outputs[0], outputs[2])  # back to 0.5: the same result, nothing accumulated
    assert not torch.allclose(outputs[0], outputs[1])
    # Independently: a fresh transformer with the LoRA applied once at 0.5 by the core.
    fresh = load_transformer(models_dir / "diffusion_models" / MODEL, "cpu", "fp32")
    wan_egoexo.lora.apply_lora(fresh, lora_path, strength=0.5)
    expected = sample_target(fresh, context.source, text.positive, text.negative, positions="collaborative",
                             settings=SamplingSettings(steps=2, seed=7))
    assert torch.allclose(outputs[0], denormalize_latents(expected, vae), atol=1e-5)
    # And with no LoRA requested the model samples as if it had never had one.
    plain = load_transformer(models_dir / "diffusion_models" / MODEL, "cpu", "fp32")
    expected = sample_target(plain, context.source, text.positive, text.negative, positions="collaborative",
                             settings=SamplingSettings(steps=2, seed=7))
    assert torch.allclose(outputs[3], denormalize_latents(expected, vae), atol=1e-5)


@pytest.mark.parametrize("previews", [False, True])
def test_progress_bar_moves_every_step_with_optional_latent_previews(host, nodes, lora_calls, previews):
    host.args.preview_method = PreviewMethod.Auto if previews else PreviewMethod.NoPreviews
    model, vae, text, fit, context = exo2ego_inputs(nodes)
    run(nodes, "WorldWanderSampler", model, context, text, **sampler_args(steps=3))
    assert [(value, total) for value, total, _ in host.updates] == [(1, 3), (2, 3), (3, 3)]
    for _, _, preview in host.updates:
        if previews:
            kind, image, size = preview
            assert kind == "JPEG" and image.size == (4, 4) and size == 256
        else:
            assert preview is None


def test_cancel_stops_within_one_step_and_leaves_the_model_usable(host, nodes, lora_calls):
    model, vae, text, fit, context = exo2ego_inputs(nodes)
    forwards = []
    model.transformer.register_forward_pre_hook(lambda *_: forwards.append(1))
    host.interrupt_at_check = 1  # Cancel pressed during the first step
    with pytest.raises(Interrupted):
        run(nodes, "WorldWanderSampler", model, context, text, **sampler_args(steps=20))
    assert len(forwards) == 1 and host.updates == []  # one (batched CFG) forward, then stopped
    host.interrupt_at_check = None
    first = run(nodes, "WorldWanderSampler", model, context, text, **sampler_args(steps=2))[0]["samples"]
    again = run(nodes, "WorldWanderSampler", model, context, text, **sampler_args(steps=2))[0]["samples"]
    assert torch.equal(first, again) and not model.transformer.rope._forward_hooks


def test_denoise_below_one_needs_an_init_latent(host, nodes, lora_calls):
    model, vae, text, fit, context = exo2ego_inputs(nodes)
    with pytest.raises(InputError, match="^init_latent: denoise 0.5 < 1"):
        run(nodes, "WorldWanderSampler", model, context, text, **sampler_args(denoise=0.5))
    start = run(nodes, "WorldWanderSampler", model, context, text, **sampler_args(steps=2))[0]
    again = run(nodes, "WorldWanderSampler", model, context, text, init_latent=start,
                **sampler_args(steps=4, denoise=0.5))[0]
    assert again["samples"].shape == start["samples"].shape
    assert [total for _, total, _ in host.updates[-2:]] == [2, 2]  # half of 4 steps run


# ---------------------------------------------------------------- video in and out

def test_load_video_lists_only_videos_and_checks_its_widgets(host, nodes):
    (host.input / "still.png").write_bytes(b"x")
    (host.input / "notes.txt").write_text("x")
    load = nodes["WorldWanderLoadVideo"]
    assert choices(load, "video") == [CLIP]
    values = dict(width=0, height=0, frames=49, fps=8.0, frame_stride=1)  # start_frame, fit: ComfyUI checks them
    assert load.validate_inputs(CLIP, **values) is True
    assert "not in ComfyUI's input folder" in load.validate_inputs("missing.mp4", **values)
    assert "4k+1" in load.validate_inputs(CLIP, **{**values, "frames": 48})
    assert load.validate_inputs(CLIP, **{**values, "frame_stride": 2}).startswith("frame_stride: 2 is only used")
    assert load.validate_inputs(CLIP, **{**values, "width": 16384}) == "width: 16384 is out of range; expected 0..2048."
    assert load.validate_inputs(CLIP, **{**values, "frames": None}) is True  # linked: checked at run time
    before = load.fingerprint_inputs(CLIP, **values)
    os.utime(host.input / CLIP, (1, 1))
    assert load.fingerprint_inputs(CLIP, **values) != before
    # 0.3.64 does not check a V3 menu's value before running: the node names it, before reading the clip
    with pytest.raises(InputError, match=r"^fit: 'zoom' is not one of the choices \['crop', 'pad', 'stretch'\]"):
        run(nodes, "WorldWanderLoadVideo", CLIP, **{**SIZE, "fit": "zoom"})


def test_decode_restores_the_input_size(host, nodes, lora_calls):
    model, vae, text, fit, context = exo2ego_inputs(nodes, fit="pad")
    assert (fit.width, fit.height, fit.content_box) == (64, 64, (0, 10, 64, 43))  # 96x64 letterboxed
    latent = run(nodes, "WorldWanderSampler", model, context, text, **sampler_args(steps=1))[0]
    restored, restored_fps = run(nodes, "WorldWanderDecode", vae, latent, fit)
    assert restored.shape == (9, 64, 96, 3) and restored_fps == fit.output_fps  # the source size again
    first_latent_frame = {"samples": latent["samples"][:, :, :1]}  # 1 frame decodes faster, same rule
    fitted, default_fps = run(nodes, "WorldWanderDecode", vae, first_latent_frame)
    assert fitted.shape == (1, 64, 64, 3) and default_fps == 8.0  # the fitted size without a fit
    with pytest.raises(InputError, match="^samples: expected a video LATENT"):
        run(nodes, "WorldWanderDecode", vae, {"samples": torch.zeros(1, 4, 8, 8)})



def test_save_video_writes_an_h264_mp4_and_a_preview_both_frontends_show(host, nodes):
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 96), indexing="ij")
    frames = torch.stack([torch.stack([xs, ys, (xs + ys + k / 9) % 1], -1) for k in range(9)])  # smooth
    result = run(nodes, "WorldWanderSaveVideo", frames, 8.0, "videos/WorldWander").ui.as_dict()
    mp4, gif = result["images"]
    assert result["animated"] == (True,)  # what the V1 node returned: both frontends show it
    assert mp4 == {"filename": "WorldWander_00001_.mp4", "subfolder": "videos", "type": "output"}
    assert gif["type"] == "temp" and gif["filename"].endswith(".gif") and (host.temp / gif["filename"]).is_file()
    written = read_video(host.output / "videos" / mp4["filename"])
    assert written.frames.shape == (9, 64, 96, 3) and written.fps == pytest.approx(8.0)
    assert np.abs(written.frames.astype(float) - frames.numpy() * 255).mean() < 4  # h264 of a smooth clip
    second = run(nodes, "WorldWanderSaveVideo", frames, 8.0, "videos/WorldWander").ui.as_dict()["images"][0]
    assert second["filename"] == "WorldWander_00002_.mp4"
    with pytest.raises(InputError, match="^images: "):
        run(nodes, "WorldWanderSaveVideo", torch.zeros(9, 64, 96), 8.0, "x")


def test_text_encoder_loads_only_on_a_prompt_cache_miss(host, nodes, monkeypatch, tmp_path):
    import wan_egoexo.models.text_encoder_loader as te_loader

    monkeypatch.setenv("WAN_EGOEXO_CACHE", str(tmp_path / "cache"))
    loads = []
    real = te_loader.load_text_encoder
    monkeypatch.setattr(te_loader, "load_text_encoder", lambda *a, **k: loads.append(a) or real(*a, **k))
    encoder = run(nodes, "WorldWanderTextEncoderLoader", TEXT_FILE, "default")[0]
    assert loads == []  # the loader only checks the file
    first = run(nodes, "WorldWanderTextEncode", encoder, "exo2ego", "", "")[0]
    again = run(nodes, "WorldWanderTextEncode", encoder, "exo2ego", "", "")[0]
    assert len(loads) == 1  # the second encode came from the cache
    assert torch.equal(first.positive, again.positive) and torch.equal(first.negative, again.negative)
    fresh = encode_task_prompts(real(encoder.path, device="cpu", dtype=encoder.dtype), EXO2EGO)
    assert torch.equal(first.positive, fresh[0]) and torch.equal(first.negative, fresh[1])
