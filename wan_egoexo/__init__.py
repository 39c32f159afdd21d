"""wan_egoexo: WorldWander ego <-> exo video translation on Wan2.2-TI2V-5B, without ComfyUI.

Where things are (each folder's docstring says what it owns and what it may import):

- ``models/``: finding and safely reading the model files; the transformer, VAE and UMT5 loaders;
- ``video/``: probing, timing, fitting, decoding, reading and writing clips, and their sound;
- ``in_context/``: the method: tasks, the in-context layout, collaborative positions, ``predict_flow``,
  latents, sliding windows;
- ``sampling/``: the reference solvers and the sampler;
- ``lora/``: reading every LoRA layout (``.ckpt`` safely), applying, merging, converting;
- ``memory/``: speed and memory options and the plan that chooses them;
- ``pipeline/``: preflight checks, one clip end to end, batches;
- ``cli/``: ``python -m wan_egoexo``;
- ``tiny/``: tiny random models in the real file layouts (tests, demos);
- top level, what every part uses: ``errors``, ``devices``, ``atomic_files``, ``finite_checks``,
  ``option_ranges``, ``lazy_exports``; and ``comfy_interop``, the conversions to ComfyUI's data
  conventions that the node pack uses (no ComfyUI import).

The public names below are imported on first use, so ``import wan_egoexo`` stays cheap
(ComfyUI imports the node pack at start-up; diffusers and transformers load only when needed).
"""

from .lazy_exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "predict_flow": "in_context.predict_flow",
    "load_transformer": "models.transformer_loader",
    "load_vae": "models.vae_loader",
    "load_text_encoder": "models.text_encoder_loader",
    "encode_prompts": "models.text_encoding",
    "apply_lora": "lora",
    "remove_loras": "lora",
    "set_lora_strength": "lora",
    "active_loras": "lora",
    "activate_loras": "lora",
    "convert_lora_file": "lora",
    "sample_target": "sampling.sampler",
    "SamplingSettings": "sampling.sampler",
    "encode_video": "in_context.latents",
    "decode_latents": "in_context.latents",
    "normalize_latents": "in_context.latents",
    "denormalize_latents": "in_context.latents",
    "read_video": "video.read_write",
    "write_video": "video.read_write",
    "read_image": "video.read_write",
    "FitOptions": "video.fit",
    "fit_video": "video.fit",
    "unfit_video": "video.fit",
    "translate_frames": "pipeline.translation",
    "translate_file": "pipeline.translation",
    "find_model_files": "models.model_files",
    "get_task": "in_context.tasks",
    "EXO2EGO": "in_context.tasks",
    "EGO2EXO": "in_context.tasks",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
