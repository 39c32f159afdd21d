"""The in-context sequence on ComfyUI's own MODEL, VAE and LATENT.

WorldWander In-Context (native) puts the clean parts in the LATENT itself, [reference?, source,
empty target] along the latent frame axis, with a noise_mask that is 0 on the clean frames and 1 on
the target: ComfyUI's WAN22 model turns that mask into per-frame timesteps (0 on the clean frames)
and its inpainting sampler keeps the clean frames clean, the way its own Wan22ImageToVideoLatent
conditions a first frame. The collaborative positions are an object patch of the model clone's
``diffusion_model.rope_encode``: ComfyUI's own rotary table, with its frames re-indexed by the
core's layout. WorldWander Keep Target cuts the sampled LATENT to the target for the stock VAE Decode.

Nothing here imports ComfyUI's model code: MODEL, VAE and LATENT are used through their own methods
(only the node schema comes from ComfyUI's comfy_api).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from wan_egoexo.comfy_interop import first_image, image_batch_to_video, latent_samples, video_to_image_batch
from wan_egoexo.errors import InputError
from wan_egoexo.option_ranges import check_clip_frames
from wan_egoexo.in_context.layout import InContextLayout, check_positions, reindex_frames, target_frames_from_mask
from wan_egoexo.in_context.latents import latent_shape
from wan_egoexo.in_context.tasks import Task, get_task

from comfy_api.latest import io

from . import host
from .context import (NOT_CONNECTED, WorldWanderInContext, missing_reference_message, positions_input,
                      reference_input, source_input, task_input)

CATEGORY = "WorldWander/native"
WAN22_LATENT_CHANNELS = 48


class InContextRope:
    """``diffusion_model.rope_encode`` for the in-context sequence: the wrapped rope_encode's table for
    consecutive frames, with each frame re-indexed to its collaborative position. The layout is read
    from the number of frames, so one patched model serves any clip length of its task.

    Every argument after ``t, h, w`` is passed on unchanged, whatever the host adds to rope_encode
    (ComfyUI >= 0.3.68 passes ``transformer_options``, >= 0.25 also ``source_id``); only the frame
    count is replaced. Calls that are not the sequence's own table (a ``t_start``, ``steps_*`` or a
    non-zero ``source_id``: motion, reference or context-stream tables) get the plain table."""

    _PLAIN_TABLE_ONLY = {"t_start": 0, "steps_t": None, "steps_h": None, "steps_w": None, "source_id": 0}

    def __init__(self, rope_encode, has_reference: bool, positions: str):
        self.rope_encode = rope_encode
        self.has_reference = has_reference
        self.positions = check_positions(positions)

    def __repr__(self) -> str:
        return f"InContextRope(has_reference={self.has_reference}, positions={self.positions!r})"

    def _named_arguments(self, t, h, w, args, kwargs) -> dict | None:
        """The call's arguments by name (positional ones named by the wrapped signature), or None when
        they do not bind (the wrapped function then raises its own error)."""
        try:
            signature = inspect.signature(self.rope_encode)
        except (TypeError, ValueError):
            signature = inspect.signature(_STOCK_ROPE_ENCODE)
        try:
            bound = signature.bind(t, h, w, *args, **kwargs)
        except TypeError:
            return None
        named = dict(bound.arguments)
        for parameter in signature.parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                named.update(named.pop(parameter.name, {}))
        return named

    def __call__(self, t, h, w, *args, **kwargs):
        named = self._named_arguments(t, h, w, args, kwargs)
        if named is None or any(named.get(name, default) != default
                                for name, default in self._PLAIN_TABLE_ONLY.items()):
            return self.rope_encode(t, h, w, *args, **kwargs)
        layout = InContextLayout.from_total_frames(t, self.has_reference, self.positions, name="latent")
        index = layout.frame_index()
        table = self.rope_encode(int(index.max()) + 1, h, w, *args, **kwargs)
        return reindex_frames(table, index, dim=1)


def _STOCK_ROPE_ENCODE(t, h, w, t_start=0, steps_t=None, steps_h=None, steps_w=None, device=None, dtype=None,
                       **kwargs):
    """The order of WanModel.rope_encode's arguments, to name positional ones when the wrapped callable
    has no signature."""


def _wan22_model(model):
    """The model's Wan diffusion model, or InputError naming the input when it is not a Wan2.2-5B MODEL."""
    try:
        diffusion_model = model.get_model_object("diffusion_model")
        latent_format = model.get_model_object("latent_format")
    except AttributeError:
        diffusion_model = latent_format = None
    channels = getattr(latent_format, "latent_channels", None)
    if not callable(getattr(diffusion_model, "rope_encode", None)) or channels != WAN22_LATENT_CHANNELS \
            or tuple(getattr(diffusion_model, "patch_size", ()))[:1] != (1,):
        found = type(diffusion_model).__name__ if diffusion_model is not None else type(model).__name__
        raise InputError(f"model: expected the Wan2.2-TI2V-5B MODEL (a Wan model with {WAN22_LATENT_CHANNELS}-channel "
                         f"latents, e.g. from Load Diffusion Model), got {found} with {channels} latent channels.")
    return diffusion_model, latent_format


