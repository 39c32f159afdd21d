"""WorldWander LoRA (native): any LoRA layout the core reads, applied to ComfyUI's own MODEL through
ComfyUI's own LoRA patching (weight patches on a model clone, so fp8 / GGUF models, offloading and
other LoRA loaders keep working and the input model is never changed).

ComfyUI 0.3.64's loader maps the original-Wan ``lora_down``/``lora_up``/``alpha`` layout onto a Wan
model, but not a ``.ckpt`` nor the PEFT/diffusers layout. So the file is read by the core (``.ckpt``
through the safe reader: no pickled code runs), converted in memory to that layout (the same tensors
``convert-lora`` writes), and handed to ``comfy.sd.load_lora_for_models``. Keys that match no layer
of the model are named in a warning; a LoRA of which nothing matches is an error.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict

from wan_egoexo.errors import ModelFileError
from wan_egoexo.option_ranges import check_lora_strength

from comfy_api.latest import io

from . import host
from .loaders import strength_input

UNET_PREFIX = "diffusion_model."
# What read_original_wan_modules returned, by file stamp (path, size, mtime), so a strength change re-reads
# nothing. Module level: a V3 node runs on a locked copy of its class and has no instance to keep it on.
# The V1 node kept one file per node instance; a few files cover a graph with several LoRA nodes.
_READ_CACHE: OrderedDict = OrderedDict()
READ_CACHE_FILES = 4


def _file_stamp(path: str) -> tuple:
    stat = os.stat(path)
    return (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


def read_cached(path: str):
    """read_original_wan_modules(path), from _READ_CACHE when that file is unchanged."""
    stamp = _file_stamp(path)
    if stamp not in _READ_CACHE:
        _READ_CACHE[stamp] = read_original_wan_modules(path)
        while len(_READ_CACHE) > READ_CACHE_FILES:
            _READ_CACHE.popitem(last=False)
    _READ_CACHE.move_to_end(stamp)
    return _READ_CACHE[stamp]


def read_original_wan_modules(path: str):
    """({original-Wan module name: LoraModule}, file keys left out, source) of any LoRA file the core reads."""
    from wan_egoexo.lora.convert import original_wan_modules  # noqa: PLC0415
    from wan_egoexo.lora.layouts import read_lora_file  # noqa: PLC0415

    weights = read_lora_file(path)
    modules, left_out = original_wan_modules(weights)
    return modules, left_out, weights.source


def patch_model_with_lora(model, modules, left_out, strength: float, source: str):
    """A clone of ``model`` with the LoRA ``modules`` (by original-Wan name) added as ComfyUI weight patches."""
    import comfy.lora  # noqa: PLC0415
    import comfy.sd  # noqa: PLC0415
    import comfy.utils  # noqa: PLC0415

    from wan_egoexo.lora.convert import original_wan_tensors  # noqa: PLC0415
    from wan_egoexo.lora.layouts import EXPECTED_LORA  # noqa: PLC0415

    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    tensors, unmatched = {}, list(left_out)
    for original, module in modules.items():
        weight_key = key_map.get(UNET_PREFIX + original)
        if weight_key is None:
            unmatched.extend(module.keys or (original,))
            continue
        weight_shape = tuple(comfy.utils.get_attr(model.model, weight_key).shape)
        lora_shape = (module.up.shape[0], module.down.shape[1])
        if weight_shape[:2] != lora_shape:
            raise ModelFileError(source, f"its LoRA for {original} is {lora_shape[0]}x{lora_shape[1]} but that layer "
                                 f"of the model is {weight_shape[0]}x{weight_shape[1]}: the LoRA was made for a "
                                 "different model.", EXPECTED_LORA)
        tensors.update(original_wan_tensors(original, module))
    if not tensors:
        raise ModelFileError(source, f"none of its {len(modules)} LoRA modules matches a layer of this model "
                             f"(for example {sorted(modules)[:3]}).", EXPECTED_LORA)
    if unmatched:
        warnings.warn(f"{source}: {len(unmatched)} LoRA keys match no layer of this model and were not loaded: "
                      f"{', '.join(unmatched)}", stacklevel=2)
    patched, _ = comfy.sd.load_lora_for_models(model, None, tensors, strength, 0.0)
    return patched


class WorldWanderLoraNative(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderLoraNative", display_name="WorldWander LoRA (native)", category="WorldWander/native",
            description="Adds a LoRA to ComfyUI's own Wan2.2 MODEL through ComfyUI's LoRA patching: the released "
                        "WorldWander .ckpt files (read safely) and .safetensors LoRAs in PEFT/diffusers, Wan/DiffSynth "
                        "or kohya/musubi layout, with no conversion step. Chain several.",
            inputs=[
                io.Model.Input("model", tooltip="Wan2.2-TI2V-5B from Load Diffusion Model (or another LoRA node)."),
                io.Combo.Input("lora_name", options=host.model_choices(host.LORA_FOLDERS, with_diffusers=False),
                               tooltip="A LoRA in models/loras: wan2-2_lora_three2one_* for exo2ego, "
                                       "wan2-2_lora_one2three_* for ego2exo (.ckpt, read without running pickled "
                                       "code), or any Wan .safetensors LoRA."),
                strength_input(),  # the same scale and range as WorldWander LoRA Loader's
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="A clone of the model with this LoRA patched in "
                                                                   "(the input model is unchanged).")])

    @classmethod
    def execute(cls, model, lora_name, strength) -> io.NodeOutput:
        path = host.model_path(host.LORA_FOLDERS, lora_name, "lora_name", with_diffusers=False)
        strength = check_lora_strength(strength)  # finite, within the core's range
        if strength == 0.0:
            return io.NodeOutput(model)
        modules, left_out, source = read_cached(path)
        return io.NodeOutput(patch_model_with_lora(model, modules, left_out, strength, source))


NODES = [WorldWanderLoraNative]
