"""Runs the pack's WW_* loaders inside ComfyUI's own model management (a real ComfyUI tree's
comfy.model_management and comfy.model_patcher, imported in this process) and prints, as JSON, what
ComfyUI did at each step: which models it holds as loaded, the bytes it counts, and every device
the pack's model weights were sent to.

    python memory_probe.py COMFYUI_DIR MODELS_DIR PACK_DIR

Started by test_memory_management.py in a fresh process, so ComfyUI's modules never mix with the
stand-ins other tests use. There is no GPU here, so ComfyUI's compute device is simulated by
``cpu:0`` (a torch.device distinct from ComfyUI's offload device ``cpu``; tensors sent there stay
in CPU memory) with a fixed free-memory budget: ComfyUI's decisions (what to load, what to evict,
what "Unload models" releases) are its real code; only the memory they act on is pretend.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import weakref
from pathlib import Path

import torch

GPU = torch.device("cpu", 0)  # the simulated compute device
BUDGET = {"bytes": 0}  # its size, set per scenario


def start_comfyui(comfy_dir: Path):
    sys.path.insert(0, str(comfy_dir))
    import comfy.options  # noqa: PLC0415

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args  # noqa: PLC0415

    args.cpu = True  # no CUDA probing at import; the compute device is replaced below
    import comfy.model_management as mm  # noqa: PLC0415
    import comfy.model_patcher  # noqa: F401, PLC0415

    def free_memory_on(dev=None, torch_free_too=False):
        dev = GPU if dev is None else dev
        if dev != GPU:
            free = 64 << 30
        else:
            free = BUDGET["bytes"] - sum(m.model_loaded_memory() for m in mm.current_loaded_models if m.device == GPU)
        return (free, free) if torch_free_too else free

    mm.get_torch_device = lambda: GPU
    mm.get_free_memory = free_memory_on
    mm.minimum_inference_memory = lambda: 0  # 1.2 GB in ComfyUI; the tiny models are a few MB
    mm.extra_reserved_memory = lambda: 0
    return mm


def load_pack(pack_dir: Path, models_dir: Path):
    import folder_paths  # noqa: PLC0415  (ComfyUI's own)

    for folder in ("diffusion_models", "vae", "text_encoders", "loras"):
        folder_paths.add_model_folder_path(folder, str(models_dir / folder))
    spec = importlib.util.spec_from_file_location("WorldWanderPack", pack_dir / "__init__.py")
    pack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pack
    spec.loader.exec_module(pack)
    return pack


def record_moves(module: torch.nn.Module, moves: list) -> None:
    """Log the device of every ``module.to(...)`` call (holding the module weakly: no reference cycle)."""
    target, real = weakref.ref(module), type(module).to

    def to(*args, **kwargs):
        device = next((torch.device(a) for a in args if isinstance(a, (str, torch.device))), kwargs.get("device"))
        moves.append(str(device))
        return real(target(), *args, **kwargs)

    module.to = to


def main(comfy_dir: str, models_dir: str, pack_dir: str) -> None:
    mm = start_comfyui(Path(comfy_dir))
    pack = load_pack(Path(pack_dir), Path(models_dir))
    from comfy.model_patcher import ModelPatcher  # noqa: PLC0415

    from native_host import run_node  # noqa: PLC0415  (beside this file; runs nodes as ComfyUI does)

    nodes = {cls.__name__: cls for cls in asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())}
    host_memory = sys.modules["WorldWanderPack.nodes.host_memory"]
    steps = []

    model = run_node(nodes["WorldWanderModelLoader"], "wan2.2_ti2v_5B_fp16.safetensors", "fp32", "sdpa", "resident")[0]
    vae = run_node(nodes["WorldWanderVAELoader"], "wan2.2_vae.safetensors", "off")[0]
    transformer = model.transformer
    ours = host_memory.patcher_of(transformer)
    moves, vae_moves = [], []
    record_moves(transformer, moves)
    record_moves(vae, vae_moves)
    size = host_memory.module_bytes(transformer)
    # A model of ComfyUI's own (say a CLIP), managed the way ComfyUI manages its models.
    other = ModelPatcher(torch.nn.Linear(256, 256), load_device=GPU, offload_device=torch.device("cpu"))
    other_size = other.model_size()

    def state(name, **extra):
        """ComfyUI's list of loaded models (ours by the repr of its stand-in) with the bytes it counts."""
        loaded = {"other" if m.model is other else repr(m.model.model): m.model_loaded_memory()
                  for m in mm.current_loaded_models}
        steps.append({"step": name, "loaded": loaded, "moves": list(moves), "vae_moves": list(vae_moves), **extra})
        moves.clear()
        vae_moves.clear()

    state("after the loaders", ours_size=size, other_size=other_size,
          parked_on=str(next(transformer.parameters()).device), ours_load_device=str(ours.load_device),
          ours_offload_device=str(ours.offload_device))

    BUDGET["bytes"] = 4 * (size + other_size)  # room for both
    mm.load_models_gpu([other])
    state("ComfyUI loads its own model")
    host_memory.ready_transformer_for_sampling(transformer, False, 3, 4, 4, has_reference=False, cfg_batch=2)
    state("the sampler asks for ours, with room for both")

    mm.unload_all_models()  # what POST /free {"unload_models": true} runs (main.py, prompt_worker)
    state("Unload models")

    BUDGET["bytes"] = size + other_size // 2  # too little for both
    mm.load_models_gpu([other])
    state("ComfyUI loads its own model again")
    host_memory.load_to_device(transformer)
    state("ours again, without room for both")
    mm.load_models_gpu([other])
    state("ComfyUI needs its model back")

    host_memory.load_to_device(vae)
    state("the VAE before an encode", vae_load_device=str(host_memory.patcher_of(vae).load_device))

    BUDGET["bytes"] = 4 * (size + other_size)
    host_memory.load_to_device(transformer)
    state("ours loaded once more")
    mm.load_models_gpu([other])
    host_memory.release(transformer)  # what the sampler does before it streams the blocks itself
    state("ours released before the pack streams its blocks")
    host_memory.release(transformer)
    state("released again")
    host_memory.load_to_device(transformer)
    state("ours resident again")
    del model, transformer, ours  # ComfyUI's output cache lets go of the loader's output
    state("the model handle dropped by ComfyUI's cache")
    print(json.dumps(steps))


if __name__ == "__main__":
    main(*sys.argv[1:4])
