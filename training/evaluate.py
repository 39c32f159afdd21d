"""``python -m wan_egoexo_training.evaluate OUTPUTS GROUND_TRUTH [--json FILE] [--lpips auto|on|off] [--device cpu]``

Scores a folder of generated videos against a folder of ground-truth videos with the metrics the
trainer's validation logs (PSNR, SSIM, and LPIPS when its weights are on this machine; see
video_metrics). Videos are paired by name: ``walk01.mp4`` with ``walk01.mp4`` (any video format
ffmpeg reads, or folders of numbered frames), and the ``_exo2ego`` / ``_ego2exo`` suffix the
``wan-egoexo`` batch command adds to its outputs is ignored. Each pair needs the same frame count and
size. Prints one line per pair and the means; ``--json`` writes them as strict JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wan_egoexo.errors import InputError, WanEgoExoError
from wan_egoexo.in_context.tasks import TASKS
from wan_egoexo.video.read_write import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_video

from .run.metrics_log import json_safe
from .run.video_metrics import LPIPS_MODES, VideoMetrics, mean_metrics


def _clips(folder: Path) -> dict[str, Path]:
    """Videos and frame folders of ``folder`` by stem."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; expected a folder of videos or frame folders.")
    clips = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        is_frames = entry.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in entry.iterdir())
        if is_frames or (entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES):
            clips[entry.stem if entry.is_file() else entry.name] = entry
    return clips


def output_key(stem: str, truth: dict[str, Path]) -> str:
    """The ground-truth name an output's stem stands for (the batch command's task suffix ignored)."""
    if stem in truth:
        return stem
    for name in TASKS:
        if stem.endswith(f"_{name}") and stem[: -len(name) - 1] in truth:
            return stem[: -len(name) - 1]
    return stem


def pair_clips(outputs: Path, ground_truth: Path) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
    """([(name, output, truth)], outputs that have no ground truth)."""
    truth = _clips(ground_truth)
    pairs, unpaired = [], []
    for stem, path in _clips(outputs).items():
        key = output_key(stem, truth)
        if key in truth:
            pairs.append((key, path, truth[key]))
        else:
            unpaired.append(path)
    if not pairs:
        raise InputError(f"{outputs}: no video pairs with a ground truth of the same name in {ground_truth}; expected "
                         f"matching names such as {sorted(truth)[:3]}.")
    return pairs, unpaired


def evaluate_folders(outputs, ground_truth, lpips: str = "auto", device: str = "cpu") -> dict:
    """{"pairs": [{"name", "output", "ground_truth", "psnr", "ssim"[, "lpips"]}], "mean": {...},
    "unpaired": [...], "lpips_note": str | None}."""
    pairs, unpaired = pair_clips(Path(outputs), Path(ground_truth))
    metrics = VideoMetrics(device, lpips)
    rows = []
    for name, output, truth in pairs:
        generated, reference = read_video(output).frames, read_video(truth).frames
        try:
            scores = metrics(generated, reference)
        except InputError as exc:
            raise InputError(f"{output} vs {truth}: {exc}") from None
        rows.append({"name": name, "output": str(output), "ground_truth": str(truth), **scores})
    means = mean_metrics([{k: v for k, v in r.items() if isinstance(v, float)} for r in rows])
    return {"pairs": rows, "mean": means, "unpaired": [str(p) for p in unpaired], "lpips_note": metrics.lpips_note}


def format_report(report: dict) -> str:
    keys = list(report["mean"])
    lines = ["  ".join([f"{'name':24s}"] + [f"{k:>8s}" for k in keys])]
    for row in report["pairs"] + [{"name": f"mean of {len(report['pairs'])}", **report["mean"]}]:
        lines.append("  ".join([f"{row['name'][:24]:24s}"] + [f"{row[k]:8.4f}" for k in keys]))
    lines += [f"no ground truth for {path}" for path in report["unpaired"]]
    if report["lpips_note"]:
        lines.append(report["lpips_note"])
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wan_egoexo_training.evaluate", description=__doc__.split("\n\n")[1],
                                     allow_abbrev=False)
    parser.add_argument("outputs", help="folder of generated videos (or frame folders)")
    parser.add_argument("ground_truth", help="folder of ground-truth videos with the same names")
    parser.add_argument("--json", help="also write the scores to this JSON file")
    parser.add_argument("--lpips", choices=LPIPS_MODES, default="auto",
                        help="LPIPS: auto (when its AlexNet weights are on this machine), on, off (default: auto)")
    parser.add_argument("--device", default="cpu", help="torch device for the metrics (default: cpu)")
    args = parser.parse_args(argv)
    try:
        report = evaluate_folders(args.outputs, args.ground_truth, args.lpips, args.device)
    except WanEgoExoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
