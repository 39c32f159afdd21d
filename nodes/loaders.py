"""Loader nodes: the Wan2.2-TI2V-5B transformer, a WorldWander (or any Wan) LoRA, the Wan2.2 VAE
and the UMT5 text encoder, from ComfyUI's model folders. Models live only in ComfyUI's node-output
cache, so ComfyUI's "free memory" / a changed input releases them; the transformer and the VAE are
also under ComfyUI's model management (nodes/host_memory.py): "Unload models" parks them off the
GPU and loading them unloads other models only when memory requires it.
"""

from __future__ import annotations

import torch

from comfy_api.latest import io

from . import host
from .handles import ModelHandle, TextEncoderHandle
from .schema import WWModel, WWTextEncoder, WWVae, check_choices

CATEGORY = "WorldWander/loaders"
DTYPES = ("auto", "bf16", "fp16", "fp32")


class WorldWanderModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        from wan_egoexo.memory.attention_choice import ATTENTION_BACKENDS  # noqa: PLC0415
        from wan_egoexo.memory.choices import MEMORY_MODES  # noqa: PLC0415

        return io.Schema(
            node_id="WorldWanderModelLoader", display_name="WorldWander Model Loader", category=CATEGORY,
            description="Loads the Wan2.2-TI2V-5B transformer (ComfyUI single file or a Diffusers folder).",
            inputs=[
                io.Combo.Input("model_name", options=host.model_choices(host.TRANSFORMER_FOLDERS),
                               tooltip="wan2.2_ti2v_5B_fp16.safetensors from models/diffusion_models (or models/unet), "
                                       "or a Wan2.2-TI2V-5B-Diffusers folder in models/diffusers."),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                               tooltip="Weight precision. auto = bf16 on a GPU, fp32 on the CPU."),
                io.Combo.Input("attention", options=list(ATTENTION_BACKENDS), default="sdpa",
                               tooltip="Attention kernel. sdpa = PyTorch's built-in; flash / sage need their "
                                       "packages."),
                io.Combo.Input("memory", options=list(MEMORY_MODES), default="auto",
                               tooltip="auto: when sampling, sized for that clip: first guidance as two passes "
                                       "(exact), then as many blocks on the GPU as fit, the rest streamed from CPU "
                                       "memory. resident: all weights on the GPU (fastest). offload: every block "
                                       "streamed (least GPU memory)."),
            ],
            outputs=[WWModel.Output(display_name="model", tooltip="The transformer, ready for WorldWander LoRA "
                                                                  "Loader and WorldWander Sampler.")])

    @classmethod
    def execute(cls, model_name, dtype, attention, memory="auto") -> io.NodeOutput:
        from wan_egoexo.devices import resolve_dtype  # noqa: PLC0415
        from wan_egoexo.memory.modulation import enable_compact_modulation  # noqa: PLC0415
        from wan_egoexo.models.transformer_loader import load_transformer  # noqa: PLC0415

        path = host.model_path(host.TRANSFORMER_FOLDERS, model_name, "model_name")
        check_choices(cls, dtype=dtype, attention=attention, memory=memory)
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
        return io.NodeOutput(ModelHandle(transformer, model_name, memory=memory))


def strength_input() -> io.Float.Input:
    """The LoRA strength widget, shared with WorldWander LoRA (native): the same scale and range."""
    return io.Float.Input("strength", default=1.0, min=-4.0, max=4.0, step=0.05,
                          tooltip="LoRA scale; 1.0 is how WorldWander was trained, 0 switches it off.")


class WorldWanderLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderLoraLoader", display_name="WorldWander LoRA Loader", category=CATEGORY,
            description="Adds a LoRA to the model: wan2-2_lora_three2one_* for exo -> ego, wan2-2_lora_one2three_* "
                        "for ego -> exo. Chain several; strengths never accumulate between runs.",
            inputs=[
                WWModel.Input("model", tooltip="From WorldWander Model Loader (or another LoRA loader)."),
                io.Combo.Input("lora_name", options=host.model_choices(host.LORA_FOLDERS, with_diffusers=False),
                               tooltip="A LoRA in models/loras: the released WorldWander .ckpt files (read safely, "
                                       "no pickle code runs) or a .safetensors LoRA in PEFT, Wan/DiffSynth or kohya "
                                       "layout."),
                strength_input(),
            ],
            outputs=[WWModel.Output(display_name="model", tooltip="The same transformer with this LoRA added to "
                                                                  "the ones it already had.")])

    @classmethod
    def execute(cls, model, lora_name, strength) -> io.NodeOutput:
        path = host.model_path(host.LORA_FOLDERS, lora_name, "lora_name", with_diffusers=False)
        return io.NodeOutput(model.with_lora(path, strength))


class WorldWanderVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderVAELoader", display_name="WorldWander VAE Loader", category=CATEGORY,
            description="Loads the Wan2.2 VAE (48 latent channels, 16x16 spatial and 4x temporal compression).",
            inputs=[
                io.Combo.Input("vae_name", options=host.model_choices(host.VAE_FOLDERS),
                               tooltip="wan2.2_vae.safetensors from models/vae (not the Wan2.1 VAE), or a "
                                       "Wan2.2-TI2V-5B-Diffusers folder in models/diffusers."),
                io.Combo.Input("tiling", options=["auto", "on", "off"], default="auto",
                               tooltip="Encode/decode in spatial tiles so the VAE never sets the memory peak. auto: "
                                       "when the free GPU memory needs it."),
            ],
            outputs=[WWVae.Output(display_name="vae",
                                  tooltip="The VAE, for WorldWander In-Context and WorldWander Decode.")])

    @classmethod
    def execute(cls, vae_name, tiling="auto") -> io.NodeOutput:
        from wan_egoexo.memory.runtime import wants_vae_tiling  # noqa: PLC0415
        from wan_egoexo.memory.vae_chunking import enable_vae_tiling  # noqa: PLC0415
        from wan_egoexo.models.vae_loader import load_vae  # noqa: PLC0415

        path = host.model_path(host.VAE_FOLDERS, vae_name, "vae_name")
        check_choices(cls, tiling=tiling)
        device = host.torch_device()
        vae = load_vae(path, device=host.offload_device("vae"))
        host.manage(vae, "vae")  # ComfyUI loads it onto its VAE device for each encode / decode
        if tiling == "on" or tiling == "auto" and wants_vae_tiling(device):
            enable_vae_tiling(vae)
        return io.NodeOutput(vae)


class WorldWanderTextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderTextEncoderLoader", display_name="WorldWander Text Encoder Loader", category=CATEGORY,
            description="Picks the UMT5-XXL text encoder (the fp8-scaled ComfyUI file carries its tokenizer). It is "
                        "checked now and loaded only for prompts not yet in the prompt cache, then released.",
            inputs=[
                io.Combo.Input("text_encoder_name", options=host.model_choices(host.TEXT_ENCODER_FOLDERS),
                               tooltip="umt5_xxl_fp8_e4m3fn_scaled.safetensors (or umt5_xxl_fp16) from "
                                       "models/text_encoders (or models/clip), or a Diffusers folder in "
                                       "models/diffusers."),
                io.Combo.Input("device", options=["default", "cpu"], default="default",
                               tooltip="default = where ComfyUI runs text encoders (usually the GPU); cpu saves GPU "
                                       "memory but encodes slowly."),
            ],
            outputs=[WWTextEncoder.Output(display_name="text_encoder",
                                          tooltip="The text encoder, for WorldWander Text Encode.")])

    @classmethod
    def execute(cls, text_encoder_name, device) -> io.NodeOutput:
        from wan_egoexo.devices import resolve_dtype  # noqa: PLC0415
        from wan_egoexo.models.text_encoder_loader import check_text_encoder  # noqa: PLC0415

        path = host.model_path(host.TEXT_ENCODER_FOLDERS, text_encoder_name, "text_encoder_name")
        check_choices(cls, device=device)
        check_text_encoder(path)  # a wrong file fails here, by name; the weights load only when needed
        run_on = torch.device(host.text_encoder_device() if device == "default" else "cpu")
        return io.NodeOutput(TextEncoderHandle(str(path), run_on, resolve_dtype(None, run_on)))


NODES = [WorldWanderModelLoader, WorldWanderLoraLoader, WorldWanderVAELoader, WorldWanderTextEncoderLoader]
