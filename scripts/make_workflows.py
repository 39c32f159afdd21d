"""Writes the shipped workflows (workflows/*.json, ComfyUI UI format 0.4) from one description,
so their node ids, links, widget orders and the model-file note stay consistent.

    python scripts/make_workflows.py
"""
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wan_egoexo.model_files import TEXT_ENCODER, TRANSFORMER, VAE, lora_wanted  # noqa: E402
from wan_egoexo.tasks import get_task  # noqa: E402


def build(task_name, long_clip=False):
    task = get_task(task_name)
    lora = lora_wanted(task)
    nodes, links = [], []
    def node(nid, type_, pos, size, widgets, outputs=(), inputs=(), title=None, color=None):
        n = {"id": nid, "type": type_, "pos": list(pos), "size": list(size), "flags": {}, "order": 0, "mode": 0,
             "inputs": [dict(i) for i in inputs], "outputs": [], "properties": {"Node name for S&R": type_},
             "widgets_values": list(widgets)}
        for slot, (name, typ) in enumerate(outputs):
            n["outputs"].append({"name": name, "type": typ, "links": [], "slot_index": slot})
        if title: n["title"] = title
        if color: n["color"], n["bgcolor"] = color
        nodes.append(n); return n
    by_id = {}
    def link(src, src_slot, dst, dst_name):
        lid = len(links) + 1
        s, d = by_id[src], by_id[dst]
        typ = s["outputs"][src_slot]["type"]
        for slot, inp in enumerate(d["inputs"]):
            if inp["name"] == dst_name:
                inp["link"] = lid; break
        else:
            raise KeyError(dst_name)
        s["outputs"][src_slot]["links"].append(lid)
        links.append([lid, src, src_slot, dst, slot, typ])

    def add(*a, **k):
        n = node(*a, **k); by_id[n["id"]] = n; return n

    add(1, "WorldWanderModelLoader", (40, 60), (330, 110), [TRANSFORMER.names[0], "auto", "sdpa", "auto"],
        outputs=[("model", "WW_MODEL")])
    add(2, "WorldWanderLoraLoader", (400, 60), (330, 90), [lora.names[0], 1.0],
        outputs=[("model", "WW_MODEL")], inputs=[{"name": "model", "type": "WW_MODEL", "link": None}])
    add(3, "WorldWanderVAELoader", (40, 210), (330, 60), [VAE.names[0], "auto"], outputs=[("vae", "WW_VAE")])
    add(4, "WorldWanderTextEncoderLoader", (40, 310), (330, 90), [TEXT_ENCODER.names[0], "default"],
        outputs=[("text_encoder", "WW_TEXT_ENCODER")])
    add(5, "WorldWanderTextEncode", (400, 310), (330, 200), [task.name, "", ""],
        outputs=[("text", "WW_TEXT")], inputs=[{"name": "text_encoder", "type": "WW_TEXT_ENCODER", "link": None}])
    add(6, "WorldWanderLoadVideo", (40, 560), (330, 260),
        ["worldwander_input.mp4", 0, 0, 0 if long_clip else 49, 8.0, 1, 0, "crop"],
        outputs=[("frames", "IMAGE"), ("fit", "WW_FIT"), ("fps", "FLOAT")])
    ctx_inputs = [{"name": "vae", "type": "WW_VAE", "link": None}, {"name": "source", "type": "IMAGE", "link": None},
                  {"name": "reference", "type": "IMAGE", "link": None}, {"name": "fit", "type": "WW_FIT", "link": None}]
    add(7, "WorldWanderInContext", (780, 560), (330, 130), [task.name, "collaborative"],
        outputs=[("context", "WW_CONTEXT")], inputs=ctx_inputs)
    add(8, "WorldWanderSampler", (1150, 60), (330, 260), [1234, "fixed", 50, 5.0, 5.0, "unipc", 1.0, 13 if long_clip else 0, 4],
        outputs=[("samples", "LATENT")],
        inputs=[{"name": "model", "type": "WW_MODEL", "link": None}, {"name": "context", "type": "WW_CONTEXT", "link": None},
                {"name": "text", "type": "WW_TEXT", "link": None}, {"name": "init_latent", "type": "LATENT", "link": None}])
    add(9, "WorldWanderDecode", (1150, 400), (330, 100), [],
        outputs=[("frames", "IMAGE"), ("fps", "FLOAT")],
        inputs=[{"name": "vae", "type": "WW_VAE", "link": None}, {"name": "samples", "type": "LATENT", "link": None},
                {"name": "fit", "type": "WW_FIT", "link": None}])
    add(10, "WorldWanderSaveVideo", (1520, 60), (420, 520), [8.0, "WorldWander_" + task.name],
        inputs=[{"name": "images", "type": "IMAGE", "link": None},
                {"name": "fps", "type": "FLOAT", "link": None, "widget": {"name": "fps"}}])
    view = "third-person (exo) clip -> first-person (ego) clip" if task.name == "exo2ego" else \
        "first-person (ego) clip + reference image -> third-person (exo) clip"
    steps = ["1. Put the clip in ComfyUI/input (or use the upload button of WorldWander Load Video) and pick it."]
    if task.uses_reference:
        steps.append("2. Load Image: a picture of the person (full body, e.g. from behind), for the reference input.")
    if long_clip:
        steps.append(f"{len(steps) + 1}. Long clip: Load Video takes the whole clip (frames 0) at 8 fps; the sampler "
                     "covers it with overlapping 49-frame windows (window 13, overlap 4 latent frames) blended at "
                     "every step, so the whole clip comes out without seams.")
    steps.append(f"{len(steps) + 1}. Queue. Defaults are the authors' settings: 49 frames at 8 fps, 1280x704 "
                 "(auto size), UniPC, 50 steps, cfg 5, shift 5, seed 1234. The authors recommend an 80 GB GPU at full size; "
                 "use smaller width/height/frames on smaller GPUs.")
    note = "\n".join([
        f"WorldWander {task.name}{' (long clip)' if long_clip else ''}: {view}",
        "",
        "Model files (in ComfyUI/models):",
        f"- diffusion_models/{TRANSFORMER.names[0]}   (ComfyUI 2024: unet/)",
        f"    {TRANSFORMER.url}",
        f"- vae/{VAE.names[0]}",
        f"    {VAE.url}",
        f"- text_encoders/{TEXT_ENCODER.names[0]}   (ComfyUI 2024: clip/)",
        f"    {TEXT_ENCODER.url}",
        f"- loras/{lora.names[0]}   (the WorldWander LoRA for {task.name})",
        f"    {lora.url}",
        "",
        *steps,
    ])
    add(11, "Note", (400, 830), (560, 330), [note], title="Read me: model files")
    if task.uses_reference:
        add(12, "LoadImage", (400, 560), (330, 320), ["worldwander_reference.png", "image"],
            outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")])
    link(1, 0, 2, "model")
    link(4, 0, 5, "text_encoder")
    link(3, 0, 7, "vae")
    link(6, 0, 7, "source")
    link(6, 1, 7, "fit")
    if task.uses_reference:
        link(12, 0, 7, "reference")
    link(2, 0, 8, "model")
    link(7, 0, 8, "context")
    link(5, 0, 8, "text")
    link(3, 0, 9, "vae")
    link(8, 0, 9, "samples")
    link(6, 1, 9, "fit")
    link(9, 0, 10, "images")
    link(9, 1, 10, "fps")
    # execution order: a topological order of the graph
    order = [1, 2, 3, 4, 5, 6] + ([12] if task.uses_reference else []) + [7, 8, 9, 10, 11]
    for i, nid in enumerate(order):
        by_id[nid]["order"] = i
    nodes.sort(key=lambda n: n["id"])
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}

WORKFLOWS = {"exo2ego": ("exo2ego", False), "ego2exo": ("ego2exo", False), "exo2ego_long_clip": ("exo2ego", True)}

if __name__ == "__main__":
    for file_name, (task_name, long_clip) in WORKFLOWS.items():
        path = REPO / "workflows" / f"{file_name}.json"
        path.write_text(json.dumps(build(task_name, long_clip), indent=2) + "\n")
        print(f"wrote {path}")
