"""wan_egoexo: WorldWander ego <-> exo video translation on Wan2.2-TI2V-5B, without ComfyUI.

The public names below are imported on first use, so ``import wan_egoexo`` stays cheap
(ComfyUI imports the node pack at start-up; diffusers and transformers load only when needed).
"""

from .lazy_exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "predict_flow": "in_context",
    "load_transformer": "transformer_loader",
    "load_vae": "vae_loader",
    "load_text_encoder": "text_encoder_loader",
    "encode_prompts": "text_encoding",
    "apply_lora": "lora",
    "remove_loras": "lora",
    "set_lora_strength": "lora",
    "active_loras": "lora",
    "activate_loras": "lora",
    "convert_lora_file": "lora",
    "sample_target": "sampling",
    "SamplingSettings": "sampling",
    "encode_video": "latents",
    "decode_latents": "latents",
    "normalize_latents": "latents",
    "denormalize_latents": "latents",
    "read_video": "video_io",
    "write_video": "video_io",
    "read_image": "video_io",
    "FitOptions": "video_fit",
    "fit_video": "video_fit",
    "unfit_video": "video_fit",
    "translate_frames": "pipeline",
    "translate_file": "pipeline",
    "find_model_files": "model_files",
    "get_task": "tasks",
    "EXO2EGO": "tasks",
    "EGO2EXO": "tasks",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
