"""Long clips on ComfyUI's own MODEL through ComfyUI's own context windows.

WorldWander In-Context Windows (native) gives the sampler a LATENT that holds only the empty target,
so ComfyUI's context windows (Context Windows (Manual), WAN Context Windows (Manual)) slice and blend
nothing but target frames. The clean parts ride on the model clone: a keyed DIFFUSION_MODEL wrapper
holds the normalised source (and reference) latents and, for every call, reads the window ComfyUI is
evaluating from ``transformer_options["context_window"]`` (the whole clip when there is none),
builds that window's in-context sequence with the core (in_context/window_input.py: [reference?,
the window's source frames, the window's target], 0 timesteps on the clean frames), calls the model
and cuts its output back to the target. The collaborative positions are the rope object patch of
In-Context (native), read from the window's own layout, so they are local to each window as in the
reference ``windowed_flow``.

Also here: the guard that makes the concatenated In-Context (native) LATENT refuse context windows
(they would slice its reference, source and target frames together).

The node is a V3 node; besides ``comfy_api``, nothing here imports ComfyUI: MODEL, VAE and LATENT are
used through their own methods, and the wrapper type is ComfyUI's string for it.
"""

from __future__ import annotations

import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.layout import InContextLayout
from wan_egoexo.in_context.window_input import in_context_window

from comfy_api.latest import io

from .context import (NOT_CONNECTED, WorldWanderInContext)
from .native_context import CATEGORY, InContextRope, encode_clip, in_context_inputs

DIFFUSION_MODEL = "diffusion_model"  # comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
WRAPPER_KEY = "worldwander_in_context_windows"
GUARD_KEY = "worldwander_in_context_whole"
WINDOWS_NODE = "WorldWander In-Context Windows (native)"


def _window_of(transformer_options):
    return None if not isinstance(transformer_options, dict) else transformer_options.get("context_window")


class InContextWindows:
    """The DIFFUSION_MODEL wrapper: ``source`` [1, 48, F, h, w] and ``reference`` [1, 48, 1, h, w] or
    None are normalised latents (float32, CPU); each call gets the target frames of one window."""

    def __init__(self, source: torch.Tensor, reference, positions: str):
        self.source, self.reference, self.positions = source, reference, positions

    def __repr__(self) -> str:
        return (f"InContextWindows(frames={self.source.shape[2]}, reference={self.reference is not None}, "
                f"positions={self.positions!r})")

    def __call__(self, executor, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options=None,
                 **kwargs):
        if time_dim_concat is not None:
            raise InputError("model: another node adds frames to the Wan input (time_dim_concat); WorldWander "
                             "In-Context Windows (native) builds the whole frame axis itself.")
        window = _window_of(transformer_options)
        frames = None if window is None else list(window.index_list)
        # ComfyUI 0.33's causal_window_fix puts the frame before the window in front of it; the trained
        # window has no such frame, so it is left out and a zero frame fills its place in the output
        # (the handler drops that slot before blending).
        anchor = window is not None and getattr(window, "causal_anchor_index", None) is not None \
            and window.causal_anchor_index >= 0
        if anchor:
            x = x[:, :, 1:]
            if timestep.ndim == 2 and timestep.shape[1] == x.shape[2] + 1:
                timestep = timestep[:, 1:]
        parts = in_context_window(x, timestep, self.source, self.reference, frames, self.positions)
        out = executor(parts.hidden, parts.timesteps, context, clip_fea, None, transformer_options, **kwargs)
        out = out[:, :, parts.layout.target]
        return torch.cat([torch.zeros_like(out[:, :, :1]), out], dim=2) if anchor else out


class RefuseContextWindows:
    """DIFFUSION_MODEL wrapper on In-Context (native)'s model: its LATENT is [reference?, source,
    target] as one frame axis, which context windows would slice together."""

    def __call__(self, executor, *args, **kwargs):
        # WanModel.forward's call: (x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
        options = kwargs.get("transformer_options", args[5] if len(args) > 5 else None)
        if _window_of(options) is not None:
            raise InputError(f"model: WorldWander In-Context (native) samples the whole clip as one sequence and "
                             "cannot go through context windows (they would slice its reference, source and target "
                             f"frames together); for long clips use {WINDOWS_NODE} instead, with the same context "
                             "windows node between it and the sampler.")
        return executor(*args, **kwargs)


def refuse_context_windows(patched) -> None:
    """Add the guard to In-Context (native)'s model clone (the numbers are unchanged), dropping the
    windowed wrapper a model from In-Context Windows (native) would bring along."""
    patched.remove_wrappers_with_key(DIFFUSION_MODEL, WRAPPER_KEY)
    patched.add_wrapper_with_key(DIFFUSION_MODEL, GUARD_KEY, RefuseContextWindows())


def build_in_context_windows(model, vae, source, task, positions, reference=None):
    """(patched model clone, LATENT of the empty target) for WorldWander In-Context Windows (native)."""
    clip = encode_clip(model, vae, source, task, positions, reference, node=WINDOWS_NODE)
    task = clip.task

    def normalised(latents):
        return None if latents is None else clip.latent_format.process_in(latents).float().cpu()

    patched = model.clone()
    if InContextLayout(1, task.uses_reference, positions).needs_reindexing():
        rope = InContextRope(patched.get_model_object("diffusion_model.rope_encode"), task.uses_reference, positions)
        patched.add_object_patch("diffusion_model.rope_encode", rope)
    wrapper = InContextWindows(normalised(clip.source), normalised(clip.reference), positions)
    for key in (WRAPPER_KEY, GUARD_KEY):  # a model from either in-context node: this clip and layout replace its own
        patched.remove_wrappers_with_key(DIFFUSION_MODEL, key)
    patched.add_wrapper_with_key(DIFFUSION_MODEL, WRAPPER_KEY, wrapper)
    return patched, {"samples": clip.empty_target}


class WorldWanderInContextWindowsNative(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderInContextWindowsNative", display_name=WINDOWS_NODE, category=CATEGORY,
            description="The WorldWander sequence on ComfyUI's own model, for clips of any length: encodes the source "
                        "clip (and for ego2exo the reference image) into the model and gives an empty target LATENT. "
                        "Put a context windows node (e.g. Context Windows (Manual), dim 2) between it and the "
                        "sampler: each window's target frames then see their own source frames, and ComfyUI blends "
                        "the windows. Decode the sampler's output directly (no Keep Target).",
            inputs=in_context_inputs(),
            outputs=[
                io.Model.Output(display_name="model",
                                tooltip="The model holding the source (and reference) latents, with the task's "
                                        "positions per window (a patched clone; the input model is unchanged). "
                                        "Context windows go after it."),
                io.Latent.Output(display_name="latent",
                                 tooltip="The empty target only (latent batch 1): connect it to the sampler's "
                                         "latent_image; the output is the translated clip's latent, for VAE Decode."),
            ])

    @classmethod
    def validate_inputs(cls, task, reference=NOT_CONNECTED):
        return WorldWanderInContext.validate_inputs(task, reference)

    @classmethod
    def execute(cls, model, vae, source, task, positions, reference=None) -> io.NodeOutput:
        return io.NodeOutput(*build_in_context_windows(model, vae, source, task, positions, reference))


NODES = [WorldWanderInContextWindowsNative]