def _encode(vae, images: torch.Tensor, expected_shape: tuple, name: str) -> torch.Tensor:
    host.interrupt_check()()  # ComfyUI's VAE encodes in one call: /interrupt is honoured before and after it
    latents = vae.encode(images)
    host.interrupt_check()()
    if tuple(latents.shape) != expected_shape:
        raise InputError(f"vae: encoded {name} to latents of shape {tuple(latents.shape)}; expected {expected_shape} "
                         "(the Wan2.2 VAE, wan2.2_vae.safetensors: 48 channels, 16x spatial, 4x temporal).")
    return latents.float()


@dataclass
class EncodedClip:
    """What both in-context nodes encode: raw latents of the source [1, 48, F, h, w] and the reference
    [1, 48, 1, h, w] or None, the empty target (what normalises to zero, the channel means, as
    Wan22ImageToVideoLatent's), and the model's latent format that normalises them."""

    task: Task
    source: torch.Tensor
    reference: torch.Tensor | None
    empty_target: torch.Tensor
    latent_format: object


def encode_clip(model, vae, source, task, positions, reference=None, node: str = "WorldWander In-Context") -> EncodedClip:
    """Check every input of an in-context node (task, positions, reference, frame count, MODEL, VAE),
    then VAE-encode the clean parts; ``node`` is the node named in the errors."""
    from wan_egoexo.pipeline.translation import prepare_reference  # noqa: PLC0415

    task = get_task(task)
    check_positions(positions)
    if task.uses_reference and reference is None:
        raise InputError(missing_reference_message(task).replace("WorldWander In-Context's", f"{node}'s"))
    check_clip_frames(len(source), "source")  # before anything is converted or encoded
    video = image_batch_to_video(source, "source")
    frames, height, width = video.shape[2:]
    image = None if reference is None else first_image(reference, "reference")
    reference_video = prepare_reference(task, image, width, height)
    _, latent_format = _wan22_model(model)
    if getattr(vae, "latent_channels", None) != WAN22_LATENT_CHANNELS:
        raise InputError(f"vae: has {getattr(vae, 'latent_channels', None)} latent channels; expected the Wan2.2 "
                         f"VAE (wan2.2_vae.safetensors, {WAN22_LATENT_CHANNELS} channels).")

    shape = (1, WAN22_LATENT_CHANNELS, *latent_shape(frames, height, width))
    reference_latents = None if reference_video is None else _encode(
        vae, video_to_image_batch(reference_video), shape[:2] + (1,) + shape[3:], "the reference")
    source_latents = _encode(vae, source.detach().float().clamp(0.0, 1.0), shape, "the source")
    empty_target = latent_format.process_out(torch.zeros(shape, dtype=source_latents.dtype,
                                                         device=source_latents.device))
    return EncodedClip(task, source_latents, reference_latents, empty_target, latent_format)


