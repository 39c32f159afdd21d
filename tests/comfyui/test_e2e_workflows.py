"""End-to-end: the shipped workflows run on a real ComfyUI server (tiny models, CPU).

The server tests need COMFYUI_PATH (see conftest.py); the conversion tests at the bottom do not.

Each shipped workflow is used as saved, except for:
  * the input video (and, for ego2exo, the reference image) file names, pointing at generated files;
  * in the native workflows, the transformer and text encoder files: ComfyUI's WanModel reads text
    4096 wide, so these point at tiny models of that width (tiny_native_files.py);
  * the size and step widgets: the shipped 1280x704 (auto), 50-step settings mean ~46,000 tokens per
    forward and 100 forwards, which takes close to an hour on two CPU cores even with the tiny
    models; 64x64 and 2 steps keep a run to seconds. Frames (49), fps, fit, cfg, shift, solver,
    seed and every link stay as shipped. (The interrupt test also sets 1000 steps, so that sampling
    is surely still running when the interrupt arrives, and another seed.)
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from .server import PACK_NAME, REPO_ROOT, PromptRejected
from .tiny_native_files import NATIVE_TEXT_ENCODER, NATIVE_TRANSFORMER
from .workflow_api import (
    WorkflowError,
    find_node,
    nodes_of_type,
    set_widget,
    widget_names,
    widget_values,
    workflow_to_prompt,
)

WORKFLOWS_DIR = REPO_ROOT / "example_workflows"
PACK_NODES = ("WorldWanderModelLoader", "WorldWanderLoraLoader", "WorldWanderVAELoader",
              "WorldWanderTextEncoderLoader", "WorldWanderTextEncode", "WorldWanderConditioningBridge",
              "WorldWanderLoadVideo", "WorldWanderInContext", "WorldWanderSampler", "WorldWanderDecode",
              "WorldWanderSaveVideo", "WorldWanderInContextNative", "WorldWanderLoraNative", "WorldWanderKeepTarget",
              "WorldWanderRestoreClip", "WorldWanderSolver", "WorldWanderSigmas", "WorldWanderNoise",
              "WorldWanderInContextWindowsNative")
TEST_SIZE = 64  # width and height used instead of the shipped auto size (see the module docstring)
TEST_STEPS = 2
CLIP_FRAMES, CLIP_WIDTH, CLIP_HEIGHT, CLIP_FPS = 56, 96, 64, 8.0  # longer than 49 frames at 8 fps
VIDEO_NAME, REFERENCE_NAME = "worldwander_input.mp4", "worldwander_reference.png"
# Every workflow in example_workflows/ runs end to end (a new one cannot be left out).
SHIPPED = sorted(path.name for path in WORKFLOWS_DIR.glob("*.json"))
# What the saved video must be, worked out by hand from the test clip (56 frames of 96x64 at 8 fps) and the
# loader as shipped (frames 49, or 0 for all; fps 8; crop) with the test size 64x64: the kept 64x64 region,
# at the clip's 8 fps; the long-clip workflows translate all 56 frames (two windows: the WW_* sampler's or
# ComfyUI's context windows). Checked beside the planner's figures (expected_output), which cover any other workflow.
HAND_WORKED_OUTPUT = {"exo2ego.json": (49, 64, 64, 8.0), "ego2exo.json": (49, 64, 64, 8.0),
                      "exo2ego_long_clip.json": (56, 64, 64, 8.0), "exo2ego_native.json": (49, 64, 64, 8.0),
                      "ego2exo_native.json": (49, 64, 64, 8.0), "exo2ego_native_long_clip.json": (56, 64, 64, 8.0)}
STEP_NODES = ("WorldWanderSampler", "WorldWanderSigmas")  # where a workflow sets its number of steps


def load_workflow(name: str, folder: Path = WORKFLOWS_DIR) -> dict:
    path = folder / name
    if not path.is_file():
        pytest.fail(f"{path}: missing; expected the shipped UI-format workflow.")
    return json.loads(path.read_text())


def only_node(workflow: dict, node_type: str) -> dict:
    found = nodes_of_type(workflow, node_type)
    assert len(found) == 1, f"expected one {node_type} node in the workflow, found {len(found)}"
    return found[0]


@pytest.fixture(scope="session")
def input_files(comfy_server):
    """The demo clip and reference image, written into the server's input folder."""
    from PIL import Image  # noqa: PLC0415

    from wan_egoexo.tiny.models_folder import make_demo_clip, make_demo_image  # noqa: PLC0415

    clip = make_demo_clip(comfy_server.input_dir / VIDEO_NAME, frames=CLIP_FRAMES, width=CLIP_WIDTH,
                          height=CLIP_HEIGHT, fps=CLIP_FPS)
    reference = comfy_server.input_dir / REFERENCE_NAME
    Image.fromarray(make_demo_image()).save(reference)
    return clip, reference


