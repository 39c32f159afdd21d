"""Loader nodes: the Wan2.2-TI2V-5B transformer, a WorldWander (or any Wan) LoRA, the Wan2.2 VAE
and the UMT5 text encoder, from ComfyUI's model folders. Models live only in ComfyUI's node-output
cache, so ComfyUI's "free memory" / a changed input releases them; the transformer and the VAE are
also under ComfyUI's model management (nodes/host_memory.py): "Unload models" parks them off the
GPU and loading them unloads other models only when memory requires it.
"""

from __future__ import annotations

import torch

from . import host
from .handles import MODEL, TEXT_ENCODER, VAE, ModelHandle, TextEncoderHandle

CATEGORY = "WorldWander/loaders"
DTYPES = ("auto", "bf16", "fp16", "fp32")


class WorldWanderModelLoader:
    DESCRIPTION = "Loads the Wan2.2-TI2V-5B transformer (ComfyUI single file or a Diffusers folder)."
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The transformer, ready for WorldWander LoRA Loader and WorldWander Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from wan_egoexo.memory.attention_choice import ATTENTION_BACKENDS  # noqa: PLC0415
        from wan_egoexo.memory.choices import MEMORY_MODES  # noqa: PLC0415

        return {"required": {
            "model_name": (host.model_choices(host.TRANSFORMER_FOLDERS), {
                "tooltip": "wan2.2_ti2v_5B_fp16.safetensors from models/diffusion_models (or models/unet), "
                           "or a Wan2.2-TI2V-5B-Diffusers folder in models/diffusers."}),
            "dtype": (list(DTYPES), {
                "default": "auto",
                "tooltip": "Weight precision. auto = bf16 on a GPU, fp32 on the CPU."}),
            "attention": (list(ATTENTION_BACKENDS), {
                "default": "sdpa",
                "tooltip": "Attention kernel. sdpa = PyTorch's built-in; flash / sage need their packages."}),
            "memory": (list(MEMORY_MODES), {
                "default": "auto",
                "tooltip": "auto: when sampling, sized for that clip: first guidance as two passes (exact), then "
                           "as many blocks on the GPU as fit, the rest streamed from CPU memory. resident: all "
                           "weights on the GPU (fastest). offload: every block streamed (least GPU memory)."}),
        }}

    def load(self, model_name, dtype, attention, memory="auto"):
        from wan_egoexo.devices import resolve_dtype  # noqa: PLC0415
        from wan_egoexo.memory.modulation import enable_compact_modulation  # noqa: PLC0415
        from wan_egoexo.models.transformer_loader import load_transformer  # noqa: PLC0415

        path = host.model_path(host.TRANSFORMER_FOLDERS, model_name, "model_name")
        device = host.torch_device()
        stream_all = memory == "offload"
        # Parked where ComfyUI parks its own models; the sampler plans for its clip, then has ComfyUI
        # load a resident transformer or keeps the planned blocks resident and streams the others.
        transformer = load_transformer(path, device="cpu" if stream_all else host.offload_device("diffusion"),
                                       attention=attention,
                                       dtype=resolve_dtype(None if dtype == "auto" else dtype, device))
        enable_compact_modulation(transformer)  # no [tokens, 6, 3072] fp32 tensors; as close to fp32 as diffusers
        if not stream_all:  # offloaded blocks stream themselves; nothing stays on the GPU to manage
            host.manage(transformer, "diffusion")
        return (ModelHandle(transformer, model_name, memory=memory),)


class WorldWanderLoraLoader:
    DESCRIPTION = ("Adds a LoRA to the model: wan2-2_lora_three2one_* for exo -> ego, wan2-2_lora_one2three_* for "
                   "ego -> exo. Chain several; strengths never accumulate between runs.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same transformer with this LoRA added to the ones it already had.",)
    FUNCTION = "add_lora"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "From WorldWander Model Loader (or another LoRA loader)."}),
            "lora_name": (host.model_choices(host.LORA_FOLDERS, with_diffusers=False), {
                "tooltip": "A LoRA in models/loras: the released WorldWander .ckpt files (read safely, no "
                           "pickle code runs) or a .safetensors LoRA in PEFT, Wan/DiffSynth or kohya layout."}),
            "strength": ("FLOAT", {
                "default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05,
                "tooltip": "LoRA scale; 1.0 is how WorldWander was trained, 0 switches it off."}),
        }}

    def add_lora(self, model, lora_name, strength):
        path = host.model_path(host.LORA_FOLDERS, lora_name, "lora_name", with_diffusers=False)
        return (model.with_lora(path, strength),)


class WorldWanderVAELoader:
    DESCRIPTION = "Loads the Wan2.2 VAE (48 latent channels, 16x16 spatial and 4x temporal compression)."
    CATEGORY = CATEGORY
    RETURN_TYPES = (VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The VAE, for WorldWander In-Context and WorldWander Decode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (host.model_choices(host.VAE_FOLDERS), {
                "tooltip": "wan2.2_vae.safetensors from models/vae (not the Wan2.1 VAE), or a "
                           "Wan2.2-TI2V-5B-Diffusers folder in models/diffusers."}),
            "tiling": (["auto", "on", "off"], {
                "default": "auto",
                "tooltip": "Encode/decode in spatial tiles so the VAE never sets the memory peak. auto: when the "
                           "free GPU memory needs it."}),
        }}

    def load(self, vae_name, tiling="auto"):
        from wan_egoexo.memory.runtime import wants_vae_tiling  # noqa: PLC0415
        from wan_egoexo.memory.vae_chunking import enable_vae_tiling  # noqa: PLC0415
        from wan_egoexo.models.vae_loader import load_vae  # noqa: PLC0415

        path = host.model_path(host.VAE_FOLDERS, vae_name, "vae_name")
        device = host.torch_device()
        vae = load_vae(path, device=host.offload_device("vae"))
        host.manage(vae, "vae")  # ComfyUI loads it onto its VAE device for each encode / decode
        if tiling == "on" or tiling == "auto" and wants_vae_tiling(device):
            enable_vae_tiling(vae)
        return (vae,)


class WorldWanderTextEncoderLoader:
    DESCRIPTION = ("Picks the UMT5-XXL text encoder (the fp8-scaled ComfyUI file carries its tokenizer). It is "
                   "checked now and loaded only for prompts not yet in the prompt cache, then released.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The text encoder, for WorldWander Text Encode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder_name": (host.model_choices(host.TEXT_ENCODER_FOLDERS), {
                "tooltip": "umt5_xxl_fp8_e4m3fn_scaled.safetensors (or umt5_xxl_fp16) from models/text_encoders "
                           "(or models/clip), or a Diffusers folder in models/diffusers."}),
            "device": (["default", "cpu"], {
                "default": "default",
                "tooltip": "default = where ComfyUI runs text encoders (usually the GPU); cpu saves GPU memory "
                           "but encodes slowly."}),
        }}

    def load(self, text_encoder_name, device):
        from wan_egoexo.devices import resolve_dtype  # noqa: PLC0415
        from wan_egoexo.models.text_encoder_loader import check_text_encoder  # noqa: PLC0415

        path = host.model_path(host.TEXT_ENCODER_FOLDERS, text_encoder_name, "text_encoder_name")
        check_text_encoder(path)  # a wrong file fails here, by name; the weights load only when needed
        run_on = torch.device(host.text_encoder_device() if device == "default" else "cpu")
        return (TextEncoderHandle(str(path), run_on, resolve_dtype(None, run_on)),)
