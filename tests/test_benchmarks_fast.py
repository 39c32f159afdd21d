"""Every benchmark script runs in --fast mode (tiny model, tiny size) and writes its JSON, so the
scripts cannot rot. The numbers are not checked (a shared CI machine is too noisy for that), only
what must hold on any machine: the variants agree, the record is complete, the cache hits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import (bench_cfg, bench_forward, bench_hostile_runs, bench_lora, bench_memory_model, bench_predict_flow,
                        bench_startup, bench_translate, bench_vae)

REPO = Path(__file__).resolve().parents[1]


def _record(path):
    record = json.loads(path.read_text())
    assert record["command"].startswith("python -m benchmarks.") and "--fast" in record["command"]
    assert record["environment"]["torch"] and record["arguments"]["fast"] is True
    return record["results"]


def test_bench_predict_flow_fast(tmp_path):
    out = tmp_path / "predict_flow.json"
    assert bench_predict_flow.main(["--fast", "--json", str(out)]) == 0
    results = {r["config"]: r for r in _record(out)}
    assert set(results) == {"default", "compact", "fp8", "compact+fp8"}
    assert all(r["status"] == "ok" for r in results.values())
    assert results["compact"]["relative_l2_vs_reference"] < 1e-4
    default = results["default"]
    assert default["flop_per_s"] == default["flops"]["total"] / default["median_s"]
    assert results["compact"]["flops"]["total"] < default["flops"]["total"]  # timestep MLP on 2 rows, not N


def test_bench_forward_fast(tmp_path):
    out = tmp_path / "forward.json"
    argv = ["--fast", "--json", str(out), "--before-rev", "HEAD"]  # the code as committed, beside the tree's
    comfyui = os.environ.get("COMFYUI_PATH")
    if comfyui:
        argv += ["--comfyui", comfyui]
    assert bench_forward.main(argv) == 0
    results = _record(out)
    expected = {"bare diffusers forward", "predict_flow, diffusers modulation", "predict_flow + compact (HEAD)",
                "predict_flow + compact (now)"} | ({"ComfyUI 0.3.64 forward"} if comfyui else set())
    assert set(results["ratio"]) == expected
    assert all(len(times) == 2 for times in results["times_s"].values())
    assert max(results["relative_l2_vs_fp32"].values()) < 1e-4  # float32: every forward is the same computation


def test_bench_memory_model_fast(tmp_path):
    out = tmp_path / "memory.json"
    assert bench_memory_model.main(["--fast", "--json", str(out)]) == 0
    results = _record(out)
    assert [(r["size"], r["modulation"]) for r in results] == [
        ("32x64x5", "compact"), ("32x64x5", "diffusers"), ("64x96x9", "compact"), ("64x96x9", "diffusers")]
    assert all(r["model_bytes"] > 0 and r["ratio"] == r["model_bytes"] / max(1, r["memory"]["delta_bytes"])
               for r in results)


def test_bench_lora_fast(tmp_path):
    out = tmp_path / "lora.json"
    assert bench_lora.main(["--fast", "--json", str(out)]) == 0
    results = _record(out)
    assert results["relative_l2_between"] < 1e-4  # float32: merged and unfused agree to rounding
    assert set(results["median_s"]) == {"merged", "unfused (PEFT adapter)"} and len(results["chain_change_s"]) == 2


def test_bench_startup_fast(tmp_path):
    out = tmp_path / "startup.json"
    assert bench_startup.main(["--fast", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert not any(results["after nodes"]["heavy"][name] for name in ("diffusers", "peft", "transformers"))


def test_bench_cfg_fast(tmp_path):
    out = tmp_path / "cfg.json"
    assert bench_cfg.main(["--fast", "--json", str(out)]) == 0
    results = _record(out)
    # sequential and batched guidance are the same computation
    assert max(results["relative_l2_vs_batched"].values()) < 1e-4
    assert set(results["memory"]) == {bench_cfg.BATCHED, bench_cfg.SEQUENTIAL}


def test_bench_translate_fast_with_prompt_cache(tmp_path):
    out = tmp_path / "translate.json"
    argv = ["--fast", "--json", str(out), "--prompt-cache", str(tmp_path / "cache"), "--runs", "2",
            "--compact", "--vae-tiling"]
    assert bench_translate.main(argv) == 0
    runs = _record(out)["runs"]
    assert [run["prompt_cache"]["loaded"] for run in runs] == [True, False]  # the second run never loads UMT5
    for run in runs:
        assert list(run["stages"]) == list(bench_translate.STAGES)
        assert all(stage["seconds"] >= 0 and stage["memory"]["peak_bytes"] > 0 for stage in run["stages"].values())


def test_bench_vae_fast(tmp_path):
    out = tmp_path / "vae.json"
    assert bench_vae.main(["--fast", "--json", str(out)]) == 0
    results = _record(out)
    assert [(r["op"], r["tiled"]) for r in results] == [("encode", False), ("decode", False),
                                                        ("encode", True), ("decode", True)]
    assert all(r["bytes_per_pixel"] >= 0 and r["median_s"] > 0 for r in results)


def test_a_benchmark_runs_as_a_plain_script():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_cfg.py"), "--fast"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert bench_cfg.BATCHED in done.stdout


def test_gpu_check_dry_run_writes_every_section(tmp_path):
    """The prepared GPU script, on the tiny model on the CPU: every section runs and is written."""
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out)}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["skipped"] == [] and list(record["sections"]) == ["modulation", "cfg", "attention", "plans", "fp8"]
    assert not [name for name, section in record["sections"].items() if "error" in section]
    plans = record["sections"]["plans"]
    assert [plans[name]["resident_blocks"] for name in plans if name != "seconds_spent"] == [None, None, 1, 1, 1, 0]
    assert all(plans[name]["model_bytes"] > 0 for name in plans if name != "seconds_spent")


def test_bench_native_lora_fp8_inside_comfyui(tmp_path):
    """The fp8 LoRA-effect figure of README/docs/performance.md: needs a ComfyUI host (CI has one)."""
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui:
        if os.environ.get("CI"):
            pytest.fail("COMFYUI_PATH is unset in CI")
        pytest.skip("COMFYUI_PATH is unset")
    out = tmp_path / "native_lora_fp8.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_native_lora_fp8", "--comfyui", comfyui,
                           "--strengths", "1.0", "--sigmas", "0.7", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = json.loads(out.read_text())["results"]
    assert [(r["task"], r["strength"], r["sigma"]) for r in rows] == [("exo2ego", 1.0, 0.7), ("ego2exo", 1.0, 0.7)]
    for row in rows:
        assert row["effect_size"] > 0.01 and 0 < row["base_l2"] < 0.2  # the LoRA acts; fp8 weights really are used
        assert row["effect_l2"] > row["base_l2"]  # the LoRA's effect moves more than the base output does


def test_bench_hostile_runs_fast(tmp_path):
    """The fast cases end as the docs say: a refused strength, no leftovers, an ffconcat .mp4 refused, an
    output naming its input refused with the input intact, a user's dot-files kept."""
    out = tmp_path / "hostile.json"
    assert bench_hostile_runs.main(["--fast", "--json", str(out)]) == 0
    rows = {row["case"]: row for row in json.loads(out.read_text())["results"]}
    strength = rows["--lora-strength 1e30"]
    assert strength["exit"] == 2 and not strength["written"]  # refused while the command line is parsed
    assert "argument --lora-strength: '1e30' is invalid; expected a finite number from -100.0 to 100.0" \
        in strength["message"]
    kill9 = rows["kill -9 during a write, then the next write into the folder"]
    assert kill9["after_kill"] and kill9["leftovers"] == []
    concat = rows["ffconcat script saved as clip.mp4 (same-folder file)"]
    assert concat["exit"] == 1 and not concat["written"] and "concat script" in concat["message"]
    same = rows["--video x.mp4 --out ./x.mp4"]
    assert same["exit"] == 1 and same["input_intact"] and "is the input" in same["message"]
    dotfiles = rows["out folder holds .bashrc.old-1 and .photos.old-2020/ (2 days old)"]
    assert dotfiles["exit"] == 0 and dotfiles["users_files_left"] == [".bashrc.old-1", ".photos.old-2020"]
