"""The WorldWander ComfyUI nodes as V3 nodes (ComfyUI's ``comfy_api.latest``): ``NODES`` lists every
node class, and ``WorldWanderExtension`` hands that list to ComfyUI (through the pack's
``comfy_entrypoint``, in the repository root's __init__.py). Each node's id is its class name.

One module per concern: loaders, text, video (load, decode, save), context, sampling; the host
(ComfyUI) is reached only through host.py, the WW_* socket values are defined in handles.py and
their V3 socket types in schema.py. The native_* modules work on ComfyUI's own MODEL, VAE, LATENT,
SAMPLER, SIGMAS and NOISE (they reach ComfyUI only inside their functions): in-context latent and
Keep Target, the in-context windows for long clips through ComfyUI's context windows, LoRA, the
reference solver, and Restore Clip Size after any decode.

Adding a node: write it as an ``io.ComfyNode`` in its module, list it in that module's ``NODES``,
and (for a new module) add the module to ``_MODULES`` below.
"""

from comfy_api.latest import ComfyExtension

from . import (context, loaders, native_context, native_lora, native_sampling, native_video, native_windows, sampling,
               text, video)

# The order ComfyUI registers them in (and lists them in its node library by category).
_MODULES = (loaders, text, video, context, sampling, native_context, native_windows, native_lora, native_video,
            native_sampling)

NODES = [node for module in _MODULES for node in module.NODES]


class WorldWanderExtension(ComfyExtension):
    async def get_node_list(self) -> list:
        return list(NODES)


async def comfy_entrypoint() -> ComfyExtension:
    return WorldWanderExtension()


__all__ = ["NODES", "WorldWanderExtension", "comfy_entrypoint"]
