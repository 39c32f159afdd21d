"""ComfyUI imported in-process, for the measuring workers only (native_worker.py, windows_worker.py; each runs in a process of its own, so no
host state leaks into the test session): a temporary copy of the host first on sys.path, --cpu,
its model folders pointed at the worker's tiny models, and this repository loaded as a custom node
pack by ComfyUI's own loader (nodes.load_custom_node), exactly as the server loads it.

One adjustment to the host, in this process only: ComfyUI builds the Wan2.2 VAE with the real
widths written into comfy/sd.py (160 / 256, two residual blocks), so the tiny VAE's widths are
passed in instead. Everything else (VAE.encode/decode, the loaders, sampling) is ComfyUI's code.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def diff(native, core) -> dict:
    """Max abs and relative difference of a native result against the core's (both as float64)."""
    native, core = native.detach().double().cpu(), core.detach().double().cpu()
    if native.shape != core.shape:
        raise AssertionError(f"shapes differ: native {tuple(native.shape)}, core {tuple(core.shape)}")
    max_abs = float((native - core).abs().max())
    return {"max_abs": max_abs, "rel": max_abs / float(core.abs().max())}


def _host_first_on_path(comfy_dir: Path) -> None:
    # The host's nodes.py and server.py must win over this pack's nodes/ and the tests' server.py.
    own = {str(HERE), str(REPO_ROOT), str(REPO_ROOT / "tests"), "", "."}
    sys.path[:] = [str(comfy_dir)] + [p for p in sys.path if p not in own] + [str(REPO_ROOT), str(REPO_ROOT / "tests")]


def _tiny_wan22_vae_widths(vae_config: dict) -> None:
    import comfy.ldm.wan.vae2_2 as vae2_2  # noqa: PLC0415

    real = vae2_2.WanVAE

    class TinyWidthsWanVAE(real):
        def __init__(self, **config):
            super().__init__(**{**config, "dim": vae_config["base_dim"], "dec_dim": vae_config["decoder_base_dim"],
                                "num_res_blocks": vae_config["num_res_blocks"]})

    vae2_2.WanVAE = TinyWidthsWanVAE


def start_host(comfy_dir: Path, models_dir: Path, input_dir: Path, vae_config: dict) -> types.SimpleNamespace:
    """Import ComfyUI from ``comfy_dir`` and load this pack; returns the node classes the worker uses."""
    _host_first_on_path(comfy_dir)
    import comfy.cli_args  # noqa: PLC0415  (argument parsing is off when imported: defaults)

    comfy.cli_args.args.cpu = True
    import folder_paths  # noqa: PLC0415

    for folder in ("diffusion_models", "vae", "loras"):
        folder_paths.add_model_folder_path(folder, str(models_dir / folder), is_default=True)
    folder_paths.set_input_directory(str(input_dir))
    _tiny_wan22_vae_widths(vae_config)

    import nodes  # noqa: PLC0415  (ComfyUI's nodes.py)
    from comfy_extras import nodes_custom_sampler, nodes_model_advanced  # noqa: PLC0415

    if not asyncio.run(nodes.load_custom_node(str(REPO_ROOT))):
        raise RuntimeError(f"ComfyUI could not load {REPO_ROOT} as a custom node pack; see the log above.")
    pack = {name: cls for name, cls in nodes.NODE_CLASS_MAPPINGS.items() if name.startswith("WorldWander")}
    return types.SimpleNamespace(
        nodes=nodes, pack=pack, custom=nodes_custom_sampler, advanced=nodes_model_advanced,
        comfy=sys.modules["comfy"])


def run_node(cls, *args, **kwargs):
    """Call a node the way ComfyUI's executor does and return its outputs as a tuple: a V1 node on a fresh
    instance (its FUNCTION), a V3 node (the pack's, and ComfyUI's own newer ones) by input name on a
    locked clone of its class."""
    if not hasattr(cls, "GET_SCHEMA"):
        return getattr(cls(), cls.FUNCTION)(*args, **kwargs)
    from comfy_api.internal import make_locked_method_func  # noqa: PLC0415

    kwargs.update(zip(inspect.signature(cls.execute).parameters, args))
    output = make_locked_method_func(cls, cls.FUNCTION, cls.PREPARE_CLASS_CLONE({}))(**kwargs)
    if inspect.isawaitable(output):
        output = asyncio.run(output)
    return output.result
