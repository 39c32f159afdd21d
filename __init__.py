"""ComfyUI entry point of the WorldWander node pack (ego <-> exo video translation on Wan2.2-TI2V-5B).

ComfyUI imports this file as a package named after the folder in custom_nodes/ and calls its
``comfy_entrypoint`` (the V3 node API, ComfyUI 0.3.64 and later): that imports the nodes (nodes/, V3
``io.ComfyNode`` classes) and returns their ``ComfyExtension``. The nodes use the
core package ``wan_egoexo`` that sits beside this file; when it is not installed, this folder is
*appended* to sys.path (appended so that ComfyUI's own top-level modules, e.g. its ``nodes``, keep
priority over this pack's ``nodes`` folder). Importing is cheap: models, diffusers and the ComfyUI
host modules are loaded only when a node lists its options or runs, and the nodes themselves (which
need ComfyUI's comfy_api) only when ComfyUI calls comfy_entrypoint. There is deliberately no
NODE_CLASS_MAPPINGS: ComfyUI would take that (V1) path and never call comfy_entrypoint. Imported
outside a package (e.g. run as a script), it registers nothing.
"""

import importlib.util
import logging
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_CORE = os.path.join(_HERE, "wan_egoexo")


def _core_locations(spec) -> list:
    if spec is None:
        return []
    return [os.path.abspath(p) for p in (spec.submodule_search_locations or [])]


def _make_core_importable() -> None:
    spec = importlib.util.find_spec("wan_egoexo")
    if spec is None:
        sys.path.append(_HERE)
    elif _CORE not in _core_locations(spec):
        logging.warning("WorldWander nodes: using the wan_egoexo package installed at %s, not the one in %s.",
                        ", ".join(_core_locations(spec)), _HERE)


if __package__:
    _make_core_importable()

    async def comfy_entrypoint():
        """ComfyUI's V3 entry point: the pack's ComfyExtension (its get_node_list gives every node)."""
        from .nodes import comfy_entrypoint as nodes_entrypoint  # noqa: PLC0415

        return await nodes_entrypoint()

    __all__ = ["comfy_entrypoint"]
else:
    __all__ = []
