"""The native nodes inside ComfyUI 0.3.64 against the core: the forward through ComfyUI's model
wrapper, every LoRA layout through WorldWander LoRA (native), sampling through SamplerCustomAdvanced
with CFGGuider, the stock KSampler, and the clean frames.

One worker process (native_worker.py) imports a temporary copy of the host in-process (--cpu) and
measures everything; each test checks its part. Numbers are max |native - core| and that divided by
max |core|, on normalised latents. Noise: WorldWander Noise gives the target frames the noise
sample_target draws for the seed (initial_noise of the target's shape on the CPU); the stock
comparisons use ComfyUI's RandomNoise on both sides.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .worker_run import measure_in_worker

WORKER = Path(__file__).with_name("native_worker.py")
EXACT = 1e-5  # the bound for "the same computation"

# The native nodes' sockets as a running server reports them: {class: (required, optional, outputs)}.
NATIVE_NODES = {
    "WorldWanderInContextNative": ({"model": "MODEL", "vae": "VAE", "source": "IMAGE", "task": "COMBO",
                                    "positions": "COMBO"}, {"reference": "IMAGE"}, ["MODEL", "LATENT"]),
    "WorldWanderInContextWindowsNative": ({"model": "MODEL", "vae": "VAE", "source": "IMAGE", "task": "COMBO",
                                           "positions": "COMBO"}, {"reference": "IMAGE"}, ["MODEL", "LATENT"]),
    "WorldWanderKeepTarget": ({"samples": "LATENT"}, {}, ["LATENT"]),
    "WorldWanderRestoreClip": ({"images": "IMAGE", "fit": "WW_FIT"}, {}, ["IMAGE", "FLOAT"]),
    "WorldWanderLoraNative": ({"model": "MODEL", "lora_name": "COMBO", "strength": "FLOAT"}, {}, ["MODEL"]),
    "WorldWanderSolver": ({"solver": "COMBO"}, {}, ["SAMPLER"]),
    "WorldWanderSigmas": ({"steps": "INT", "shift": "FLOAT", "solver": "COMBO", "denoise": "FLOAT"}, {}, ["SIGMAS"]),
    "WorldWanderNoise": ({"noise_seed": "INT"}, {}, ["NOISE"]),
}


def _table(results: dict) -> str:
    """The measurements as a markdown table (printed; run with -s to see it)."""
    rows = ["| comparison | max abs | rel | clean frames: max abs change |", "|---|---|---|---|"]
    for group in ("forward", "lora_layouts", "sampling", "stock_ksampler"):
        for name, value in results[group].items():
            clean = value.get("clean_frames_max_abs_change")
            rows.append(f"| {group}: {name} | {value['max_abs']:.2e} | {value['rel']:.2e} | "
                        f"{'' if clean is None else f'{clean:.1e}'} |")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def measured(comfy_path, tmp_path_factory) -> dict:
    results = measure_in_worker(WORKER, comfy_path, tmp_path_factory.mktemp("native_parity"))
    print("\n" + _table(results))
    return results


def test_native_forward_equals_predict_flow_with_apply_lora(measured):
    assert measured["model_class"] == "WAN22"  # UNETLoader detected the tiny single file as ComfyUI's Wan2.2-5B
    assert set(measured["forward"]) == {f"{task}/{positions}" for task in ("exo2ego", "ego2exo")
                                        for positions in ("collaborative", "uniform")}
    for case, value in measured["forward"].items():
        assert value["rel"] < EXACT, (case, value)


def test_native_lora_reads_every_layout_and_chains(measured):
    assert set(measured["lora_layouts"]) == {"ckpt", "peft", "original_down_up_alpha", "kohya_alpha",
                                             "chain_ckpt_0.5+kohya_0.7"}
    for layout, value in measured["lora_layouts"].items():
        assert value["rel"] < EXACT, (layout, value)
        assert value["warnings"] == [], layout  # a clean file loads without a word


def test_native_lora_names_unmatched_keys_and_refuses_a_lora_for_another_model(measured):
    [warning] = measured["lora_unmatched_warning"]
    assert "extra_keys.safetensors: 3 LoRA keys match no layer of this model" in warning
    for key in ("diffusion_model.blocks.7.self_attn.q.lora_down.weight",
                "diffusion_model.blocks.7.self_attn.q.lora_up.weight", "diffusion_model.blocks.0.self_attn.q.dora_scale"):
        assert key in warning
    error = measured["lora_nothing_matches_error"]
    assert error is not None and error.startswith("ModelFileError: ")
    assert "nothing_matches.safetensors: none of its 1 LoRA modules matches a layer of this model" in error


def test_native_lora_never_runs_a_checkpoints_pickled_code(measured):
    assert measured["evil_ckpt"]["code_ran"] is False
    assert measured["evil_ckpt"]["rel"] < EXACT  # and its LoRA tensors still load


@pytest.mark.parametrize("task", ["exo2ego", "ego2exo"])
@pytest.mark.parametrize("solver", ["euler", "unipc"])
def test_comfyui_sampling_equals_sample_target(measured, solver, task):
    # euler: the stock SAMPLER (KSamplerSelect) with WorldWander Sigmas; unipc: WorldWander Solver
    value = measured["sampling"][f"{solver}/{task}"]
    assert value["rel"] < EXACT, value


def test_comfyuis_own_uni_pc_is_not_the_reference(measured):
    # why WorldWander Solver exists: ComfyUI's uni_pc on the very same sigmas and noise lands elsewhere
    for task in ("exo2ego", "ego2exo"):
        assert measured["sampling"][f"comfy_uni_pc_on_reference_sigmas/{task}"]["rel"] > 1e-2


def test_stock_ksampler_with_its_own_schedule_stays_close(measured):
    for name, value in measured["stock_ksampler"].items():
        assert value["rel"] < 0.1, (name, value)


def test_clean_frames_leave_the_sampler_unchanged(measured):
    # raw latents of order 1: what changes is float rounding of ComfyUI's normalise / denormalise round trip
    for name in ("euler/exo2ego", "euler/ego2exo", "unipc/exo2ego", "unipc/ego2exo"):
        assert measured["sampling"][name]["clean_frames_max_abs_change"] < 1e-5, name
    assert measured["stock_ksampler"]["euler/simple/shift 5"]["clean_frames_max_abs_change"] < 1e-5


def _socket_type(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def test_native_nodes_are_served_with_their_sockets(object_info):
    for name, (required, optional, outputs) in NATIVE_NODES.items():
        assert name in object_info, f"{name} is missing from /object_info"
        info = object_info[name]
        assert {k: _socket_type(v) for k, v in info["input"]["required"].items()} == required, name
        assert {k: _socket_type(v) for k, v in info["input"].get("optional", {}).items()} == optional, name
        assert info["output"] == outputs and info["category"].startswith("WorldWander/"), name
    assert object_info["WorldWanderInContextNative"]["display_name"] == "WorldWander In-Context (native)"
    solver = object_info["WorldWanderSolver"]["input"]["required"]["solver"]  # a V3 menu: ["COMBO", {options}]
    assert solver[0] == "COMBO" and solver[1]["options"] == ["unipc", "euler"] and solver[1]["default"] == "unipc"
