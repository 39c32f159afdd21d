"""Benchmark: start-up cost, before (a git revision) and after (this tree), each probe in a fresh
interpreter, the two trees alternating round by round: importing the node pack, registering its nodes
and calling every node's INPUT_TYPES() (what ComfyUI does at start-up), and importing the translate
command (the CLI module and the pipeline). Also whether diffusers, peft, transformers and
torch._dynamo were imported by then. torch's own import is timed apart (ComfyUI has imported it long
before the pack), and so is ComfyUI's comfy_api, which V3 nodes need (taken from COMFYUI_PATH; ComfyUI
imports it for its own nodes before any custom node).

    COMFYUI_PATH=../shared/comfyui/ComfyUI-0.3.64 python -m benchmarks.bench_startup --before-rev 5b4fa74 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common

NAME = "bench_startup"
REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "benchmarks" / "startup_probe.py"


def export_revision(revision: str) -> Path:
    """The repository's files at ``revision`` in a temporary folder (git archive)."""
    target = Path(tempfile.mkdtemp(prefix="startup_before_"))
    archive = target / "tree.tar"
    try:
        with open(archive, "wb") as handle:
            subprocess.run(["git", "archive", revision], cwd=REPO, stdout=handle, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"--before-rev: cannot export {revision!r} ({exc}).") from None
    with tarfile.open(archive) as tar:
        tar.extractall(target / "tree", filter="data")
    return target / "tree"


def probe(tree: Path, kind: str) -> dict:
    args = [sys.executable, str(PROBE), str(tree)] + (["translate"] if kind == "translate" else [])
    done = subprocess.run(args, capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"probe of {tree} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-rev", default=None, help="git revision to compare with (default: none)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fast", action="store_true", help="CI mode: this tree only, 1 round")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.fast:
        args.rounds, args.before_rev = 1, None
    trees = {"after": REPO}
    if args.before_rev:
        trees = {"before": export_revision(args.before_rev), **trees}
    samples = {(label, kind): [] for label in trees for kind in ("nodes", "translate")}
    for index in range(args.rounds):
        order = list(trees.items()) if index % 2 == 0 else list(trees.items())[::-1]
        for label, tree in order:
            for kind in ("nodes", "translate"):
                samples[(label, kind)].append(probe(tree, kind))
    results = {}
    for (label, kind), runs in samples.items():
        entry = {"torch_s": common.median([r["torch_s"] for r in runs]),
                 "host_s": common.median([r.get("host_s", 0.0) for r in runs]),
                 "import_s": common.median([r["import_s"] for r in runs]), "heavy": runs[-1]["after_import"]}
        if kind == "nodes":
            entry["input_types_s"] = common.median([r["input_types_s"] for r in runs])
            entry["heavy"] = runs[-1]["after_input_types"]
        results[f"{label} {kind}"] = entry
    rows = []
    for key, entry in results.items():
        heavy = ", ".join(name for name, loaded in entry["heavy"].items()
                          if loaded and name not in ("folder_paths", "comfy"))
        total = entry["import_s"] + entry.get("input_types_s", 0.0)
        rows.append([key, f"{entry['host_s']:.2f}", f"{entry['import_s']:.2f}",
                     f"{entry['input_types_s']:.2f}" if "input_types_s" in entry else "-", f"{total:.2f}",
                     heavy or "none"])
    if args.before_rev:
        for kind in ("nodes", "translate"):
            before, after = results[f"before {kind}"], results[f"after {kind}"]
            results[f"{kind} after / before"] = (after["import_s"] + after.get("input_types_s", 0.0)) / \
                (before["import_s"] + before.get("input_types_s", 0.0))
    common.print_table(
        f"start-up, fresh interpreter per probe, median of {args.rounds} alternating rounds (torch's own import "
        f"excluded: median {common.median([r['torch_s'] for runs in samples.values() for r in runs]):.2f} s)",
        ["tree and probe", "comfy_api s (apart)", "import s", "register + INPUT_TYPES s", "total s",
         "heavy packages imported"], rows)
    for kind in ("nodes", "translate"):
        if f"{kind} after / before" in results:
            print(f"{kind}: after / before = {results[f'{kind} after / before']:.3f}")
    common.write_json(args.json, NAME, argv, args, "cpu", results)
    return results


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
