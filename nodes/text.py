"""Text nodes: encoding the prompt with the pack's UMT5 loader, or bridging a CONDITIONING made by
ComfyUI's own CLIPLoader (type "wan") + CLIPTextEncode into the same WW_TEXT embeddings.
"""

from __future__ import annotations

from wan_egoexo.comfy_interop import conditioning_to_embeddings
from wan_egoexo.tasks import TASKS, get_task

from . import host
from .handles import TEXT, TEXT_ENCODER, TextHandle

CATEGORY = "WorldWander/conditioning"
TASK_TOOLTIP = "exo2ego: third-person video -> first-person. ego2exo: first-person video -> third-person."


class WorldWanderTextEncode:
    DESCRIPTION = ("Encodes the prompt for the sampler. Leave the prompt empty to use the task's fixed prompt, "
                   "the one the released LoRAs were trained with.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (TEXT,)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = ("Prompt and negative prompt embeddings for WorldWander Sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": (TEXT_ENCODER, {"tooltip": "From WorldWander Text Encoder Loader."}),
            "task": (list(TASKS), {"default": "exo2ego", "tooltip": TASK_TOOLTIP + " Picks the fixed prompt."}),
            "prompt": ("STRING", {
                "multiline": True, "default": "",
                "tooltip": "Empty = the task's training prompt (\"Transform it into the first-person perspective.\" "
                           "or \"... third-person ...\"). Other text changes the result in untested ways."}),
            "negative_prompt": ("STRING", {
                "multiline": True, "default": "",
                "tooltip": "The unconditional prompt for classifier-free guidance; the reference setting is empty."}),
        }}

    def encode(self, text_encoder, task, prompt, negative_prompt):
        from wan_egoexo.memory.prompt_cache import encode_prompts_cached  # noqa: PLC0415
        from wan_egoexo.pipeline import task_prompts  # noqa: PLC0415

        task = get_task(task)
        custom = prompt if prompt.strip() else None
        embeds, _stats = encode_prompts_cached(text_encoder.path, task_prompts(task, custom, negative_prompt),
                                               device=text_encoder.device, dtype=text_encoder.dtype)
        positive, negative = embeds[:1], embeds[1:]
        host.release_cache()
        return (TextHandle(positive, negative, None if custom else task.name),)


class WorldWanderConditioningBridge:
    DESCRIPTION = ("Uses ComfyUI's own text encoding (Load CLIP with type 'wan' + CLIP Text Encode) for the "
                   "WorldWander sampler: the UMT5 states, zero-padded to 512 tokens like the pack's encoder.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (TEXT,)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = ("Prompt (and negative) embeddings for WorldWander Sampler.",)
    FUNCTION = "bridge"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {
                    "tooltip": "CLIP Text Encode of the prompt with a UMT5-XXL CLIP (Load CLIP, type 'wan'), "
                               "e.g. \"Transform it into the first-person perspective.\""}),
            },
            "optional": {
                "negative": ("CONDITIONING", {
                    "tooltip": "CLIP Text Encode of the negative prompt (empty text for the reference setting). "
                               "Not connected: no classifier-free guidance, cfg is ignored."}),
            },
        }

    def bridge(self, positive, negative=None):
        negative = None if negative is None else conditioning_to_embeddings(negative, "negative")
        return (TextHandle(conditioning_to_embeddings(positive, "positive"), negative),)
