"""Video nodes: loading a clip fitted to the model grid (with its sound), decoding the sampled latents
back to the input's size, and saving an h264 mp4 (with optional sound) that both the 2024 and the
current ComfyUI frontend show.
"""

from __future__ import annotations

import os
import secrets

from wan_egoexo.comfy_interop import (DEFAULT_FPS, check_image_batch, latent_samples, restore_frames,
                                      video_to_image_batch, write_preview_gif)
from wan_egoexo.errors import InputError
from wan_egoexo.option_ranges import MAX_CLIP_FRAMES
from wan_egoexo.video.fit import MODES, FitOptions

from comfy_api.latest import io, ui

from . import host
from .schema import WWFit, WWVae, check_choices, schema_inputs
from .input_files import check_output_path, input_file_path, input_file_problem, input_videos

CATEGORY = "WorldWander/video"
MAX_SIDE = 2048  # 2048x2048 is 4.5x the trained pixel count: the largest a run on one big GPU affords
MAX_FRAMES = MAX_CLIP_FRAMES  # 4k+1; about two minutes at 8 fps (sliding windows); 0 = the whole clip, checked for memory
MAX_FPS = 60.0


def range_problem(spec: dict, name: str, value) -> str | None:
    """ComfyUI's own min/max rule (``spec``: the input's options) for input ``name``, for inputs
    validate_inputs takes over (ComfyUI skips its range check for those)."""
    low, high = spec.get("min"), spec.get("max")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return f"{name}: {value!r} is not a number; expected {low}..{high}."
    if (low is not None and value < low) or (high is not None and value > high):
        return f"{name}: {value!r} is out of range; expected {low}..{high}."
    return None


def fit_options(width, height, frames, fps, frame_stride, start_frame, fit) -> FitOptions:
    """The node's widgets as FitOptions: 0 means automatic size; fps 0 means "take every frame_stride-th frame"."""
    if fps and frame_stride != 1:
        raise InputError(f"frame_stride: {frame_stride} is only used when fps is 0 (fps is {fps:g}); "
                         "set fps to 0 to take every Nth frame, or frame_stride to 1 to resample to fps.")
    return FitOptions(width=width or None, height=height or None, max_frames=frames or None, fps=fps or None,
                      frame_stride=None if fps else frame_stride, start_frame=start_frame, mode=fit)


class WorldWanderLoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderLoadVideo", display_name="WorldWander Load Video", category=CATEGORY,
            description="Loads a video from ComfyUI's input folder and fits it to the model grid: frames picked by "
                        "their timestamps at fps (or every Nth), 4k+1 of them, sides multiples of 32 by crop, pad or "
                        "stretch; only the frames used are decoded. Also returns the clip's sound for that span.",
            inputs=[
                io.Combo.Input("video", options=input_videos(), upload=io.UploadType.video,
                               tooltip="A video in ComfyUI's input folder (mp4, mov, webm, mkv, avi, gif); upload "
                                       "one here."),
                io.Int.Input("width", default=0, min=0, max=MAX_SIDE, step=32,
                             tooltip="Width to fit to, a multiple of 32. 0 = automatic: the grid size nearest the "
                                     "clip's aspect ratio at about 1280x704 pixels (1248x704 for 16:9), or from "
                                     "height and the aspect ratio."),
                io.Int.Input("height", default=0, min=0, max=MAX_SIDE, step=32,
                             tooltip="Height to fit to, a multiple of 32. 0 = automatic (see width)."),
                io.Int.Input("frames", default=49, min=0, max=MAX_FRAMES, step=1,
                             tooltip="Number of frames, 4k+1 (49 as trained), or 0 for the whole clip (set the "
                                     "sampler's window for clips longer than 49). A shorter clip repeats its last "
                                     "frame, and the repeats are dropped again on decoding."),
                io.Float.Input("fps", default=8.0, min=0.0, max=MAX_FPS, step=0.5,
                               tooltip="Resample to this frame rate by the frames' timestamps (nearest source frame "
                                       "in time; 8 as trained), so variable-rate phone clips keep their timing. "
                                       "0 = no resampling: take every frame_stride-th frame."),
                io.Int.Input("frame_stride", default=1, min=1, max=1000,
                             tooltip="With fps 0: take every Nth source frame (the authors trained with 2)."),
                io.Int.Input("start_frame", default=0, min=0, max=10_000_000,
                             tooltip="First source frame to use (0 = the beginning)."),
                io.Combo.Input("fit", options=list(MODES), default="crop",
                               tooltip="crop: centre crop to the aspect ratio (the output is the input's size when "
                                       "the crop cut at most 2% of a side, as the automatic size does, else the kept "
                                       "region); pad: letterbox with black; stretch: resize to the size ignoring the "
                                       "aspect ratio."),
            ],
            # No output ids: 0.3.64 refuses an output id equal to an input id (fps); the names are display names.
            outputs=[
                io.Image.Output(display_name="frames",
                                tooltip="The fitted frames (0..1), the source for WorldWander In-Context."),
                WWFit.Output(display_name="fit", tooltip="How the clip was fitted; WorldWander Decode uses it to "
                                                         "restore the input's size."),
                io.Float.Output(display_name="fps", tooltip="The frame rate of the fitted frames (for saving)."),
                io.Audio.Output(display_name="audio",
                                tooltip="The clip's sound over the span the frames cover (connect it to WorldWander "
                                        "Save Video); None when the clip has no audio track."),
            ])

    @classmethod
    def validate_inputs(cls, video, width=None, height=None, frames=None, fps=None, frame_stride=None):
        """Only the inputs with rules beyond a range are taken (ComfyUI checks the others' ranges itself, and
        0.33.0 their choices; 0.3.64 does not check a V3 menu, so execute checks fit); their ranges are checked
        here, as ComfyUI skips them for taken inputs."""
        problem = input_file_problem(video)
        if problem:
            return problem
        values = {"width": width, "height": height, "frames": frames, "fps": fps, "frame_stride": frame_stride}
        inputs = schema_inputs(cls)  # once: it lists the input folder
        for name, value in values.items():
            if value is not None and (problem := range_problem(inputs[name].as_dict(), name, value)):
                return problem
        if all(value is not None for value in values.values()):  # inputs fed by links are checked when run
            try:
                fit_options(width, height, frames, fps, frame_stride, 0, "crop")
            except InputError as exc:
                return str(exc)
        return True

    @classmethod
    def fingerprint_inputs(cls, video, **_):
        if input_file_problem(video):
            return ""
        return os.path.getmtime(input_file_path(video))

    @classmethod
    def execute(cls, video, width, height, frames, fps, frame_stride, start_frame, fit) -> io.NodeOutput:
        from wan_egoexo.video.audio import to_comfy_audio  # noqa: PLC0415
        from wan_egoexo.video.clip_reader import read_fitted_clip  # noqa: PLC0415

        check_choices(cls, fit=fit)
        options = fit_options(width, height, frames, fps, frame_stride, start_frame, fit)
        clip = read_fitted_clip(input_file_path(video), options, frame_limit=True)  # refused before decoding
        audio = to_comfy_audio(clip.audio_samples())
        return io.NodeOutput(video_to_image_batch(clip.video), clip.info, float(clip.info.output_fps), audio)


class WorldWanderDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderDecode", display_name="WorldWander Decode", category=CATEGORY,
            description="Decodes the sampled latents with the Wan2.2 VAE and, given the fit, restores the input's "
                        "size.",
            inputs=[
                WWVae.Input("vae", tooltip="From WorldWander VAE Loader."),
                io.Latent.Input("samples", tooltip="From WorldWander Sampler."),
                WWFit.Input("fit", optional=True,
                            tooltip="From WorldWander Load Video: drop the repeated frames and map back to the "
                                    "input's size (crop: that size when the crop cut at most 2%, else the kept "
                                    "region). Not connected: the fitted size."),
            ],
            outputs=[
                io.Image.Output(display_name="frames", tooltip="The translated frames (0..1)."),
                io.Float.Output(display_name="fps", tooltip=f"Their frame rate: the fit's, or {DEFAULT_FPS:g} without "
                                                            "a fit."),
            ])

    @classmethod
    def execute(cls, vae, samples, fit=None) -> io.NodeOutput:
        from wan_egoexo.in_context.latents import decode_latents, normalize_latents  # noqa: PLC0415

        raw = latent_samples(samples, "samples").float()
        host.load_to_device(vae)  # ComfyUI brings it back if "Unload models" parked it
        video = decode_latents(vae, normalize_latents(raw, vae))
        return io.NodeOutput(restore_frames(video, fit), float(fit.output_fps) if fit is not None else DEFAULT_FPS)


class WorldWanderSaveVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderSaveVideo", display_name="WorldWander Save Video", category=CATEGORY,
            description="Saves the frames as an h264 mp4 in ComfyUI's output folder and shows it.",
            inputs=[
                io.Image.Input("images", tooltip="The frames to save, e.g. from WorldWander Decode."),
                io.Float.Input("fps", default=8.0, min=0.01, max=240.0, step=0.5,
                               tooltip="Frame rate of the file; connect WorldWander Decode's fps to keep the source "
                                       "timing."),
                io.String.Input("filename_prefix", default="WorldWander",
                                tooltip="File name prefix in the output folder; may hold a subfolder (e.g. "
                                        "video/WorldWander)."),
                io.Audio.Input("audio", optional=True,
                               tooltip="Sound to put in the file (e.g. WorldWander Load Video's audio, or any ComfyUI "
                                       "audio node), trimmed to the video's length."),
            ],
            outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, images, fps, filename_prefix, audio=None) -> io.NodeOutput:
        from wan_egoexo.video.audio import from_comfy_audio  # noqa: PLC0415
        from wan_egoexo.video.read_write import write_video  # noqa: PLC0415

        check_image_batch(images, "images")
        sound = from_comfy_audio(audio, "audio")
        height, width = int(images.shape[1]), int(images.shape[2])
        path, name, subfolder = host.output_file(filename_prefix, width, height, ".mp4")
        check_output_path(path)
        write_video(path, images, float(fps), audio=sound)
        # The 2024 frontend shows output files as <img>, the current one plays "animated" video files:
        # the GIF is for the former (the latter's <video> skips it), the mp4 for the latter (<img> skips it).
        preview = f"{os.path.splitext(name)[0]}preview_{secrets.token_hex(3)}.gif"
        write_preview_gif(os.path.join(host.temp_directory(), preview), images, float(fps))
        results = [{"filename": name, "subfolder": subfolder, "type": "output"},
                   {"filename": preview, "subfolder": "", "type": "temp"}]
        return io.NodeOutput(ui=ui.PreviewVideo(results))  # {"images": results, "animated": (True,)}


NODES = [WorldWanderLoadVideo, WorldWanderDecode, WorldWanderSaveVideo]
