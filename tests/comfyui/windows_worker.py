"""Measures long clips through ComfyUI's own context windows against the core's ``windowed_flow``,
inside a real ComfyUI, in a process of its own; writes the measurements as JSON for
test_native_windows.py.

    python windows_worker.py COMFY_DIR WORK_DIR OUT_JSON

Native side, as a user wires it: UNETLoader's tiny Wan2.2-5B -> WorldWander In-Context Windows
(native) -> the host's Context Windows (Manual) (dim 2) or WAN Context Windows (Manual) ->
CFGGuider -> SamplerCustomAdvanced with WorldWander Noise, Solver and Sigmas. Core side: the same
transformer (diffusers) through ``sample_target(windows=WindowOptions(...))`` on the source and
reference latents that the host's VAE gives for the same images (normalised), and the same seed.
Every comparison is {"max_abs", "rel"} on normalised target latents, plus the windows ComfyUI
evaluated (the first frame of each) beside the pack's ``window_starts``.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
from pathlib import Path

import torch

from native_host import REPO_ROOT, diff, run_node, start_host

sys.path += [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from wan_egoexo.comfy_interop import first_image, video_to_image_batch  # noqa: E402
from wan_egoexo.in_context.tasks import get_task  # noqa: E402
from wan_egoexo.in_context.windows import WindowOptions, window_starts  # noqa: E402
from wan_egoexo.pipeline.translation import prepare_reference  # noqa: E402
from wan_egoexo.sampling.sampler import SamplingSettings, sample_target  # noqa: E402
from wan_egoexo.tiny.transformer import build_tiny_transformer, save_transformer_single_file  # noqa: E402
from wan_egoexo.tiny.vae import build_tiny_vae, save_vae_single_file, tiny_vae_config  # noqa: E402

HEIGHT, WIDTH = 64, 96  # latent 4 x 6
SEED, CFG, SHIFT, STEPS = 77, 5.0, 5.0, 3
UNET, VAE = "tiny_wan2.2_ti2v_5B.safetensors", "tiny_wan2.2_vae.safetensors"

# name: (task, latent frames, windows node, node settings, pack WindowOptions or None, solver).
# Generic node: latent frames; Wan node: pixel frames (49 -> 13; overlap 16 -> 4 on both hosts).
# pyramid == the pack's linear ramps where every overlap is <= (L + 1) / 2 and no frame is in three
# windows (22 = 13 + 9: overlaps 4); flat == them where overlaps are 1 (25 = 13 + 12).
CASES = {
    "pyramid L13 ov4, 22 frames, exo2ego, unipc": ("exo2ego", 22, "generic", (13, 4, "pyramid"), (13, 4), "unipc"),
    "pyramid L13 ov4, 22 frames, ego2exo, euler": ("ego2exo", 22, "generic", (13, 4, "pyramid"), (13, 4), "euler"),
    "flat L13 ov1, 25 frames, ego2exo, unipc": ("ego2exo", 25, "generic", (13, 1, "flat"), (13, 1), "unipc"),
    "WAN node 49/16 pyramid, 22 frames, exo2ego, unipc": ("exo2ego", 22, "wan", (49, 16, "pyramid"), (13, 4), "unipc"),
    "no windows, 5 frames, ego2exo, unipc": ("ego2exo", 5, None, None, None, "unipc"),
    # where ComfyUI's blend is not the pack's: the end-aligned second window overlaps by 12 > 7
    "pyramid L13 ov4, 14 frames (overlap 12), exo2ego, unipc": ("exo2ego", 14, "generic", (13, 4, "pyramid"),
                                                                (13, 4), "unipc"),
    # and flat averaging against the pack's ramps over 4 frames
    "flat L13 ov4, 22 frames, exo2ego, unipc": ("exo2ego", 22, "generic", (13, 4, "flat"), (13, 4), "unipc"),
}
EQUAL = ("pyramid L13 ov4, 22 frames, exo2ego, unipc", "pyramid L13 ov4, 22 frames, ego2exo, euler",
         "flat L13 ov1, 25 frames, ego2exo, unipc", "WAN node 49/16 pyramid, 22 frames, exo2ego, unipc",
         "no windows, 5 frames, ego2exo, unipc")


def clip(latent_frames: int):
    g = torch.Generator().manual_seed(5)
    source = torch.rand(4 * (latent_frames - 1) + 1, HEIGHT, WIDTH, 3, generator=g)
    reference = torch.rand(1, 80, 50, 3, generator=g)  # another size and aspect: letterboxed to the clip
    cond = torch.randn(1, 12, 4096, generator=g)
    uncond = torch.randn(1, 12, 4096, generator=g) * 0.1
    return source, reference, cond, uncond


def windows_model(ctx, model, kind, settings):
    """The host's own context windows node on ``model``, FreeNoise off (it reshuffles the noise)."""
    module = ctx.context_nodes
    node = module.ContextWindowsManualNode if kind == "generic" else module.WanContextWindowsManualNode
    length, overlap, fuse = settings
    args = dict(context_length=length, context_overlap=overlap, context_schedule="standard_static",
                context_stride=1, closed_loop=False, fuse_method=fuse)
    if kind == "generic":
        args["dim"] = 2
    if "freenoise" in inspect.signature(node.execute).parameters:
        args["freenoise"] = False
    out = node.execute(model, **args)
    return out.result[0] if hasattr(out, "result") else out[0]


