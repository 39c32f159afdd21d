"""Measures the native nodes against the core inside a real ComfyUI, in a process of its own, and
writes the measurements as JSON for test_native_parity.py.

    python native_worker.py COMFY_DIR WORK_DIR OUT_JSON

A tiny Wan2.2-5B transformer (heads of 128, text width 4096 as ComfyUI's WanModel has it) is saved
as a ComfyUI single file and loaded by UNETLoader; LoRAs go through WorldWander LoRA (native), the
tiny VAE through VAELoader. The core side is the same transformer (diffusers) with ``apply_lora``.
Every comparison is {"max_abs", "rel"}, rel = max |native - core| / max |core|, in normalised
latents (what the transformer and the solvers see).
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import sys
import types
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from native_host import REPO_ROOT, diff, run_node, start_host

sys.path += [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from lora_files import write_kohya, write_original, write_peft  # noqa: E402
from wan_egoexo.in_context.predict_flow import predict_flow  # noqa: E402
from wan_egoexo.lora import apply_lora  # noqa: E402
from wan_egoexo.sampling.sampler import SamplingSettings, sample_target  # noqa: E402
from wan_egoexo.tiny.lora import WORLDWANDER_TARGETS, random_lora_state_dict, save_worldwander_ckpt  # noqa: E402
from wan_egoexo.tiny.transformer import build_tiny_transformer, save_transformer_single_file  # noqa: E402
from wan_egoexo.tiny.vae import build_tiny_vae, save_vae_single_file, tiny_vae_config  # noqa: E402

FRAMES, HEIGHT, WIDTH = 9, 64, 96  # 3 latent frames of 4 x 6
RANK, SEED, CFG, SHIFT = 4, 77, 5.0, 5.0
UNET, VAE = "tiny_wan2.2_ti2v_5B.safetensors", "tiny_wan2.2_vae.safetensors"
CKPT = "wan2-2_lora_one2three_realworld.ckpt"
TASKS = {"exo2ego": False, "ego2exo": True}


class _Payload:
    """Pickles as 'call fn(*args)': what a malicious checkpoint does."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def write_loras(transformer, loras: Path, marker: Path) -> None:
    """One LoRA in every layout (and a second one for chaining), one with keys this model lacks, one
    of which nothing matches, and a .ckpt whose pickle would create ``marker`` if it ran."""
    targets = WORLDWANDER_TARGETS + ("proj_out",)  # proj_out: a module outside the blocks (head.head)
    state = random_lora_state_dict(transformer, rank=RANK, seed=1, targets=targets)
    save_worldwander_ckpt(state, loras / CKPT)
    write_peft(state, loras / "peft.safetensors", prefix="transformer.")
    write_original(state, loras / "original.safetensors", alpha=2 * RANK + 1, down_up=True)
    write_kohya(random_lora_state_dict(transformer, rank=RANK, seed=2, targets=targets), loras / "kohya.safetensors",
                alpha=RANK / 2)
    extra = {"diffusion_model.blocks.7.self_attn.q.lora_down.weight": torch.zeros(RANK, 256),
             "diffusion_model.blocks.7.self_attn.q.lora_up.weight": torch.zeros(256, RANK),
             "diffusion_model.blocks.0.self_attn.q.dora_scale": torch.ones(256, 1)}
    write_original(state, loras / "extra_keys.safetensors", alpha=RANK, down_up=True)
    save_file({**load_file(loras / "extra_keys.safetensors"), **extra}, loras / "extra_keys.safetensors")
    save_file(extra, loras / "nothing_matches.safetensors")
    peft_default = {k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
                    for k, v in state.items()}
    payload = _Payload(os.system, (f"touch {shlex.quote(str(marker))}",))
    torch.save({"state_dict": {"lora": peft_default}, "hyper_parameters": payload}, loras / "evil.ckpt")


