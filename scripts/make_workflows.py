"""Writes the shipped workflows (example_workflows/*.json, ComfyUI UI format 0.4) and a thumbnail
for each (the same name, .jpg: a drawing of the graph under its title and one-line description, which
ComfyUI's template browser shows; see ``Template``) from one place, so node ids, links, widget
orders, the model files the loaders name (the note and each loader's ``properties.models``) stay
consistent. Two kinds: the WW_* workflows (the pack's own
loaders and sampler) and the native ones (ComfyUI's loaders, guider, sampler and VAE Decode around
the pack's native nodes).

    python scripts/make_workflows.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from workflow_graph import Graph, ModelFile  # noqa: E402
from workflow_thumbnail import render_thumbnail  # noqa: E402

from wan_egoexo.models.model_files import TEXT_ENCODER, TRANSFORMER, VAE, Wanted, lora_wanted  # noqa: E402
from wan_egoexo.in_context.tasks import get_task  # noqa: E402

OUT_DIR = REPO / "example_workflows"
INPUT_VIDEO, REFERENCE_IMAGE = "worldwander_input.mp4", "worldwander_reference.png"


def model_file(wanted: Wanted) -> ModelFile:
    """The file a shipped loader is set to: the preferred name, in the current ComfyUI folder."""
    return ModelFile(wanted.names[0], wanted.folders[0], wanted.url)


def model_files_note(task, files: list[tuple[ModelFile, str]]) -> list[str]:
    lines = ["Model files (in ComfyUI/models):"]
    for file, remark in files:
        lines += [f"- {file.directory}/{file.name}{('   ' + remark) if remark else ''}", f"    {file.url}"]
    return lines


def view_line(task) -> str:
    return ("third-person (exo) clip -> first-person (ego) clip" if task.name == "exo2ego" else
            "first-person (ego) clip + reference image -> third-person (exo) clip")


def build(task_name: str, long_clip: bool = False) -> dict:
    """The WW_* workflow: the pack's own loaders and sampler (the bit-exact reference path)."""
    task = get_task(task_name)
    transformer, vae, text_encoder = model_file(TRANSFORMER), model_file(VAE), model_file(TEXT_ENCODER)
    lora = model_file(lora_wanted(task))
    g = Graph()
    g.add(1, "WorldWanderModelLoader", (40, 60), (330, 110), [transformer.name, "auto", "sdpa", "auto"],
          outputs=[("model", "WW_MODEL")], models=(transformer,))
    g.add(2, "WorldWanderLoraLoader", (400, 60), (330, 90), [lora.name, 1.0],
          outputs=[("model", "WW_MODEL")], inputs=[("model", "WW_MODEL")], models=(lora,))
    g.add(3, "WorldWanderVAELoader", (40, 210), (330, 60), [vae.name, "auto"], outputs=[("vae", "WW_VAE")],
          models=(vae,))
    g.add(4, "WorldWanderTextEncoderLoader", (40, 310), (330, 90), [text_encoder.name, "default"],
          outputs=[("text_encoder", "WW_TEXT_ENCODER")], models=(text_encoder,))
    g.add(5, "WorldWanderTextEncode", (400, 310), (330, 200), [task.name, "", ""],
          outputs=[("text", "WW_TEXT"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
          inputs=[("text_encoder", "WW_TEXT_ENCODER")])
    g.add(6, "WorldWanderLoadVideo", (40, 560), (330, 260),
          [INPUT_VIDEO, 0, 0, 0 if long_clip else 49, 8.0, 1, 0, "crop"],
          outputs=[("frames", "IMAGE"), ("fit", "WW_FIT"), ("fps", "FLOAT")])
    g.add(7, "WorldWanderInContext", (780, 560), (330, 130), [task.name, "collaborative"],
          outputs=[("context", "WW_CONTEXT")],
          inputs=[("vae", "WW_VAE"), ("source", "IMAGE"), ("reference", "IMAGE"), ("fit", "WW_FIT")])
    g.add(8, "WorldWanderSampler", (1150, 60), (330, 260),
          [1234, "fixed", 50, 5.0, 5.0, "unipc", 1.0, 13 if long_clip else 0, 4, "auto", "merged"],
          outputs=[("samples", "LATENT")],
          inputs=[("model", "WW_MODEL"), ("context", "WW_CONTEXT"), ("text", "WW_TEXT"), ("init_latent", "LATENT")])
    g.add(9, "WorldWanderDecode", (1150, 400), (330, 100), [], outputs=[("frames", "IMAGE"), ("fps", "FLOAT")],
          inputs=[("vae", "WW_VAE"), ("samples", "LATENT"), ("fit", "WW_FIT")])
    g.add(10, "WorldWanderSaveVideo", (1520, 60), (420, 520), [8.0, "WorldWander_" + task.name],
          inputs=[("images", "IMAGE"), ("fps", "FLOAT", "fps")])
    steps = ["1. Put the clip in ComfyUI/input (or use the upload button of WorldWander Load Video) and pick it."]
    if task.uses_reference:
        steps.append("2. Load Image: a picture of the person (full body, e.g. from behind), for the reference input.")
        g.add(12, "LoadImage", (400, 560), (330, 320), [REFERENCE_IMAGE, "image"],
              outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")])
    if long_clip:
        steps.append(f"{len(steps) + 1}. Long clip: Load Video takes the whole clip (frames 0) at 8 fps; the sampler "
                     "covers it with overlapping 49-frame windows (window 13, overlap 4 latent frames) blended at "
                     "every step, so the whole clip comes out without seams.")
    steps.append(f"{len(steps) + 1}. Queue. Defaults are the authors' settings: 49 frames at 8 fps, 1280x704 "
                 "(auto size), UniPC, 50 steps, cfg 5, shift 5, seed 1234. The authors recommend an 80 GB GPU at "
                 "full size; use smaller width/height/frames on smaller GPUs, or the native workflow "
                 f"({task.name}_native.json), which ComfyUI offloads.")
    note = "\n".join([
        f"WorldWander {task.name}{' (long clip)' if long_clip else ''}: {view_line(task)}",
        "",
        *model_files_note(task, [(transformer, "(ComfyUI 2024: unet/)"), (vae, ""),
                                 (text_encoder, "(ComfyUI 2024: clip/)"),
                                 (lora, f"(the WorldWander LoRA for {task.name})")]),
        "",
        *steps,
    ])
    g.add(11, "Note", (400, 910), (560, 330), [note], title="Read me: model files")
    g.link(1, 0, 2, "model")
    g.link(4, 0, 5, "text_encoder")
    g.link(3, 0, 7, "vae")
    g.link(6, 0, 7, "source")
    g.link(6, 1, 7, "fit")
    if task.uses_reference:
        g.link(12, 0, 7, "reference")
    g.link(2, 0, 8, "model")
    g.link(7, 0, 8, "context")
    g.link(5, 0, 8, "text")
    g.link(3, 0, 9, "vae")
    g.link(8, 0, 9, "samples")
    g.link(6, 1, 9, "fit")
    g.link(9, 0, 10, "images")
    g.link(9, 1, 10, "fps")
    return g.to_json()


def build_native(task_name: str, long_clip: bool = False) -> dict:
    """The native workflow: ComfyUI's own loaders, guider, sampler and VAE Decode around the pack's
    In-Context (native), LoRA (native), Keep Target and Restore Clip Size; the reference solver,
    schedule and noise make SamplerCustomAdvanced give the WorldWander Sampler's result.

    ``long_clip``: In-Context Windows (native) and ComfyUI's own Context Windows (Manual) in front of
    the guider, set to the WW_* long-clip workflow's windows (13 latent frames, overlap 4, static
    schedule) with the pyramid blend; the whole clip is loaded and the sampler's output is the target
    (no Keep Target)."""
    task = get_task(task_name)
    transformer, vae, text_encoder = model_file(TRANSFORMER), model_file(VAE), model_file(TEXT_ENCODER)
    lora = model_file(lora_wanted(task))
    g = Graph()
    g.add(1, "UNETLoader", (40, 60), (330, 90), [transformer.name, "default"], outputs=[("MODEL", "MODEL")],
          models=(transformer,))
    g.add(2, "WorldWanderLoraNative", (400, 60), (330, 90), [lora.name, 1.0], outputs=[("model", "MODEL")],
          inputs=[("model", "MODEL")], models=(lora,))
    g.add(3, "VAELoader", (40, 200), (330, 60), [vae.name], outputs=[("VAE", "VAE")], models=(vae,))
    g.add(4, "WorldWanderTextEncoderLoader", (40, 310), (330, 90), [text_encoder.name, "default"],
          outputs=[("text_encoder", "WW_TEXT_ENCODER")], models=(text_encoder,))
    g.add(5, "WorldWanderTextEncode", (400, 310), (330, 200), [task.name, "", ""],
          outputs=[("text", "WW_TEXT"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
          inputs=[("text_encoder", "WW_TEXT_ENCODER")])
    g.add(6, "WorldWanderLoadVideo", (40, 560), (330, 260), [INPUT_VIDEO, 0, 0, 0 if long_clip else 49, 8.0, 1, 0,
                                                               "crop"],
          outputs=[("frames", "IMAGE"), ("fit", "WW_FIT"), ("fps", "FLOAT")])
    g.add(7, "WorldWanderInContextWindowsNative" if long_clip else "WorldWanderInContextNative", (780, 560),
          (330, 130), [task.name, "collaborative"], outputs=[("model", "MODEL"), ("latent", "LATENT")],
          inputs=[("model", "MODEL"), ("vae", "VAE"), ("source", "IMAGE"), ("reference", "IMAGE")])
    if long_clip:
        g.add(19, "ContextWindowsManual", (780, 60), (330, 250), [13, 4, "standard_static", 1, False, "pyramid", 2],
              outputs=[("MODEL", "MODEL")], inputs=[("model", "MODEL")])
    g.add(8, "CFGGuider", (1150, 60), (300, 100), [5.0], outputs=[("GUIDER", "GUIDER")],
          inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")])
    g.add(9, "WorldWanderNoise", (1150, 200), (300, 80), [1234, "fixed"], outputs=[("noise", "NOISE")])
    g.add(10, "WorldWanderSolver", (1150, 320), (300, 60), ["unipc"], outputs=[("sampler", "SAMPLER")])
    g.add(11, "WorldWanderSigmas", (1150, 420), (300, 130), [50, 5.0, "unipc", 1.0], outputs=[("sigmas", "SIGMAS")])
    g.add(13, "SamplerCustomAdvanced", (1500, 60), (300, 110), [],
          outputs=[("output", "LATENT"), ("denoised_output", "LATENT")],
          inputs=[("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                  ("latent_image", "LATENT")])
    below = 0 if long_clip else 110  # Keep Target sits between the sampler and VAE Decode
    if not long_clip:
        g.add(14, "WorldWanderKeepTarget", (1500, 220), (300, 60), [], outputs=[("latent", "LATENT")],
              inputs=[("samples", "LATENT")])
    g.add(15, "VAEDecode", (1500, 220 + below), (300, 60), [], outputs=[("IMAGE", "IMAGE")],
          inputs=[("samples", "LATENT"), ("vae", "VAE")])
    g.add(16, "WorldWanderRestoreClip", (1500, 330 + below), (300, 80), [],
          outputs=[("frames", "IMAGE"), ("fps", "FLOAT")], inputs=[("images", "IMAGE"), ("fit", "WW_FIT")])
    g.add(17, "WorldWanderSaveVideo", (1850, 60), (420, 520),
          [8.0, "WorldWander_" + task.name + ("_native_long_clip" if long_clip else "_native")],
          inputs=[("images", "IMAGE"), ("fps", "FLOAT", "fps")])
    steps = ["1. Put the clip in ComfyUI/input (or use the upload button of WorldWander Load Video) and pick it."]
    if task.uses_reference:
        steps.append("2. Load Image: a picture of the person (full body, e.g. from behind), for the reference input.")
        g.add(12, "LoadImage", (400, 560), (330, 320), [REFERENCE_IMAGE, "image"],
              outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")])
    if long_clip:
        steps.append(f"{len(steps) + 1}. Long clip: Load Video takes the whole clip (frames 0) at 8 fps. Context "
                     "Windows (Manual) covers it with windows of 13 latent frames (the trained 49 video frames) "
                     "overlapping by 4, dim 2 (the frame axis), standard_static, pyramid: each window's output frames "
                     "see their own source frames, and ComfyUI blends the windows at every step. These are the WW_* "
                     "long-clip workflow's windows; its blend is the same where each overlap is at most 7 frames and "
                     "no frame is in three windows (e.g. 73-85, 109-121 or 145-157 video frames), close otherwise.")
        steps.append(f"{len(steps) + 1}. Queue. Defaults are the authors' settings: 8 fps, 1280x704 (auto size), "
                     "UniPC, 50 steps, cfg 5, shift 5, seed 1234. The sampler's output is the translated clip (no "
                     "Keep Target). ComfyUI loads the model partially and offloads the rest on small GPUs.")
    else:
        steps.append(f"{len(steps) + 1}. Queue. Defaults are the authors' settings: 49 frames at 8 fps, 1280x704 "
                     "(auto size), UniPC, 50 steps, cfg 5, shift 5, seed 1234. ComfyUI loads the model partially and "
                     "offloads the rest on small GPUs.")
    sampling = ("WAN Context Windows (Manual) works too: context_length 49, overlap 16, standard_static, FreeNoise off "
                "(on 0.33 and later its defaults, standard_uniform and FreeNoise on, move away from the reference). "
                "Latent batch 1 only." if long_clip else
                "Stock samplers work too (e.g. KSampler uni_pc / simple, cfg 5, after ModelSamplingSD3 shift 5): close "
                "to the reference, not identical.")
    title = (f"WorldWander {task.name} (native, long clip): {view_line(task)}, of any length, on ComfyUI's own "
             "model, context windows, sampler and VAE Decode" if long_clip else
             f"WorldWander {task.name} (native): {view_line(task)}, on ComfyUI's own model, sampler and VAE Decode")
    note = "\n".join([
        title,
        "",
        *model_files_note(task, [
            (transformer, "(Load Diffusion Model; a GGUF 5B via ComfyUI-GGUF's Unet Loader (GGUF), or an fp8 / "
                          "fp8-scaled 5B file, works in its place)"),
            (vae, ""),
            (text_encoder, "(read only for prompts not yet in the pack's prompt cache)"),
            (lora, f"(the WorldWander LoRA for {task.name})")]),
        "",
        "Text, the stock way: Load CLIP (CLIPLoader) type 'wan' with the same umt5 file, then two CLIP Text Encode "
        f"nodes (\"{task.prompt}\" and an empty negative) into CFG Guider's positive and negative give the same "
        "conditioning as WorldWander Text Encode.",
        "Sampling: WorldWander Noise, Solver and Sigmas make SamplerCustomAdvanced reproduce the WorldWander Sampler "
        "(the reference). " + sampling,
        *([] if long_clip else [
            "Long clips: this graph samples the whole clip in one sequence; for clips much longer than 49 frames use "
            "exo2ego_native_long_clip.json (ComfyUI's context windows) or exo2ego_long_clip.json (the WW_* "
            "sampler's)."]),
        "",
        *steps,
    ])
    g.add(18, "Note", (400, 910), (560, 440 if long_clip else 400), [note], title="Read me: model files")
    g.link(1, 0, 2, "model")
    g.link(4, 0, 5, "text_encoder")
    g.link(2, 0, 7, "model")
    g.link(3, 0, 7, "vae")
    g.link(6, 0, 7, "source")
    if task.uses_reference:
        g.link(12, 0, 7, "reference")
    if long_clip:
        g.link(7, 0, 19, "model")
        g.link(19, 0, 8, "model")
    else:
        g.link(7, 0, 8, "model")
    g.link(5, 1, 8, "positive")
    g.link(5, 2, 8, "negative")
    g.link(9, 0, 13, "noise")
    g.link(8, 0, 13, "guider")
    g.link(10, 0, 13, "sampler")
    g.link(11, 0, 13, "sigmas")
    g.link(7, 1, 13, "latent_image")
    if long_clip:
        g.link(13, 0, 15, "samples")
    else:
        g.link(13, 0, 14, "samples")
        g.link(14, 0, 15, "samples")
    g.link(3, 0, 15, "vae")
    g.link(15, 0, 16, "images")
    g.link(6, 1, 16, "fit")
    g.link(16, 0, 17, "images")
    g.link(16, 1, 17, "fps")
    return g.to_json()


class Template(NamedTuple):
    """One shipped workflow: ``example_workflows/<stem>.json`` and its thumbnail ``<stem>.jpg``.

    ComfyUI's template browser (frontend 1.27 on ComfyUI 0.3.64, 1.49 on 0.33.0) shows nothing of a
    custom node pack's template but its thumbnail and its file name (as title, and with - and _ as
    spaces as description: GET /api/workflow_templates sends only the names). So ``description``,
    the one line a user chooses by, is drawn on the thumbnail under ``title``."""
    make: Callable[[], dict]
    title: str
    description: str


# To ship another workflow, add a row: the file name (without .json), how to build it, a short
# title and a one-line description naming the task, what the workflow is for and when to pick it.
TEMPLATES = {
    "exo2ego": Template(lambda: build("exo2ego"), "exo -> ego",
                        "Third-person clip to the first-person view, on the pack's own loaders and "
                        "sampler: the CLI's exact result"),
    "ego2exo": Template(lambda: build("ego2exo"), "ego -> exo",
                        "First-person clip and a photo of the wearer to a third-person view, on the "
                        "pack's own loaders and sampler"),
    "exo2ego_long_clip": Template(lambda: build("exo2ego", long_clip=True), "exo -> ego, long clip",
                                  "Third-person clip of any length to the first-person view, in "
                                  "overlapping 49-frame windows blended at every step"),
    "exo2ego_native": Template(lambda: build_native("exo2ego"), "exo -> ego, native",
                               "Third-person clip to the first-person view on ComfyUI's own model "
                               "loading: small GPUs, GGUF or fp8 files, stock samplers"),
    "ego2exo_native": Template(lambda: build_native("ego2exo"), "ego -> exo, native",
                               "First-person clip and a photo of the wearer to a third-person view on "
                               "ComfyUI's own model loading: small GPUs, GGUF"),
    "exo2ego_native_long_clip": Template(lambda: build_native("exo2ego", long_clip=True), "exo -> ego, native, long clip",
                                         "Third-person clip of any length to the first-person view, on ComfyUI's "
                                         "own model loading and context windows"),
}
WORKFLOWS = {stem: template.make for stem, template in TEMPLATES.items()}
TITLES = {stem: template.title for stem, template in TEMPLATES.items()}


def thumbnail(stem: str, workflow: dict):
    template = TEMPLATES[stem]
    return render_thumbnail(workflow, f"WorldWander {template.title}", template.description)


def workflow_text(workflow: dict) -> str:
    return json.dumps(workflow, indent=2) + "\n"


def main() -> None:
    OUT_DIR.mkdir(exist_ok=True)
    for stem, make in WORKFLOWS.items():
        workflow = make()
        path = OUT_DIR / f"{stem}.json"
        path.write_text(workflow_text(workflow))
        thumbnail(stem, workflow).save(OUT_DIR / f"{stem}.jpg", quality=95, subsampling=0)  # 4:4:4 keeps thin links crisp
        print(f"wrote {path} and its thumbnail")


if __name__ == "__main__":
    main()
