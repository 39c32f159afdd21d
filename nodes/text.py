"""Text nodes: encoding the prompt with the pack's UMT5 loader (served from the on-disk prompt cache,
as WW_TEXT for the WorldWander Sampler and as ComfyUI CONDITIONING for the stock samplers), or
bridging a CONDITIONING made by ComfyUI's own CLIPLoader (type "wan") + CLIPTextEncode into WW_TEXT.
"""

from __future__ import annotations

from wan_egoexo.comfy_interop import conditioning_to_embeddings, embeddings_to_conditioning
from wan_egoexo.in_context.tasks import TASKS, get_task

from comfy_api.latest import io

from . import host
from .handles import TextHandle
from .schema import WWText, WWTextEncoder

CATEGORY = "WorldWander/conditioning"
TASK_TOOLTIP = "exo2ego: third-person video -> first-person. ego2exo: first-person video -> third-person."


class WorldWanderTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderTextEncode", display_name="WorldWander Text Encode", category=CATEGORY,
            description="Encodes the prompt for the sampler. Leave the prompt empty to use the task's fixed prompt, "
                        "the one the released LoRAs were trained with. Repeat prompts come from the on-disk prompt "
                        "cache without loading UMT5.",
            inputs=[
                WWTextEncoder.Input("text_encoder", tooltip="From WorldWander Text Encoder Loader."),
                io.Combo.Input("task", options=list(TASKS), default="exo2ego",
                               tooltip=TASK_TOOLTIP + " Picks the fixed prompt."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="Empty = the task's training prompt (\"Transform it into the first-person "
                                        "perspective.\" or \"... third-person ...\"). Other text changes the result "
                                        "in untested ways."),
                io.String.Input("negative_prompt", multiline=True, default="",
                                tooltip="The unconditional prompt for classifier-free guidance; the reference setting "
                                        "is empty."),
            ],
            # Outputs are only ever appended: saved workflows link them by slot index.
            outputs=[
                WWText.Output(display_name="text", tooltip="Prompt and negative prompt embeddings for WorldWander "
                                                           "Sampler."),
                io.Conditioning.Output(display_name="positive",
                                       tooltip="The prompt as ComfyUI CONDITIONING (what CLIPLoader type 'wan' + "
                                               "CLIPTextEncode give), for KSampler / CFGGuider on the native path."),
                io.Conditioning.Output(display_name="negative", tooltip="The negative prompt as ComfyUI CONDITIONING."),
            ])

    @classmethod
    def execute(cls, text_encoder, task, prompt, negative_prompt) -> io.NodeOutput:
        from wan_egoexo.memory.prompt_cache import encode_prompts_cached  # noqa: PLC0415
        from wan_egoexo.pipeline.translation import task_prompts  # noqa: PLC0415

        task = get_task(task)
        custom = prompt if prompt.strip() else None
        embeds, stats = encode_prompts_cached(text_encoder.path, task_prompts(task, custom, negative_prompt),
                                              device=text_encoder.device, dtype=text_encoder.dtype,
                                              load=_load_with_room)
        positive, negative = embeds[:1], embeds[1:]
        if stats["loaded"]:  # UMT5 ran and is dropped: hand its cached blocks back (nothing to do on a hit)
            host.release_cache()
        return io.NodeOutput(TextHandle(positive, negative, None if custom else task.name),
                             embeddings_to_conditioning(positive), embeddings_to_conditioning(negative))


def _load_with_room(path, device=None, dtype=None):
    """Load UMT5 (a prompt-cache miss) after ComfyUI frees what it must for it on ``device``."""
    from wan_egoexo.memory.footprint import text_encoder_bytes  # noqa: PLC0415
    from wan_egoexo.models.text_encoder_loader import load_text_encoder  # noqa: PLC0415

    host.make_room(text_encoder_bytes(dtype), device)
    return load_text_encoder(path, device=device, dtype=dtype)


class WorldWanderConditioningBridge(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderConditioningBridge", display_name="WorldWander Conditioning Bridge", category=CATEGORY,
            description="Uses ComfyUI's own text encoding (Load CLIP with type 'wan' + CLIP Text Encode) for the "
                        "WorldWander sampler: the UMT5 states, zero-padded to 512 tokens like the pack's encoder.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="CLIP Text Encode of the prompt with a UMT5-XXL CLIP (Load "
                                                          "CLIP, type 'wan'), e.g. \"Transform it into the "
                                                          "first-person perspective.\""),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="CLIP Text Encode of the negative prompt (empty text for the reference "
                                              "setting). Not connected: no classifier-free guidance, cfg is ignored."),
            ],
            outputs=[WWText.Output(display_name="text",
                                   tooltip="Prompt (and negative) embeddings for WorldWander Sampler.")])

    @classmethod
    def execute(cls, positive, negative=None) -> io.NodeOutput:
        negative = None if negative is None else conditioning_to_embeddings(negative, "negative")
        return io.NodeOutput(TextHandle(conditioning_to_embeddings(positive, "positive"), negative))


NODES = [WorldWanderTextEncode, WorldWanderConditioningBridge]
