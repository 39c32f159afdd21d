"""Benchmark: what each hostile model file of issue 11 costs the reader (peak resident memory above
the process's size after its imports, wall time) and what the reader says about it.

Each case runs in its own Python process started in ``--code-root`` (default: this checkout), so
the same files can be measured against an older checkout for a before/after table:

    python -m benchmarks.bench_hostile_files                              # this checkout
    python -m benchmarks.bench_hostile_files --code-root /path/to/old/checkout --json before.json

The child's address space is capped at its size after imports plus ``--cap-gib`` (default 4), so a
reader that asks for more fails with MemoryError (reported as such) instead of taking the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks import hostile_files as hostile
from benchmarks import hostile_lora_files as lora18

NAME = "bench_hostile_files"
REPO = Path(__file__).resolve().parents[1]

READERS = {
    "lora": ("wan_egoexo.lora.layouts", "read_lora_file"),
    "transformer": ("wan_egoexo.models.transformer_loader", "load_transformer"),
    "lora4": ("wan_egoexo.lora.layouts", "read_lora_file"),  # the same file four times, all kept (a chain)
}

# (name, reader, builder); the builder writes the file into the folder it is given.
CASES = [
    ("ckpt: stride-0 tensor, 2 GiB view of 4 bytes", "lora", lambda d: hostile.stride0_ckpt(d / "s0.ckpt", 2)),
    ("ckpt: stride-0 tensor, 16 GiB view of 4 bytes", "lora", lambda d: hostile.stride0_ckpt(d / "s16.ckpt", 16)),
    ("ckpt: 1,000,000 GLOBAL opcodes (deflated)", "lora", lambda d: hostile.global_flood_ckpt(d / "g.ckpt")),
    ("ckpt: 1,000,000 distinct GLOBAL names", "lora",
     lambda d: hostile.global_flood_ckpt(d / "gd.ckpt", distinct=True)),
    ("ckpt: memo slot 2**28 (LONG_BINPUT)", "lora", lambda d: hostile.memo_index_ckpt(d / "m.ckpt")),
    ("ckpt: zip member claims 3 GiB", "lora", lambda d: hostile.huge_member_ckpt(d / "z.ckpt", 3)),
    ("ckpt: encrypted pickle member", "lora", lambda d: hostile.encrypted_member_ckpt(d / "e.ckpt")),
    ("ckpt: PPMd pickle member", "lora", lambda d: hostile.ppmd_member_ckpt(d / "p.ckpt")),
    ("ckpt: uint4 (sub-byte) tensor", "lora", lambda d: hostile.subbyte_dtype_ckpt(d / "u4.ckpt")),
    ("safetensors: unknown dtype Q4_K", "lora", lambda d: hostile.unknown_dtype_safetensors(d / "q.safetensors")),
    ("safetensors: overlapping offsets", "lora",
     lambda d: hostile.overlapping_offsets_safetensors(d / "o.safetensors")),
    ("safetensors: reversed offsets", "lora", lambda d: hostile.reversed_offsets_safetensors(d / "r.safetensors")),
    ("safetensors: 4 TB shape over 16 bytes", "lora",
     lambda d: hostile.shape_offset_mismatch_safetensors(d / "x.safetensors")),
    ("safetensors: 100 MiB header", "lora", lambda d: hostile.huge_header_safetensors(d / "h.safetensors")),
    ("ckpt: deflated record claims 1 GiB", "lora", lambda d: hostile.deflate_bomb_ckpt(d / "b.ckpt")),
    ("transformer: one tensor of the wrong shape", "transformer", hostile.wrong_shape_transformer_file),
    # issue 18
    ("st metadata: alpha_pattern key ((.*)*)*Z", "lora",
     lambda d: lora18.redos_alpha_pattern_safetensors(d / "re.safetensors")),
    *[(f"st metadata: {name}", "lora", lambda d, n=name: lora18.bad_metadata_safetensors(d / "md.safetensors", n))
      for name in lora18.BAD_METADATA],
    ("st metadata: lora_alpha of 4,000 digits", "lora", lambda d: lora18.huge_alpha_safetensors(d / "ha.safetensors")),
    ("safetensors: two dims of 4,299 digits", "lora", lambda d: lora18.huge_dims_safetensors(d / "hd.safetensors")),
    ("ckpt: 40,000 dict keys 1 + k*(2**61-1)", "lora", lambda d: lora18.colliding_dict_ckpt(d / "cd.ckpt")),
    ("ckpt: 160,000 dict keys 1 + k*(2**61-1)", "lora", lambda d: lora18.colliding_dict_ckpt(d / "cd4.ckpt", 160_000)),
    ("ckpt: 40,000 set members 1 + k*(2**61-1)", "lora", lambda d: lora18.colliding_set_ckpt(d / "cs.ckpt")),
    ("ckpt: 40,000 memo PUTs to 1 + k*(2**61-1)", "lora", lambda d: lora18.colliding_memo_ckpt(d / "cm.ckpt")),
    ("ckpt: 2,000 dict keys that are int pairs", "lora", lambda d: lora18.colliding_tuple_keys_ckpt(d / "ct.ckpt")),
    ("ckpt: tensor offset a 5,000-digit hex INT", "lora", lambda d: lora18.hex_int_offset_ckpt(d / "hx.ckpt")),
    ("ckpt: storage honestly inflating 1000:1 to 1 GiB", "lora", lambda d: lora18.inflating_ckpt(d / "inf.ckpt")),
    ("ckpt: four such files in one chain", "lora4", lambda d: lora18.inflating_ckpt(d / "inf4.ckpt")),
    ("ckpt: empty file (0 bytes)", "lora", lambda d: lora18.empty_file(d / "empty.ckpt")),
]
FAST_CASES = ("ckpt: stride-0 tensor, 2 GiB view of 4 bytes", "safetensors: overlapping offsets")

_CHILD = r"""
import importlib, json, resource, sys, time, traceback
module, function, path, cap, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
reader = getattr(importlib.import_module(module), function)
from wan_egoexo.errors import WanEgoExoError
def vm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1])
resource.setrlimit(resource.RLIMIT_AS, ((vm_kib() << 10) + cap, resource.RLIM_INFINITY))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
result = {}
try:
    out = reader(path, device="cpu") if function == "load_transformer" else [reader(path) for _ in range(repeat)]
    result["outcome"] = "loaded"