def write_models(work: Path) -> dict:
    models = work / "models"
    for folder in ("diffusion_models", "vae", "loras"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    transformer = build_tiny_transformer(0, text_dim=4096)
    save_transformer_single_file(transformer, models / "diffusion_models" / UNET, prefix="model.diffusion_model.")
    save_vae_single_file(build_tiny_vae(0), models / "vae" / VAE)
    write_loras(transformer, models / "loras", work / "code_ran")
    return {"models": models, "transformer": transformer, "marker": work / "code_ran"}


def core_model(ctx, loras):
    """The diffusers transformer with ``loras`` [(file, strength)] applied by the core."""
    model = copy.deepcopy(ctx.transformer)
    for name, strength in loras:
        apply_lora(model, ctx.models / "loras" / name, strength)
    return model


def native_model(ctx, loras):
    """UNETLoader's model with ``loras`` chained through WorldWander LoRA (native)."""
    model = ctx.unet
    for name, strength in loras:
        model = run_node(ctx.host.pack["WorldWanderLoraNative"], model, name, strength)[0]
    return model


def inputs():
    g = torch.Generator().manual_seed(5)
    source = torch.rand(FRAMES, HEIGHT, WIDTH, 3, generator=g)
    reference = torch.rand(1, 80, 50, 3, generator=g)  # another size and aspect: letterboxed to the clip
    cond = torch.randn(1, 12, 4096, generator=g)
    uncond = torch.randn(1, 12, 4096, generator=g) * 0.1
    target = torch.randn(1, 48, 3, 4, 6, generator=g)
    return source, reference, cond, uncond, target


def in_context(ctx, model, task, positions):
    source, reference, *_ = inputs()
    return run_node(ctx.host.pack["WorldWanderInContextNative"], model, ctx.vae, source, task, positions,
                    reference if TASKS[task] else None)


def clean_parts(model, latent):
    """The normalised reference (or None) and source latents of a native in-context LATENT."""
    lf = model.get_model_object("latent_format")
    frames = latent["samples"].shape[2]
    clean = lf.process_in(latent["samples"][:, :, :frames - 3])
    return (clean[:, :, :1], clean[:, :, 1:]) if clean.shape[2] == 4 else (None, clean)


def forward(ctx, native, core, task, positions, sigma=0.7):
    """One model evaluation through ComfyUI's model wrapper (object patch, LoRA patches, mask ->
    per-frame timesteps) against predict_flow, on the same normalised latents."""
    patched, latent = in_context(ctx, native, task, positions)
    ref, source = clean_parts(patched, latent)
    _, _, cond, _, target = inputs()
    x = torch.cat(([] if ref is None else [ref]) + [source, target], dim=2)
    sigma = torch.tensor([sigma])
    ctx.host.comfy.model_management.load_models_gpu([patched])
    with torch.no_grad():
        denoised = patched.model.apply_model(x, sigma, c_crossattn=cond, denoise_mask=latent["noise_mask"])
        native_flow = ((x - denoised) / sigma)[:, :, -3:]
        core_flow = predict_flow(core, target, sigma * 1000, cond, source, ref, positions=positions)
    return diff(native_flow, core_flow)


def conditioning(tensor):
    return [[tensor, {}]]


def sample_native(ctx, model, latent, noise, sampler, sigmas):
    """SamplerCustomAdvanced with CFGGuider, as a user wires it."""
    _, _, cond, uncond, _ = inputs()
    custom = ctx.host.custom
    guider = run_node(custom.CFGGuider, model, conditioning(cond), conditioning(uncond), CFG)[0]
    return run_node(custom.SamplerCustomAdvanced, noise, guider, sampler, sigmas, latent)[0]


def sample_core(core, model, latent, solver, steps, positions):
    _, _, cond, uncond, _ = inputs()
    ref, source = clean_parts(model, latent)
    settings = SamplingSettings(steps=steps, cfg=CFG, shift=SHIFT, solver=solver, seed=SEED)
    with torch.no_grad():
        return sample_target(core, source, cond, uncond, reference=ref, positions=positions, settings=settings)


def target_of(ctx, model, out):
    kept = run_node(ctx.host.pack["WorldWanderKeepTarget"], out)[0]
    return model.get_model_object("latent_format").process_in(kept["samples"])


def clean_change(latent, out) -> float:
    clean = latent["samples"].shape[2] - 3
    return float((out["samples"][:, :, :clean] - latent["samples"][:, :, :clean]).abs().max())


def lora_checks(ctx, results):
    layouts = {"ckpt": [(CKPT, 1.0)], "peft": [("peft.safetensors", 1.0)],
               "original_down_up_alpha": [("original.safetensors", 1.0)], "kohya_alpha": [("kohya.safetensors", 1.0)],
               "chain_ckpt_0.5+kohya_0.7": [(CKPT, 0.5), ("kohya.safetensors", 0.7)]}
    for name, loras in layouts.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            native = native_model(ctx, loras)
        results["lora_layouts"][name] = {**forward(ctx, native, core_model(ctx, loras), "ego2exo", "collaborative"),
                                         "warnings": [str(w.message) for w in caught if "LoRA" in str(w.message)]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        native_model(ctx, [("extra_keys.safetensors", 1.0)])
    results["lora_unmatched_warning"] = [str(w.message) for w in caught if "not loaded" in str(w.message)]
    try:
        native_model(ctx, [("nothing_matches.safetensors", 1.0)])
        results["lora_nothing_matches_error"] = None
    except Exception as exc:  # noqa: BLE001  (the test checks the type and message)
        results["lora_nothing_matches_error"] = f"{type(exc).__name__}: {exc}"
    evil = native_model(ctx, [("evil.ckpt", 1.0)])
    results["evil_ckpt"] = {"code_ran": ctx.marker.exists(),
                            **forward(ctx, evil, core_model(ctx, [(CKPT, 1.0)]), "exo2ego", "collaborative")}


def sampling_checks(ctx, results):
    pack, custom = ctx.host.pack, ctx.host.custom
    native, core = native_model(ctx, [(CKPT, 1.0)]), core_model(ctx, [(CKPT, 1.0)])
    ours_noise = run_node(pack["WorldWanderNoise"], SEED)[0]
    runs = (("euler", "euler", 4, run_node(custom.KSamplerSelect, "euler")[0]),
            ("unipc", "unipc", 5, run_node(pack["WorldWanderSolver"], "unipc")[0]),
            ("comfy_uni_pc_on_reference_sigmas", "unipc", 5, run_node(custom.KSamplerSelect, "uni_pc")[0]))
    for name, solver, steps, sampler in runs:
        sigmas = run_node(pack["WorldWanderSigmas"], steps, SHIFT, solver, 1.0)[0]
        for task in TASKS:
            model, latent = in_context(ctx, native, task, "collaborative")
            out = sample_native(ctx, model, latent, ours_noise, sampler, sigmas)
            expected = sample_core(core, model, latent, solver, steps, "collaborative")
            results["sampling"][f"{name}/{task}"] = {**diff(target_of(ctx, model, out), expected), "steps": steps,
                                                     "clean_frames_max_abs_change": clean_change(latent, out)}

    # The stock KSampler with ComfyUI's own schedule, against the reference solver on the same (stock) noise.
    model, latent = in_context(ctx, native, "ego2exo", "collaborative")
    shifted = run_node(ctx.host.advanced.ModelSamplingSD3, model, SHIFT)[0]
    _, _, cond, uncond, _ = inputs()
    stock_noise = run_node(custom.RandomNoise, SEED)[0]
    steps = 20  # ComfyUI's own Wan2.2-5B template runs uni_pc / simple for 20 steps
    for sampler_name, solver in (("uni_pc", "unipc"), ("euler", "euler")):
        ksampler = run_node(ctx.host.nodes.KSampler, shifted, SEED, steps, CFG, sampler_name, "simple",
                            conditioning(cond), conditioning(uncond), latent, denoise=1.0)[0]
        reference = sample_native(ctx, model, latent, stock_noise, run_node(pack["WorldWanderSolver"], solver)[0],
                                  run_node(pack["WorldWanderSigmas"], steps, SHIFT, solver, 1.0)[0])
        results["stock_ksampler"][f"{sampler_name}/simple/shift {SHIFT:g}"] = {
            **diff(target_of(ctx, model, ksampler), target_of(ctx, model, reference)), "steps": steps,
            "clean_frames_max_abs_change": clean_change(latent, ksampler)}


def encode_once(vae):
    """The worker encodes the same few images dozens of times: ComfyUI's VAE.encode runs once per image
    batch and later calls get a copy (the VAE is deterministic; its result is not under test here)."""
    encode, done = vae.encode, {}

    def cached(images):
        key = (tuple(images.shape), images.detach().cpu().numpy().tobytes())
        if key not in done:
            done[key] = encode(images)
        return done[key].clone()

    vae.encode = cached
    return vae


def main(comfy_dir: Path, work: Path, out_json: Path) -> None:
    written = write_models(work)
    (work / "input").mkdir(exist_ok=True)
    host = start_host(comfy_dir, written["models"], work / "input", tiny_vae_config())
    ctx = types.SimpleNamespace(host=host, transformer=written["transformer"], models=written["models"],
                                marker=written["marker"], unet=run_node(host.nodes.UNETLoader, UNET, "default")[0],
                                vae=encode_once(run_node(host.nodes.VAELoader, VAE)[0]))
    results = {"model_class": type(ctx.unet.model).__name__, "forward": {}, "lora_layouts": {}, "sampling": {},
               "stock_ksampler": {}}
    native, core = native_model(ctx, [(CKPT, 1.0)]), core_model(ctx, [(CKPT, 1.0)])
    for task in TASKS:
        for positions in ("collaborative", "uniform"):
            results["forward"][f"{task}/{positions}"] = forward(ctx, native, core, task, positions)
    lora_checks(ctx, results)
    sampling_checks(ctx, results)
    out_json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
