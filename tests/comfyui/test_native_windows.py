"""Long clips in the native path: WorldWander In-Context Windows (native) through the host's own
context windows equals the core's ``windowed_flow`` (sample_target with WindowOptions) for the same
windows, blend and noise, on either host (COMFYUI_PATH: 0.3.64 or 0.33.0).

One worker process (windows_worker.py) imports a temporary copy of the host in-process (--cpu) and
samples each case both ways; the numbers are max |native - core| and that divided by max |core| on
normalised target latents (run with -s to see the table). ComfyUI's blend equals the pack's linear
ramps only for some settings (the cases in ``equal``); two cases where it does not are measured and
must differ, so the comparison can tell.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .worker_run import measure_in_worker

WORKER = Path(__file__).with_name("windows_worker.py")
EXACT = 1e-5  # the bound for "the same computation" (as in test_native_parity.py)


def _table(results: dict) -> str:
    rows = ["| case | windows (first frames) | max abs | rel | equal expected |", "|---|---|---|---|---|"]
    for name, value in results["cases"].items():
        rows.append(f"| {name} | {value['comfy_window_starts']} | {value['max_abs']:.2e} | {value['rel']:.2e} | "
                    f"{'yes' if name in results['equal'] else 'no'} |")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def measured(comfy_path, tmp_path_factory) -> dict:
    results = measure_in_worker(WORKER, comfy_path, tmp_path_factory.mktemp("native_windows"))
    print(f"\nComfyUI at {comfy_path}\n" + _table(results))
    return results


def test_comfyui_evaluates_the_packs_windows(measured):
    for name, value in measured["cases"].items():
        assert value["comfy_window_starts"] == value["pack_window_starts"], name
    windowed = [name for name, value in measured["cases"].items() if value["windowed"]]
    assert len(windowed) == 6  # every case but the short clip really ran more than one window


def test_windowed_native_run_equals_windowed_flow(measured):
    assert len(measured["equal"]) == 5
    for name in measured["equal"]:
        assert measured["cases"][name]["rel"] < EXACT, (name, measured["cases"][name])


def test_blends_that_are_not_the_packs_ramps_are_told_apart(measured):
    # pyramid weights over a 12-frame overlap (the end-aligned window), flat weights over 4 frames:
    # ComfyUI's blend there is not the pack's linear ramp, and the comparison sees it
    for name, value in measured["cases"].items():
        if name not in measured["equal"]:
            assert value["rel"] > 1e-4, (name, value)


def test_the_whole_clip_latent_refuses_context_windows(measured):
    error = measured["refusal"]
    assert error is not None and error.startswith("InputError: model: WorldWander In-Context (native)")
    assert "WorldWander In-Context Windows (native)" in error