def prepared_workflow(name: str, object_info: dict, steps: int = TEST_STEPS, seed: int | None = None,
                      folder: Path = WORKFLOWS_DIR) -> dict:
    """The shipped workflow (or one in ``folder``) with the generated inputs, the test size and the given
    steps (and seed)."""
    workflow = load_workflow(name, folder)
    loader = only_node(workflow, "WorldWanderLoadVideo")
    set_widget(workflow, loader["id"], "video", VIDEO_NAME, object_info)
    set_widget(workflow, loader["id"], "width", TEST_SIZE, object_info)
    set_widget(workflow, loader["id"], "height", TEST_SIZE, object_info)
    (stepper,) = [node for kind in STEP_NODES for node in nodes_of_type(workflow, kind)]
    set_widget(workflow, stepper["id"], "steps", steps, object_info)
    if seed is not None:
        sampler = only_node(workflow, "WorldWanderSampler")
        set_widget(workflow, sampler["id"], "seed", seed, object_info)
    for image_loader in nodes_of_type(workflow, "LoadImage"):
        set_widget(workflow, image_loader["id"], "image", REFERENCE_NAME, object_info)
    for unet_loader in nodes_of_type(workflow, "UNETLoader"):  # the native workflows (see the module docstring)
        set_widget(workflow, unet_loader["id"], "unet_name", NATIVE_TRANSFORMER, object_info)
        text_loader = only_node(workflow, "WorldWanderTextEncoderLoader")
        set_widget(workflow, text_loader["id"], "text_encoder_name", NATIVE_TEXT_ENCODER, object_info)
    return workflow


def expected_output(workflow: dict, prompt: dict, clip_path, object_info: dict):
    """(frames, height, width, fps) the saved video should have, planned by wan_egoexo.video.fit from
    the workflow's loader settings; restored to the kept source region when Decode gets the fit."""
    from wan_egoexo.video.fit import FitOptions, fit_video  # noqa: PLC0415
    from wan_egoexo.video.read_write import read_video  # noqa: PLC0415

    loader = widget_values(only_node(workflow, "WorldWanderLoadVideo"), object_info)
    options = FitOptions(width=loader["width"] or None, height=loader["height"] or None,
                         max_frames=loader["frames"] or None, fps=loader["fps"] or None,
                         frame_stride=None if loader["fps"] else loader["frame_stride"],  # stride only with fps 0
                         start_frame=loader["start_frame"], mode=loader["fit"])
    clip = read_video(clip_path)
    _, info = fit_video(clip.frames, clip.fps, options)
    restores = nodes_of_type(workflow, "WorldWanderDecode") + nodes_of_type(workflow, "WorldWanderRestoreClip")
    assert len(restores) == 1, "expected one node that maps the frames back (Decode or Restore Clip Size)"
    if isinstance(prompt[str(restores[0]["id"])]["inputs"].get("fit"), list):
        return info.real_frames, info.output_size[1], info.output_size[0], info.output_fps
    return info.num_frames, info.height, info.width, info.output_fps


