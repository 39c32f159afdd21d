"""Undoing WorldWander Load Video's fit on frames decoded by any node (the stock VAE Decode, say):
the clip's own size and frame count back, and the frame rate to save them with."""

from __future__ import annotations

from wan_egoexo.comfy_interop import check_image_batch
from wan_egoexo.errors import InputError

from .handles import FIT


class WorldWanderRestoreClip:
    DESCRIPTION = ("Maps decoded frames back to the input clip: drops the frames Load Video repeated to reach 4k+1 "
                   "and restores its size (crop: the kept region when the crop cut more than 2% of a side). Use it "
                   "after VAE Decode in the native workflow.")
    CATEGORY = "WorldWander/video"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("frames", "fps")
    OUTPUT_TOOLTIPS = ("The frames at the clip's own size and frame count (0..1).",
                       "The frame rate to save them with (the fit's).")
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Decoded frames of the fitted size, e.g. from VAE Decode after "
                                            "WorldWander Keep Target."}),
            "fit": (FIT, {"tooltip": "From the WorldWander Load Video that loaded the source clip."}),
        }}

    def restore(self, images, fit):
        from wan_egoexo.comfy_interop import restored_image_batch  # noqa: PLC0415

        check_image_batch(images, "images")
        count, height, width = (int(d) for d in images.shape[:3])
        if (height, width) != (fit.height, fit.width) or count < fit.real_frames:
            raise InputError(f"images: {count} frames of {width}x{height}, but the fit describes {fit.num_frames} "
                             f"frames of {fit.width}x{fit.height} ({fit.real_frames} of them real); connect the "
                             "decoded target of the clip that this fit's WorldWander Load Video loaded.")
        frames = restored_image_batch(images.detach().cpu(), fit)
        return (frames, float(fit.output_fps))
