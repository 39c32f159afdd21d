"""The WW_* models under ComfyUI's model management: each transformer (resident mode) and VAE the
pack loads is known to comfy.model_management as a ModelPatcher, so "Unload models" (/free) and
ComfyUI's free-memory logic move it off the GPU like ComfyUI's own models, and loading it frees
other models only when the memory requires it (comfy.model_management.load_models_gpu).

The modules are diffusers models, not ComfyUI BaseModels: ComfyUI's per-module partial loading
(lowvram) expects its own cast-on-the-fly layers, so ours load whole (``force_full_load``). The
pack's own block offloading covers the small-GPU case; ComfyUI's partial loading is the native
path's. A ModelPatcher cannot wrap a diffusers model directly (diffusers' ``device`` is a
read-only property that ModelPatcher assigns), so it wraps a tiny stand-in whose ``to()`` moves
the real module. The stand-in refers to the module weakly and the module holds its patcher, so
no reference cycle keeps weights alive once ComfyUI's output cache drops the module. Written for
ComfyUI 0.3.x's model management (load_models_gpu's ``force_full_load``, ModelPatcher.loaded_size).
"""

from __future__ import annotations

import weakref

import torch

_PATCHER_ATTRIBUTE = "_worldwander_comfy_patcher"


def _mm():
    import comfy.model_management as mm  # noqa: PLC0415

    return mm


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's parameters and buffers (LoRA adapters included), as ComfyUI counts them."""
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


class _Mover(torch.nn.Module):
    """What the ModelPatcher manages: moving it moves the real module. It owns no parameters, so
    ComfyUI never tries to patch or partially load weights through it."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        super().__init__()
        self._target = weakref.ref(module)
        self.device = device

    def to(self, *args, **kwargs):
        module = self._target()
        if module is not None:
            module.to(*args, **kwargs)
        return self

    def get_dtype(self):
        module = self._target()
        return None if module is None else next(module.parameters()).dtype

    def __repr__(self) -> str:
        return type(self).__name__


def manage(module: torch.nn.Module, load_device: torch.device, offload_device: torch.device) -> None:
    """Make ComfyUI's model management responsible for where ``module`` lives: computed on
    ``load_device``, parked on ``offload_device`` when ComfyUI unloads it."""
    from comfy.model_patcher import ModelPatcher  # noqa: PLC0415

    current = next(module.parameters()).device
    # Named after the module: ComfyUI logs "Requested to load <class name>" and "Unloading <class name>".
    mover = type(f"WorldWander{type(module).__name__}", (_Mover,), {})(module, current)
    patcher = ModelPatcher(mover, load_device=torch.device(load_device), offload_device=torch.device(offload_device),
                           size=module_bytes(module))
    setattr(module, _PATCHER_ATTRIBUTE, patcher)


def patcher_of(module: torch.nn.Module):
    """The ModelPatcher that ``manage`` gave ``module``, or None."""
    return getattr(module, _PATCHER_ATTRIBUTE, None)


def load_to_device(module: torch.nn.Module, memory_required: int = 0) -> torch.device:
    """Before computing with a managed module: ComfyUI puts it on its load device, unloading other
    models only as far as the weights plus ``memory_required`` (working memory, bytes) need.
    An unmanaged module is left where it is. Returns the device the module computes on."""
    patcher = patcher_of(module)
    if patcher is None:
        return next(module.parameters()).device
    size = module_bytes(module)  # LoRA adapters added since the last load change it
    if size != patcher.size:
        if patcher.loaded_size() > 0:  # new adapters were created beside the loaded weights
            patcher.model.model_loaded_weight_memory = size
        patcher.size = size
    _mm().load_models_gpu([patcher], memory_required=int(memory_required), force_full_load=True)
    return patcher.load_device


def release(module: torch.nn.Module) -> None:
    """ComfyUI stops counting ``module`` as loaded, through its own unload (the weights go to the
    offload device). Called before the pack streams the module's blocks itself: ComfyUI's list must
    not hold a transformer whose weights the pack moves, or a later free_memory would move it back
    whole in the middle of a run. Nothing happens when ComfyUI does not hold it."""
    patcher = patcher_of(module)
    if patcher is None or patcher.loaded_size() == 0:
        return
    mm = _mm()
    others = [loaded for loaded in mm.current_loaded_models if loaded.model is not patcher]
    mm.free_memory(1e30, patcher.load_device, keep_loaded=others)  # as unload_all_models, for this one model


def make_room(memory_required: int, device) -> None:
    """Free ``memory_required`` bytes on ``device`` (a GPU) by unloading ComfyUI's models, least
    recently used first, only as far as needed; nothing happens for the CPU."""
    mm = _mm()
    device = torch.device(device) if device is not None else mm.get_torch_device()
    if device.type == "cpu":
        return
    mm.free_memory(int(memory_required) + mm.extra_reserved_memory(), device)


def offload_device(kind: str) -> torch.device:
    """Where ComfyUI parks a model of ``kind`` ("diffusion" or "vae") when it is not in use."""
    mm = _mm()
    return mm.vae_offload_device() if kind == "vae" else mm.unet_offload_device()


def load_device(kind: str) -> torch.device:
    mm = _mm()
    return mm.vae_device() if kind == "vae" else mm.get_torch_device()


def ready_transformer_for_sampling(transformer, offload: bool, latent_frames: int, latent_height: int,
                                   latent_width: int, has_reference: bool, cfg_batch: int) -> None:
    """Before sampling: the working memory of one forward (wan_egoexo.memory's estimate) is made
    free on the compute device; a resident transformer is loaded there by ComfyUI first, an
    offloaded one also needs room for the two blocks it streams."""
    from wan_egoexo.memory.flops import in_context_tokens  # noqa: PLC0415
    from wan_egoexo.memory.footprint import predict_flow_activation_bytes  # noqa: PLC0415

    config = transformer.config
    dtype = transformer.dtype
    tokens = in_context_tokens(config, latent_frames, latent_height, latent_width, has_reference)
    working = predict_flow_activation_bytes(config, tokens, cfg_batch, dtype, compact_modulation=True).peak
    if offload:
        make_room(working + 2 * module_bytes(transformer.blocks[0]), load_device("diffusion"))
    else:
        load_to_device(transformer, working)
