"""Undoing WorldWander Load Video's fit on frames decoded by any node (the stock VAE Decode, say):
the clip's own size and frame count back, and the frame rate to save them with."""

from __future__ import annotations

from wan_egoexo.comfy_interop import check_image_batch
from wan_egoexo.errors import InputError

from comfy_api.latest import io

from .schema import WWFit


class WorldWanderRestoreClip(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderRestoreClip", display_name="WorldWander Restore Clip Size",
            category="WorldWander/video",
            description="Maps decoded frames back to the input clip: drops the frames Load Video repeated to reach "
                        "4k+1 and restores its size (crop: the kept region when the crop cut more than 2% of a side). "
                        "Use it after VAE Decode in the native workflow.",
            inputs=[
                io.Image.Input("images", tooltip="Decoded frames of the fitted size, e.g. from VAE Decode after "
                                                 "WorldWander Keep Target."),
                WWFit.Input("fit", tooltip="From the WorldWander Load Video that loaded the source clip."),
            ],
            outputs=[
                io.Image.Output(display_name="frames",
                                tooltip="The frames at the clip's own size and frame count (0..1)."),
                io.Float.Output(display_name="fps", tooltip="The frame rate to save them with (the fit's)."),
            ])

    @classmethod
    def execute(cls, images, fit) -> io.NodeOutput:
        from wan_egoexo.comfy_interop import restored_image_batch  # noqa: PLC0415

        check_image_batch(images, "images")
        count, height, width = (int(d) for d in images.shape[:3])
        if (height, width) != (fit.height, fit.width) or count < fit.real_frames:
            raise InputError(f"images: {count} frames of {width}x{height}, but the fit describes {fit.num_frames} "
                             f"frames of {fit.width}x{fit.height} ({fit.real_frames} of them real); connect the "
                             "decoded target of the clip that this fit's WorldWander Load Video loaded.")
        frames = restored_image_batch(images.detach().cpu(), fit)
        return io.NodeOutput(frames, float(fit.output_fps))


NODES = [WorldWanderRestoreClip]