def output_videos(history_entry: dict, output_dir) -> list:
    """Paths of the .mp4 files that the prompt's output nodes reported in their ui dicts."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            name = value.get("filename")
            if isinstance(name, str) and name.lower().endswith(".mp4"):
                found.append(output_dir / value.get("subfolder", "") / name)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(history_entry.get("outputs", {}))
    return found


def assert_success(entry: dict, server) -> None:
    status = entry.get("status", {})
    assert status.get("status_str") == "success" and status.get("completed"), (
        f"prompt failed: {json.dumps(status.get('messages'), indent=1)[:3000]}\n{server.log_tail()}")


# ---------------------------------------------------------------- the server and the pack

def start_up_tracebacks(log: str) -> list[str]:
    """Each traceback in the log, up to the exception line and ComfyUI's "Cannot import" line after it
    (other tracebacks, e.g. ComfyUI's own optional nodes missing torchaudio, are not the pack's)."""
    traces = []
    for chunk in log.split("Traceback (most recent call last):")[1:]:
        lines = []
        for line in chunk.splitlines()[1:60]:
            lines.append(line)
            if line and not line.startswith(" ") and not line.startswith("Cannot import"):
                break  # the exception line ends the traceback
        traces.append("Traceback (most recent call last):\n" + "\n".join(lines))
    return traces


def test_pack_imports_without_error(comfy_server, object_info):
    log = comfy_server.log_text()
    block = re.search(r"Import times for custom nodes:\n(.*?)\n\s*\n", log, re.S)
    assert block, f"no custom node import report in the server log:\n{log[-4000:]}"
    lines = [line for line in block.group(1).splitlines() if line.rstrip().endswith(PACK_NAME)]
    assert len(lines) == 1, f"{PACK_NAME} is not in the import report:\n{block.group(0)}"
    assert "IMPORT FAILED" not in lines[0], f"the pack failed to import:\n{log[:block.end()][-6000:]}"
    ours = [trace for trace in start_up_tracebacks(log[:block.end()])
            if PACK_NAME in trace or str(REPO_ROOT) in trace]
    assert not ours, "the pack printed a traceback during start-up:\n" + "\n".join(ours)
    missing = [name for name in PACK_NODES if name not in object_info]
    assert not missing, f"nodes missing from /object_info: {missing}"
    assert all(object_info[name]["category"].startswith("WorldWander") for name in PACK_NODES)


def test_builtin_workflow_runs(comfy_server, object_info):
    """The harness itself, on built-in nodes only: EmptyImage -> SaveImage through a Reroute."""
    workflow = {
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "widgets_values": [40, 24, 3, 0x00FF00],
             "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]},
            {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
             "outputs": [{"name": "", "type": "IMAGE", "links": [2]}]},
            {"id": 3, "type": "SaveImage", "mode": 0, "widgets_values": ["harness"],
             "inputs": [{"name": "images", "type": "IMAGE", "link": 2}]},
            {"id": 4, "type": "Note", "mode": 0, "widgets_values": ["not sent"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
        "version": 0.4,
    }
    prompt = workflow_to_prompt(workflow, object_info)
    assert set(prompt) == {"1", "3"} and prompt["3"]["inputs"]["images"] == ["1", 0]
    entry = comfy_server.run_prompt(prompt, timeout=120)
    assert_success(entry, comfy_server)
    images = entry["outputs"]["3"]["images"]
    assert len(images) == 3
    from PIL import Image  # noqa: PLC0415

    with Image.open(comfy_server.output_dir / images[0]["subfolder"] / images[0]["filename"]) as saved:
        assert saved.size == (40, 24) and saved.convert("RGB").getpixel((5, 5)) == (0, 255, 0)


# ---------------------------------------------------------------- the shipped workflows

@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflow_writes_video(name, comfy_server, object_info, input_files):
    from wan_egoexo.video.read_write import read_video  # noqa: PLC0415

    workflow = prepared_workflow(name, object_info)
    prompt = workflow_to_prompt(workflow, object_info)
    entry = comfy_server.run_prompt(prompt, timeout=600)
    assert_success(entry, comfy_server)

    videos = output_videos(entry, comfy_server.output_dir)
    assert len(videos) == 1, f"expected one mp4 in the outputs, got {entry.get('outputs')}"
    assert videos[0].is_file(), f"{videos[0]} was reported but not written"
    frames, height, width, fps = expected_output(workflow, prompt, input_files[0], object_info)
    if name in HAND_WORKED_OUTPUT:
        assert (frames, height, width, fps) == pytest.approx(HAND_WORKED_OUTPUT[name]), "the planner disagrees"
    video = read_video(videos[0])
    assert (video.num_frames, video.height, video.width) == (frames, height, width)
    assert video.fps == pytest.approx(fps, rel=1e-3)
    assert video.frames.std() > 0  # not a blank video


def test_the_hand_worked_outputs_are_of_shipped_workflows():
    assert set(HAND_WORKED_OUTPUT) <= set(SHIPPED), "a workflow the tests know of is no longer shipped"


def test_ego2exo_without_reference_fails_validation(comfy_server, object_info, input_files):
    workflow = prepared_workflow("ego2exo.json", object_info)
    prompt = workflow_to_prompt(workflow, object_info)
    context_id = str(only_node(workflow, "WorldWanderInContext")["id"])
    assert widget_values(find_node(workflow, context_id), object_info)["task"] == "ego2exo"
    assert isinstance(prompt[context_id]["inputs"].pop("reference"), list)  # it was linked: unlink it

    with pytest.raises(PromptRejected) as rejected:
        comfy_server.queue_prompt(prompt)
    node_errors = rejected.value.body.get("node_errors", {})
    assert context_id in node_errors, f"the error is not on the InContext node: {rejected.value.body}"
    assert "reference" in json.dumps(node_errors[context_id]).lower()


def test_interrupt_stops_sampling_then_next_run_succeeds(comfy_server, object_info, input_files):
    steps = min(1000, object_info["WorldWanderSampler"]["input"]["required"]["steps"][1].get("max", 1000))
    workflow = prepared_workflow("exo2ego.json", object_info, steps=steps, seed=4321)
    sampler_id = str(only_node(workflow, "WorldWanderSampler")["id"])
    before = set(comfy_server.output_dir.rglob("*.mp4"))

    def sampler_progress(kind, data):
        return kind == "progress" and str(data.get("node")) == sampler_id

    prompt_id, messages, after = comfy_server.run_and_interrupt(
        workflow_to_prompt(workflow, object_info), sampler_progress, timeout=300)
    assert after >= 0, f"the sampler never reported progress: {messages}"
    progress = [data["value"] for kind, data in messages if sampler_progress(kind, data)]
    assert max(progress) < steps, f"sampling ran to the end despite the interrupt: {progress}"
    # Only progress already on its way when the interrupt was answered may still arrive: the step
    # callback checks for interruption, so sampling stops within one step.
    late = [data for kind, data in messages[after:] if sampler_progress(kind, data)]
    assert len(late) <= 2, f"sampling went on after the interrupt: {late}"
    entry = comfy_server.wait_for_history(prompt_id, timeout=60)
    status = entry.get("status", {})
    assert not status.get("completed") and status.get("status_str") != "success"
    assert "execution_interrupted" in [message[0] for message in status.get("messages", [])]
    assert set(comfy_server.output_dir.rglob("*.mp4")) == before, "an interrupted run saved a video"

    entry = comfy_server.run_prompt(workflow_to_prompt(
        prepared_workflow("exo2ego.json", object_info, seed=4321), object_info), timeout=600)
    assert_success(entry, comfy_server)
    videos = output_videos(entry, comfy_server.output_dir)
    assert len(videos) == 1 and videos[0].is_file() and videos[0] not in before


# ---------------------------------------------------------------- conversion (no server needed)

FAKE_OBJECT_INFO = {
    "Loader": {"input": {"required": {"name": [["a.safetensors", "b.safetensors"], {}]}},
               "output": ["THING"], "category": "test"},
    "Sampler": {"input": {"required": {"thing": ["THING"], "seed": ["INT", {"default": 0}],
                                       "steps": ["INT", {"default": 20}],
                                       "scale": ["FLOAT", {"forceInput": True}]},
                          "optional": {"label": ["STRING", {"multiline": True}]}},
                "output": ["LATENT"], "category": "test"},
    "Number": {"input": {"required": {"value": ["FLOAT", {"default": 1.0}]}}, "output": ["FLOAT"],
               "category": "test"},
}


def fake_workflow() -> dict:
    return {
        "nodes": [
            {"id": 1, "type": "Loader", "mode": 0, "widgets_values": ["b.safetensors", "image"]},
            {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 10}]},
            {"id": 3, "type": "Sampler", "mode": 0, "widgets_values": [7, "randomize", 12, "hello"],
             "inputs": [{"name": "thing", "type": "THING", "link": 11},
                        {"name": "scale", "type": "FLOAT", "link": 12},
                        {"name": "steps", "type": "INT", "link": 13, "widget": {"name": "steps"}}]},
            {"id": 4, "type": "Number", "mode": 0, "widgets_values": [2.5]},
            {"id": 5, "type": "PrimitiveNode", "mode": 0, "widgets_values": [33, "fixed"]},
            {"id": 6, "type": "MarkdownNote", "mode": 0, "widgets_values": ["# notes"]},
            {"id": 7, "type": "Number", "mode": 2, "widgets_values": [9.0]},
        ],
        "links": [[10, 1, 0, 2, 0, "THING"], [11, 2, 0, 3, 0, "THING"], [12, 4, 0, 3, 1, "FLOAT"],
                  [13, 5, 0, 3, 2, "INT"]],
        "version": 0.4,
    }


def test_conversion_maps_widgets_links_and_frontend_nodes():
    prompt = workflow_to_prompt(fake_workflow(), FAKE_OBJECT_INFO)
    assert set(prompt) == {"1", "3", "4"}  # Reroute, PrimitiveNode, note and the muted node are not sent
    assert prompt["1"]["inputs"] == {"name": "b.safetensors"}  # the upload button's value is ignored
    assert prompt["3"]["inputs"] == {"thing": ["1", 0],  # through the Reroute to the loader
                                     "seed": 7,  # "randomize" after the seed is skipped
                                     "steps": 33,  # the PrimitiveNode's value replaces the link
                                     "scale": ["4", 0], "label": "hello"}
    assert widget_names("Sampler", FAKE_OBJECT_INFO) == ["seed", "steps", "label"]


def test_set_widget_changes_only_that_value():
    workflow = fake_workflow()
    original = copy.deepcopy(workflow)
    set_widget(workflow, 3, "label", "changed", FAKE_OBJECT_INFO)
    assert workflow["nodes"][2]["widgets_values"] == [7, "randomize", 12, "changed"]
    workflow["nodes"][2]["widgets_values"][3] = "hello"
    assert workflow == original
    with pytest.raises(WorkflowError, match="no widget 'nope'"):
        set_widget(workflow, 3, "nope", 1, FAKE_OBJECT_INFO)


def test_bypassed_node_passes_its_input_through():
    workflow = fake_workflow()
    workflow["nodes"].append({"id": 8, "type": "Sampler", "mode": 4, "widgets_values": [1, "fixed", 2, ""],
                              "inputs": [{"name": "thing", "type": "THING", "link": 14}]})
    workflow["links"] += [[14, 1, 0, 8, 0, "THING"], [15, 8, 0, 3, 0, "THING"]]
    workflow["nodes"][2]["inputs"][0]["link"] = 15
    prompt = workflow_to_prompt(workflow, FAKE_OBJECT_INFO)
    assert "8" not in prompt and prompt["3"]["inputs"]["thing"] == ["1", 0]


def test_unknown_node_type_is_named():
    workflow = fake_workflow()
    workflow["nodes"].append({"id": 9, "type": "NotInstalled", "mode": 0, "widgets_values": []})
    with pytest.raises(WorkflowError, match="node 9 has type 'NotInstalled'"):
        workflow_to_prompt(workflow, FAKE_OBJECT_INFO)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflow_nodes_and_note(name):
    """Every node is a pack node, a built-in present in 2024 and 0.3.x ComfyUI, or a frontend-only
    node; the canvas note names every model file the loaders are set to."""
    workflow = load_workflow(name)
    assert workflow.get("version") == 0.4
    allowed = set(PACK_NODES) | {"LoadImage", "Note", "Reroute", "PrimitiveNode"}
    if "_native" in name:  # ComfyUI's own nodes, all present in 0.3.64
        allowed |= {"UNETLoader", "VAELoader", "CFGGuider", "SamplerCustomAdvanced", "VAEDecode"}
    if name.endswith("_native_long_clip.json"):
        allowed |= {"ContextWindowsManual"}
    types = {node["type"] for node in workflow["nodes"]}
    assert types <= allowed, f"{name} uses {sorted(types - allowed)}"
    note = " ".join(str(value) for node in nodes_of_type(workflow, "Note") for value in node["widgets_values"])
    loaders = {"WorldWanderModelLoader", "WorldWanderLoraLoader", "WorldWanderVAELoader",
               "WorldWanderTextEncoderLoader", "UNETLoader", "VAELoader", "WorldWanderLoraNative"}
    # Each loader's first widget is its file name (the LoRA loader's model input is a socket).
    files = [node["widgets_values"][0] for node in workflow["nodes"] if node["type"] in loaders]
    assert len(files) == 4 and all(file in note for file in files), f"the note does not name all of {files}"
