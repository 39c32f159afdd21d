"""The V3 migration keeps every saved workflow and API prompt working, on the server's ComfyUI
(run the file once with each host as COMFYUI_PATH: 0.3.64 and 0.33.0).

* /object_info of every pack node equals the V1 pack's (tests/fixtures/object_info_v1.json, made from
  the V1 classes before the migration) in ids, input names, sections, order, types, defaults, ranges,
  menus, tooltips and output names / types, allowing only what the V3 path adds (node_info_compat.py).
* The workflows of the previous release (tests/fixtures/workflows_v1/: example_workflows/ as it was at
  commit 50d9545, before the migration) convert to API prompts with the new /object_info the way the
  frontend converts them, every widget value landing on the same input name as with the V1
  /object_info; then they validate and run on the server and write their video.
"""

from __future__ import annotations

import pytest

from .test_e2e_workflows import (VIDEO_NAME, assert_success, expected_output, output_videos,  # noqa: F401
                                 input_files, prepared_workflow)
from .workflow_api import workflow_to_prompt

from node_info_compat import V1_WORKFLOWS, all_differences, v1_object_info  # tests/ (pytest's rootdir path)

V1_WORKFLOW_NAMES = sorted(path.name for path in V1_WORKFLOWS.glob("*.json"))
MODEL_LISTS = {"model_name", "lora_name", "vae_name", "text_encoder_name"}  # the same tiny models folder as the fixture


def test_the_fixture_holds_the_previous_release():
    assert V1_WORKFLOW_NAMES == ["ego2exo.json", "ego2exo_native.json", "exo2ego.json", "exo2ego_long_clip.json",
                                 "exo2ego_native.json"]
    assert len(v1_object_info()) == 18


def test_object_info_of_every_pack_node_equals_the_v1_pack(object_info):
    assert all_differences(object_info, strict_lists=MODEL_LISTS) == []


@pytest.mark.parametrize("name", V1_WORKFLOW_NAMES)
def test_v1_workflow_widgets_land_on_the_same_inputs(name, object_info):
    """The frontend matches saved widget values to inputs by position: the same prompt from the V1 and the
    new /object_info means every value reaches the input it was saved for (links too)."""
    old_info = {**object_info, **v1_object_info()}  # ComfyUI's own nodes as served, the pack's as V1 served them
    workflow = prepared_workflow(name, object_info, folder=V1_WORKFLOWS)
    new_prompt = workflow_to_prompt(workflow, object_info)
    old_prompt = workflow_to_prompt(workflow, old_info)
    assert new_prompt == old_prompt
    pack_nodes = [node for node in new_prompt.values() if node["class_type"].startswith("WorldWander")]
    assert len(pack_nodes) >= 7 and any(node["inputs"].get("video") == VIDEO_NAME for node in pack_nodes)


@pytest.mark.parametrize("name", V1_WORKFLOW_NAMES)
def test_v1_workflow_validates_and_runs_on_the_v3_nodes(name, comfy_server, object_info, input_files):  # noqa: F811
    from wan_egoexo.video.read_write import read_video  # noqa: PLC0415

    workflow = prepared_workflow(name, object_info, folder=V1_WORKFLOWS)
    prompt = workflow_to_prompt(workflow, object_info)
    entry = comfy_server.run_prompt(prompt, timeout=600)
    assert_success(entry, comfy_server)
    (video_path,) = output_videos(entry, comfy_server.output_dir)
    frames, height, width, fps = expected_output(workflow, prompt, input_files[0], object_info)
    video = read_video(video_path)
    assert (video.num_frames, video.height, video.width) == (frames, height, width)
    assert video.fps == pytest.approx(fps, rel=1e-3) and video.frames.std() > 0
