"""Every benchmark script runs in --fast mode (tiny model, tiny size) and writes its JSON, so the
scripts cannot rot. The numbers are not checked (a shared CI machine is too noisy for that), only
what must hold on any machine: the variants agree, the record is complete, the cache hits."""

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import bench_cfg, bench_overhead, bench_predict_flow, bench_translate, bench_vae

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
    assert results["compact"]["relative_l2_vs_default"] < 1e-4
    default = results["default"]
    assert default["flop_per_s"] == default["flops"]["total"] / default["median_s"]
    assert results["compact"]["flops"]["total"] < default["flops"]["total"]  # timestep MLP on 2 rows, not N


def test_bench_overhead_fast(tmp_path):
    out = tmp_path / "overhead.json"
    assert bench_overhead.main(["--fast", "--json", str(out)]) == 0
    results = _record(out)
    assert set(results["ratio"]) == {"predict_flow", "predict_flow+compact"}
    assert all(len(times) == 2 for times in results["times_s"].values())


def test_bench_cfg_fast(tmp_path):
    out = tmp_path / "cfg.json"
    assert bench_cfg.main(["--fast", "--json", str(out)]) == 0
    results = _record(out)
    assert results["relative_l2_between"] < 1e-4  # sequential and batched guidance are the same computation
    assert set(results["memory"]) == {"sequential (authors)", "batched (ours)"}


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
    assert "batched (ours)" in done.stdout
