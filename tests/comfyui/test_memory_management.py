"""The WW_* models under ComfyUI 0.3.64's model management.

In-process (memory_probe.py, in its own process): the pack's loaders and sampler preparation
against ComfyUI's real comfy.model_management, with the compute device simulated (no GPU here;
see the probe's docstring). On the server: "Unload models" (POST /free) makes the next run load
the pack's models again, and a run without it does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .server import REPO_ROOT, copy_comfyui
from .test_e2e_workflows import assert_success, input_files, prepared_workflow  # noqa: F401  (fixture)
from .workflow_api import set_widget, workflow_to_prompt

OURS, VAE = "WorldWanderWanTransformer3DModel", "WorldWanderAutoencoderKLWan"  # as ComfyUI logs them


@pytest.fixture(scope="module")
def probe(comfy_path, tiny_models_dir, tmp_path_factory) -> dict:
    comfy_dir = copy_comfyui(comfy_path, tmp_path_factory.mktemp("probe") / "ComfyUI")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "tests/comfyui/memory_probe.py"), str(comfy_dir),
                           str(tiny_models_dir), str(REPO_ROOT)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert done.returncode == 0, done.stderr[-4000:]
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    for step in steps:  # shown with pytest -s
        print(f"\n{step['step']}: loaded {step['loaded']}, moves {step['moves'] + step['vae_moves']}", end="")
    return {step["step"]: step for step in steps}


def test_loaders_park_the_models_and_hand_them_to_comfyui(probe):
    first = probe["after the loaders"]
    assert first["loaded"] == {} and first["parked_on"] == "cpu"  # nothing on the compute device until used
    assert (first["ours_load_device"], first["ours_offload_device"]) == ("cpu:0", "cpu")


def test_loading_ours_keeps_other_models_when_there_is_room(probe):
    step = probe["the sampler asks for ours, with room for both"]
    size, other = probe["after the loaders"]["ours_size"], probe["after the loaders"]["other_size"]
    assert step["loaded"] == {OURS: size, "other": other}
    assert step["moves"] == ["cpu:0"]


def test_unload_models_releases_ours(probe):
    step = probe["Unload models"]
    assert step["loaded"] == {}
    assert step["moves"] == ["cpu"]  # the weights were sent to the offload device


def test_memory_pressure_evicts_what_it_must_either_way(probe):
    size, other = probe["after the loaders"]["ours_size"], probe["after the loaders"]["other_size"]
    assert probe["ComfyUI loads its own model again"]["loaded"] == {"other": other}
    ours_in = probe["ours again, without room for both"]
    assert ours_in["loaded"] == {OURS: size} and ours_in["moves"] == ["cpu:0"]
    other_in = probe["ComfyUI needs its model back"]
    assert other_in["loaded"] == {"other": other} and other_in["moves"] == ["cpu"]  # ComfyUI's logic freed ours


def test_the_vae_is_managed_too(probe):
    step = probe["the VAE before an encode"]
    assert step["vae_moves"] == ["cpu:0"] and step["vae_load_device"] == "cpu:0" and VAE in step["loaded"]


def test_releasing_ours_before_streaming_its_blocks_leaves_comfyuis_other_models(probe):
    """Before the pack streams the transformer's blocks itself, ComfyUI unloads it through its own code
    (so its list never counts weights the pack moves) and keeps every other model."""
    released = probe["ours released before the pack streams its blocks"]
    others = {name: size for name, size in probe["ours loaded once more"]["loaded"].items() if name != OURS}
    others["other"] = probe["after the loaders"]["other_size"]
    assert released["loaded"] == others and VAE in others and released["moves"] == ["cpu"]
    assert probe["released again"]["moves"] == [] and probe["released again"]["loaded"] == others
    again = probe["ours resident again"]
    assert again["loaded"][OURS] == probe["after the loaders"]["ours_size"] and again["moves"] == ["cpu:0"]


def test_a_dropped_model_leaves_comfyuis_list_at_once(probe):
    assert OURS in probe["ours loaded once more"]["loaded"]
    assert OURS not in probe["the model handle dropped by ComfyUI's cache"]["loaded"]  # no reference cycle, no gc


# ---------------------------------------------------------------- on the server

def test_unload_models_on_the_server_makes_the_next_run_load_again(comfy_server, object_info, input_files):  # noqa: F811
    workflow = prepared_workflow("exo2ego.json", object_info)
    sampler = next(node for node in workflow["nodes"] if node["type"] == "WorldWanderSampler")

    def run(seed: int) -> str:
        set_widget(workflow, sampler["id"], "seed", seed, object_info)
        mark = len(comfy_server.log_text())
        assert_success(comfy_server.run_prompt(workflow_to_prompt(workflow, object_info), timeout=600), comfy_server)
        return comfy_server.log_text()[mark:]

    run(11)
    again = run(12)
    assert f"Requested to load {OURS}" not in again  # still loaded from the run before
    status, _ = comfy_server.request("POST", "/free", {"unload_models": True})
    assert status == 200
    # The prompt worker handles the flag between prompts: after this tiny prompt ends it has surely done
    # so (right away if it was idle, else right after this prompt and before taking the next one).
    tiny = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    assert_success(comfy_server.run_prompt(tiny, timeout=120), comfy_server)
    after = run(13)
    assert f"Requested to load {OURS}" in after and f"Requested to load {VAE}" in after, after[-3000:]