def build_in_context_latent(model, vae, source, task, positions, reference=None):
    """(patched model clone, LATENT) for WorldWander In-Context (native); checks every input first."""
    clip = encode_clip(model, vae, source, task, positions, reference)
    task, source_latents = clip.task, clip.source
    latent_frames, latent_height, latent_width = source_latents.shape[2:]
    layout = InContextLayout(latent_frames, task.uses_reference, positions)
    parts = [] if clip.reference is None else [clip.reference]
    parts += [source_latents, clip.empty_target]
    samples = torch.cat([part.to(source_latents.device) for part in parts], dim=2)
    mask = layout.denoise_mask().view(1, 1, -1, 1, 1).repeat(1, 1, 1, latent_height, latent_width)

    patched = model.clone()
    if layout.needs_reindexing():
        rope = InContextRope(patched.get_model_object("diffusion_model.rope_encode"), task.uses_reference, positions)
        patched.add_object_patch("diffusion_model.rope_encode", rope)
    from .native_windows import refuse_context_windows  # noqa: PLC0415  (it imports this module)

    refuse_context_windows(patched)
    return patched, {"samples": samples, "noise_mask": mask.to(samples.device)}


def in_context_inputs() -> list:
    """The inputs of both native in-context nodes: ComfyUI's MODEL and VAE, then WorldWander In-Context's
    source, task, positions and reference (same names, rules and order)."""
    return [
        io.Model.Input("model", tooltip="Wan2.2-TI2V-5B from Load Diffusion Model (fp16, fp8 or GGUF), with "
                                        "the task's LoRA from WorldWander LoRA (native)."),
        io.Vae.Input("vae", tooltip="The Wan2.2 VAE (wan2.2_vae.safetensors) from Load VAE."),
        source_input(), task_input(), positions_input(), reference_input(),
    ]


class WorldWanderInContextNative(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderInContextNative", display_name="WorldWander In-Context (native)", category=CATEGORY,
            description="The WorldWander sequence on ComfyUI's own model: encodes the source clip (and for ego2exo "
                        "the reference image) with the VAE into one LATENT with an empty target, and patches the "
                        "model's positions. Sample it with KSampler or SamplerCustomAdvanced, then WorldWander Keep "
                        "Target.",
            inputs=in_context_inputs(),
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with the task's collaborative positions (a "
                                                              "patched clone; the input model is unchanged)."),
                io.Latent.Output(display_name="latent",
                                 tooltip="[reference?, source, empty target] along the frame axis, with a noise_mask "
                                         "that keeps the clean frames clean: connect it to the sampler's "
                                         "latent_image."),
            ])

    @classmethod
    def validate_inputs(cls, task, reference=NOT_CONNECTED):
        return WorldWanderInContext.validate_inputs(task, reference)

    @classmethod
    def execute(cls, model, vae, source, task, positions, reference=None) -> io.NodeOutput:
        return io.NodeOutput(*build_in_context_latent(model, vae, source, task, positions, reference))


class WorldWanderKeepTarget(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderKeepTarget", display_name="WorldWander Keep Target", category=CATEGORY,
            description="Keeps only the target frames of a sampled WorldWander LATENT (the translated clip), so the "
                        "stock VAE Decode decodes just them.",
            inputs=[io.Latent.Input("samples", tooltip="The sampler's output for the LATENT of WorldWander "
                                                       "In-Context (native).")],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="The target frames, without the noise_mask, for VAE Decode.")])

    @classmethod
    def execute(cls, samples) -> io.NodeOutput:
        latents = latent_samples(samples, "samples")
        target = target_frames_from_mask(samples.get("noise_mask"), latents.shape[2], "samples")
        kept = {key: value for key, value in samples.items() if key not in ("samples", "noise_mask")}
        kept["samples"] = latents[:, :, target].contiguous()
        return io.NodeOutput(kept)


NODES = [WorldWanderInContextNative, WorldWanderKeepTarget]