except BaseException as exc:
    named = isinstance(exc, WanEgoExoError)
    result["outcome"] = type(exc).__name__ + ("" if named else " (raw)")
    result["message"] = str(exc)
    result["traceback_lines"] = len(traceback.format_exc().splitlines())
result["seconds"] = time.perf_counter() - start
result["peak_growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print("RESULT " + json.dumps(result))
"""


# The merged-LoRA restore reads the base weights back from the model file. The file is swapped for
# another model of the same size after loading, its mtime preserved, then the restore runs: the
# restored weights are compared with the weights as loaded.
_RESTORE_CHILD = r"""
import json, os, resource, shutil, subprocess, sys, time, torch
from wan_egoexo.errors import WanEgoExoError
from wan_egoexo.lora import merge_loras, restore_base_weights
from wan_egoexo.models.transformer_loader import load_transformer
from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt
from wan_egoexo.tiny.transformer import build_tiny_transformer, save_transformer_single_file
folder, how = sys.argv[1], sys.argv[2]
model, other = os.path.join(folder, "transformer.safetensors"), os.path.join(folder, "other.safetensors")
save_transformer_single_file(build_tiny_transformer(0), model, prefix="model.diffusion_model.")
save_transformer_single_file(build_tiny_transformer(1), other, prefix="model.diffusion_model.")
assert os.path.getsize(model) == os.path.getsize(other)
lora = save_worldwander_ckpt(random_lora_state_dict(build_tiny_transformer(0), rank=2, seed=3),
                             os.path.join(folder, "lora.ckpt"))
transformer = load_transformer(model, device="cpu")
loaded = {k: v.clone() for k, v in transformer.state_dict().items()}
merge_loras(transformer, [(str(lora), 1.0)])
stat = os.stat(model)
if how == "os.replace + utime":
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(other, model)
elif how == "cp -p":
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    subprocess.run(["cp", "-p", other, model], check=True)
else:  # rewritten in place (same inode), then utime
    data = open(other, "rb").read()
    with open(model, "r+b") as handle:
        handle.write(data)
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
result = {}
try:
    restore_base_weights(transformer)
    result["outcome"] = "restored"
except BaseException as exc:
    result["outcome"] = type(exc).__name__ + ("" if isinstance(exc, WanEgoExoError) else " (raw)")
    result["message"] = str(exc)
result["seconds"] = time.perf_counter() - start
result["peak_growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
now = transformer.state_dict()
result["max_abs_diff_vs_loaded"] = max(float((now[k].float() - loaded[k].float()).abs().max()) for k in loaded)
result["weights_differing_from_loaded"] = sum(1 for k in loaded if not torch.equal(now[k], loaded[k]))
result["file_bytes"] = os.path.getsize(model)
print("RESULT " + json.dumps(result))
"""
RESTORE_CASES = ("os.replace + utime", "cp -p", "rewritten in place + utime")


def measure_restore(how: str, code_root: Path, timeout: float) -> dict:
    name = f"merged-LoRA restore: model file swapped ({how}, same size and mtime)"
    with tempfile.TemporaryDirectory(prefix="restore_") as folder:
        try:
            done = subprocess.run([sys.executable, "-c", _RESTORE_CHILD, folder, how], cwd=code_root,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"case": name, "outcome": f"still running after {timeout:.0f} s (killed)", "seconds": timeout}
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        return {"case": name, "outcome": f"process died (exit {done.returncode})", "seconds": 0,
                "message": done.stderr[-400:]}
    return {"case": name, **json.loads(lines[-1][len("RESULT "):])}


def measure(case_name: str, reader: str, path: Path, code_root: Path, cap_gib: float, timeout: float) -> dict:
    module, function = READERS[reader]
    command = [sys.executable, "-c", _CHILD, module, function, str(path), str(int(cap_gib * (1 << 30))),
               "4" if reader == "lora4" else "1"]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=code_root, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"case": case_name, "file_bytes": path.stat().st_size,
                "outcome": f"still running after {timeout:.0f} s (killed)", "seconds": timeout}
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        return {"case": case_name, "outcome": f"process died (exit {done.returncode})",
                "seconds": time.perf_counter() - start, "message": done.stderr[-400:]}
    return {"case": case_name, "file_bytes": path.stat().st_size, **json.loads(lines[-1][len("RESULT "):])}


def run(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code-root", type=Path, default=REPO, help="checkout whose wan_egoexo is measured")
    parser.add_argument("--cap-gib", type=float, default=4.0, help="address-space cap above the size after imports")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds before a case is killed")
    parser.add_argument("--only", action="append", default=None, help="run only cases containing this text")
    parser.add_argument("--fast", action="store_true", help="CI mode: two cases")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if (not args.fast or c[0] in FAST_CASES)
             and (not args.only or any(text in c[0] for text in args.only))]
    results = []
    with tempfile.TemporaryDirectory(prefix="hostile_") as work:
        for name, reader, build in cases:
            path = build(Path(work))
            results.append(measure(name, reader, path, args.code_root.resolve(), args.cap_gib, args.timeout))
            row = results[-1]
            print(f"{name:<48} {row.get('file_bytes', 0):>11,} B  {row.get('peak_growth_mib', float('nan')):>9.1f} MiB"
                  f"  {row['seconds']:>7.2f} s  {row['outcome']}: {row.get('message', '')[:160]}", flush=True)
        for how in RESTORE_CASES if not args.fast else ():
            if args.only and not any(text in f"restore {how}" for text in args.only):
                continue
            results.append(measure_restore(how, args.code_root.resolve(), args.timeout))
            row = results[-1]
            growth = row.get('peak_growth_mib', float('nan'))
            print(f"{row['case']:<48} {row.get('file_bytes', 0):>11,} B  {growth:>9.1f} "
                  f"MiB  {row['seconds']:>7.2f} s  {row['outcome']}: weights differing from the loaded "
                  f"{row.get('weights_differing_from_loaded')}, max diff {row.get('max_abs_diff_vs_loaded')} "
                  f"{row.get('message', '')[:160]}", flush=True)
    common.write_json(args.json, NAME, argv, args, "cpu", results)
    return results


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
