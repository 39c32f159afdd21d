"""The native workflows on the 0.3.64 server beyond "it runs" (test_e2e_workflows.py runs every
shipped workflow as saved): with Load Video set to take the whole clip and to letterbox it (fit
"pad"), the saved mp4 has exactly the input clip's frame count, size and frame rate."""

from __future__ import annotations

import pytest

from .test_e2e_workflows import (CLIP_FPS, CLIP_FRAMES, CLIP_HEIGHT, CLIP_WIDTH, assert_success,  # noqa: F401
                                 input_files, only_node, output_videos, prepared_workflow)
from .workflow_api import set_widget, workflow_to_prompt


@pytest.mark.parametrize("name", ["exo2ego_native.json", "ego2exo_native.json", "exo2ego_native_long_clip.json"])
def test_native_workflow_gives_back_the_whole_clip_at_its_own_size_and_rate(name, comfy_server, object_info,
                                                                            input_files):  # noqa: F811
    from wan_egoexo.video.read_write import read_video  # noqa: PLC0415

    workflow = prepared_workflow(name, object_info)
    loader = only_node(workflow, "WorldWanderLoadVideo")
    set_widget(workflow, loader["id"], "frames", 0, object_info)  # the whole clip: 56 frames, padded to 57
    set_widget(workflow, loader["id"], "fit", "pad", object_info)
    entry = comfy_server.run_prompt(workflow_to_prompt(workflow, object_info), timeout=600)
    assert_success(entry, comfy_server)
    (video_path,) = output_videos(entry, comfy_server.output_dir)
    video = read_video(video_path)
    assert (video.num_frames, video.width, video.height) == (CLIP_FRAMES, CLIP_WIDTH, CLIP_HEIGHT)
    assert video.fps == pytest.approx(CLIP_FPS, rel=1e-3)
    assert video.frames.std() > 0
