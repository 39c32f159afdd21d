"""The in-context node: VAE-encodes the clean parts of the WorldWander sequence (the source clip,
and for ego -> exo the reference image) once, for the sampler to condition on.
"""

from __future__ import annotations

from wan_egoexo.comfy_interop import first_image, image_batch_to_video
from wan_egoexo.errors import InputError
from wan_egoexo.option_ranges import check_clip_frames
from wan_egoexo.in_context.positions import POSITION_MODES
from wan_egoexo.in_context.tasks import TASKS, get_task

from comfy_api.latest import io

from . import host
from .handles import ContextHandle
from .schema import WWContext, WWFit, WWVae

# Default of validate_inputs' reference: ComfyUI passes an optional input only when it is linked
# (as None at validation time, its value being unknown yet), so this value means "not connected".
NOT_CONNECTED = "<not connected>"


def missing_reference_message(task) -> str:
    return (f"reference: the {task.name} task needs a reference image of the subject (a full-body view, e.g. from "
            "behind); connect a Load Image node to WorldWander In-Context's reference input.")


def task_input() -> io.Combo.Input:
    return io.Combo.Input("task", options=list(TASKS), default="exo2ego",
                          tooltip="exo2ego: the source is third-person, the output first-person (no reference). "
                                  "ego2exo: the source is first-person, the output third-person (needs a reference).")


def source_input() -> io.Image.Input:
    return io.Image.Input("source", tooltip="The source clip from WorldWander Load Video (4k+1 frames, sides "
                                            "multiples of 32).")


def positions_input() -> io.Combo.Input:
    return io.Combo.Input("positions", options=list(POSITION_MODES), default="collaborative",
                          tooltip="collaborative: the output frames share the source frames' time positions, as the "
                                  "released LoRAs were trained. uniform: consecutive positions (the paper's ablation).")


def reference_input() -> io.Image.Input:
    return io.Image.Input("reference", optional=True,
                          tooltip="ego2exo only: an image of the subject (a full-body view, e.g. from behind), "
                                  "letterboxed to the clip size. Only the first image is used.")


class WorldWanderInContext(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderInContext", display_name="WorldWander In-Context", category="WorldWander/sampling",
            description="Encodes the source clip (and for ego2exo the reference image) with the VAE: the clean part "
                        "of the in-context sequence the sampler completes.",
            inputs=[
                WWVae.Input("vae", tooltip="From WorldWander VAE Loader."),
                task_input(), source_input(), positions_input(), reference_input(),
                WWFit.Input("fit", optional=True, tooltip="From WorldWander Load Video; checks that source is that "
                                                          "clip."),
            ],
            outputs=[WWContext.Output(display_name="context", tooltip="The task and its encoded source (and "
                                                                      "reference), for WorldWander Sampler.")])

    @classmethod
    def validate_inputs(cls, task, reference=NOT_CONNECTED):
        if task is None:  # fed by a link: checked when the node runs
            return True
        try:
            task = get_task(task)
        except InputError as exc:
            return str(exc)
        if task.uses_reference and reference is NOT_CONNECTED:
            return missing_reference_message(task)
        return True

    @classmethod
    def execute(cls, vae, task, source, positions, reference=None, fit=None) -> io.NodeOutput:
        from wan_egoexo.in_context.latents import encode_video  # noqa: PLC0415
        from wan_egoexo.pipeline.translation import prepare_reference  # noqa: PLC0415

        task = get_task(task)
        if positions not in POSITION_MODES:
            raise InputError(f"positions: {positions!r} is not supported; expected one of {POSITION_MODES}.")
        if task.uses_reference and reference is None:
            raise InputError(missing_reference_message(task))
        check_clip_frames(len(source), "source")  # before anything is converted or encoded
        video = image_batch_to_video(source, "source")
        frames, height, width = video.shape[2:]
        if fit is not None and (fit.width, fit.height, fit.num_frames) != (width, height, frames):
            raise InputError(f"fit: describes {fit.num_frames} frames of {fit.width}x{fit.height} but source has "
                             f"{frames} frames of {width}x{height}; connect the fit and frames of the same "
                             "WorldWander Load Video.")
        image = None if reference is None else first_image(reference, "reference")
        reference_video = prepare_reference(task, image, width, height)
        host.load_to_device(vae)  # ComfyUI brings it back if "Unload models" parked it
        source_latents = encode_video(vae, video, interrupt=host.interrupt_check()).cpu()
        reference_latents = None if reference_video is None else encode_video(vae, reference_video).cpu()
        return io.NodeOutput(ContextHandle(task, positions, source_latents, reference_latents, vae, fit))


NODES = [WorldWanderInContext]