class WindowLog:
    """A DIFFUSION_MODEL wrapper outside the pack's: the first frame of every window called."""

    def __init__(self):
        self.starts = []

    def __call__(self, executor, *args, **kwargs):
        options = kwargs.get("transformer_options", args[5] if len(args) > 5 else {})
        window = options.get("context_window")
        self.starts.append(None if window is None else int(window.index_list[0]))
        return executor(*args, **kwargs)


def run_case(ctx, name, case) -> dict:
    task_name, frames, kind, settings, pack_windows, solver = case
    task = get_task(task_name)
    source, reference, cond, uncond = clip(frames)
    pack = ctx.host.pack
    model, latent = run_node(pack["WorldWanderInContextWindowsNative"], ctx.unet, ctx.vae, source, task_name,
                             "collaborative", reference if task.uses_reference else None)
    assert set(latent) == {"samples"} and latent["samples"].shape[2] == frames, latent["samples"].shape
    if kind is not None:
        model = windows_model(ctx, model, kind, settings)
    log = WindowLog()
    model = model.clone()
    model.add_wrapper_with_key("diffusion_model", "test_window_log", log)
    custom = ctx.host.custom
    guider = run_node(custom.CFGGuider, model, [[cond, {}]], [[uncond, {}]], CFG)[0]
    sampler = run_node(pack["WorldWanderSolver"], solver)[0]
    sigmas = run_node(pack["WorldWanderSigmas"], STEPS, SHIFT, solver, 1.0)[0]
    noise = run_node(pack["WorldWanderNoise"], SEED)[0]
    out = run_node(custom.SamplerCustomAdvanced, noise, guider, sampler, sigmas, latent)[0]
    latent_format = model.get_model_object("latent_format")
    native = latent_format.process_in(out["samples"])

    source_n = latent_format.process_in(ctx.vae.encode(source))
    image = first_image(reference, "reference") if task.uses_reference else None
    reference_video = prepare_reference(task, image, WIDTH, HEIGHT)
    reference_n = None if reference_video is None else latent_format.process_in(
        ctx.vae.encode(video_to_image_batch(reference_video)))
    options = None if pack_windows is None else WindowOptions(*pack_windows, ramp="linear")
    with torch.no_grad():
        core = sample_target(ctx.transformer, source_n.float(), cond, uncond, reference=reference_n,
                             settings=SamplingSettings(steps=STEPS, cfg=CFG, shift=SHIFT, solver=solver, seed=SEED),
                             windows=options)
    starts = window_starts(frames, *pack_windows) if pack_windows else [0]
    # one entry per model call: each step calls every window once (cond and uncond batched)
    per_step = sorted(set(s if s is not None else 0 for s in log.starts))
    return {**diff(native, core), "comfy_window_starts": per_step, "pack_window_starts": starts,
            "calls": len(log.starts), "windowed": kind is not None and len(starts) > 1}


def refusal(ctx) -> str | None:
    """In-Context (native)'s concatenated LATENT through context windows: the error it gives."""
    source, _, cond, uncond = clip(22)
    model, latent = run_node(ctx.host.pack["WorldWanderInContextNative"], ctx.unet, ctx.vae, source, "exo2ego",
                             "collaborative", None)
    model = windows_model(ctx, model, "generic", (13, 4, "pyramid"))
    guider = run_node(ctx.host.custom.CFGGuider, model, [[cond, {}]], [[uncond, {}]], CFG)[0]
    try:
        run_node(ctx.host.custom.SamplerCustomAdvanced, run_node(ctx.host.pack["WorldWanderNoise"], SEED)[0], guider,
                 run_node(ctx.host.pack["WorldWanderSolver"], "euler")[0],
                 run_node(ctx.host.pack["WorldWanderSigmas"], 1, SHIFT, "euler", 1.0)[0], latent)
    except Exception as exc:  # noqa: BLE001  (the test checks the type and message)
        return f"{type(exc).__name__}: {exc}"
    return None


def main(comfy_dir: Path, work: Path, out_json: Path) -> None:
    models = work / "models"
    for folder in ("diffusion_models", "vae", "loras"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    transformer = build_tiny_transformer(0, text_dim=4096)
    save_transformer_single_file(transformer, models / "diffusion_models" / UNET, prefix="model.diffusion_model.")
    save_vae_single_file(build_tiny_vae(0), models / "vae" / VAE)
    (work / "input").mkdir(exist_ok=True)
    host = start_host(comfy_dir, models, work / "input", tiny_vae_config())
    from comfy_extras import nodes_context_windows  # noqa: PLC0415  (after start_host put the host first)

    ctx = types.SimpleNamespace(host=host, transformer=transformer, context_nodes=nodes_context_windows,
                                unet=run_node(host.nodes.UNETLoader, UNET, "default")[0],
                                vae=run_node(host.nodes.VAELoader, VAE)[0])
    only = sys.argv[4:]  # optional case names, for a quick look by hand
    results = {"cases": {name: run_case(ctx, name, case) for name, case in CASES.items() if not only or name in only},
               "equal": list(EQUAL), "refusal": refusal(ctx)}
    out_json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
