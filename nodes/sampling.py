"""The sampler node: plans the memory for the clip it gets (guidance batched or sequential, blocks
resident or streamed), makes the model's LoRAs active at their strengths (merged or unfused), samples
the target latents in context, and returns them raw (un-normalised) so ComfyUI's own VAE Decode can
decode them too.
"""

from __future__ import annotations

import torch

from wan_egoexo.comfy_interop import latent_samples
from wan_egoexo.errors import InputError
from wan_egoexo.memory.choices import CFG_BATCH_MODES, LORA_MODES

from comfy_api.latest import io

from . import host
from .schema import WWContext, WWModel, WWText


class WorldWanderSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        from wan_egoexo.sampling.sampler import SOLVERS  # noqa: PLC0415  (imports neither diffusers nor peft)

        return io.Schema(
            node_id="WorldWanderSampler", display_name="WorldWander Sampler", category="WorldWander/sampling",
            description="Generates the other view of the source clip: flow-matching sampling of the target in "
                        "context (defaults: the authors' UniPC, 50 steps, cfg 5, shift 5, seed 1234).",
            inputs=[
                WWModel.Input("model", tooltip="The transformer with the task's LoRA (WorldWander LoRA Loader)."),
                WWContext.Input("context", tooltip="From WorldWander In-Context."),
                WWText.Input("text", tooltip="From WorldWander Text Encode or WorldWander Conditioning Bridge."),
                io.Int.Input("seed", default=1234, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; the noise is drawn on the CPU, so a seed gives the same result on "
                                     "every device. 1234 is the authors' setting."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Sampling steps (50 in the reference setting)."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance on the text; 1 = off (one forward per step)."),
                io.Float.Input("shift", default=5.0, min=0.01, max=100.0, step=0.1,
                               tooltip="Flow shift of the noise schedule (5 for Wan2.2-TI2V-5B)."),
                io.Combo.Input("solver", options=list(SOLVERS), default="unipc",
                               tooltip="unipc: the reference multistep solver; euler: first order."),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                               tooltip="1 = generate from noise. Below 1, start part-way from init_latent."),
                io.Int.Input("window", default=0, min=0, max=1000,
                             tooltip="Long clips: sliding-window length in latent frames (13 = the trained 49 "
                                     "frames). 0 = off: one pass over the whole clip."),
                io.Int.Input("overlap", default=4, min=0, max=999,
                             tooltip="Long clips: latent frames shared by neighbouring windows, blended linearly."),
                io.Latent.Input("init_latent", optional=True,
                                tooltip="Only with denoise < 1: a latent of the target's size to start from (e.g. an "
                                        "earlier result)."),
                io.Combo.Input("cfg_batch", options=list(CFG_BATCH_MODES), default="auto", optional=True,
                               tooltip="How the guided and unguided passes run. batched: one forward of both "
                                       "(fastest on small clips). sequential: one after the other, the same result "
                                       "with half the activation memory. auto: batched when the GPU has room for "
                                       "it."),
                io.Combo.Input("lora_mode", options=list(LORA_MODES), default="merged", optional=True,
                               tooltip="merged: the LoRAs are added into the weights (fastest sampling; changing the "
                                       "LoRA chain re-reads the touched weights from the model file, bit-exact). "
                                       "unfused: separate adapters (a few percent slower; chain changes cost "
                                       "nothing)."),
            ],
            outputs=[io.Latent.Output(display_name="samples", tooltip="The translated clip as raw Wan2.2 latents, "
                                                                      "for WorldWander Decode (or VAE Decode).")])

    @classmethod
    def execute(cls, model, context, text, seed, steps, cfg, shift, solver, denoise, window=0, overlap=4,
                init_latent=None, cfg_batch="auto", lora_mode="merged") -> io.NodeOutput:
        from wan_egoexo.in_context.latents import denormalize_latents, normalize_latents  # noqa: PLC0415
        from wan_egoexo.memory.runtime import prepare_sampler_run  # noqa: PLC0415
        from wan_egoexo.sampling.sampler import SamplingSettings, sample_target  # noqa: PLC0415
        from wan_egoexo.in_context.windows import WindowOptions  # noqa: PLC0415

        text.check_task(context.task)
        text.check_width(int(model.transformer.config.text_dim))
        settings = SamplingSettings(steps=int(steps), cfg=float(cfg), shift=float(shift), solver=solver,
                                    seed=int(seed), denoise=float(denoise)).validate()
        windows = WindowOptions(length=int(window), overlap=int(overlap)).validate() if window else None
        init = None
        if settings.denoise < 1.0:
            if init_latent is None:
                raise InputError(f"init_latent: denoise {settings.denoise:g} < 1 starts from a latent; connect "
                                 "init_latent or set denoise to 1.0.")
            init = normalize_latents(latent_samples(init_latent, "init_latent").float(), context.vae)
        frames = context.source.shape[2] if windows is None else min(context.source.shape[2], windows.length)
        grid, has_reference = (frames, *context.source.shape[3:]), context.reference is not None
        plan = prepare_sampler_run(model.transformer, list(model.loras), model.memory, host.torch_device(), grid,
                                   has_reference, guidance=settings.cfg != 1.0 and text.negative is not None,
                                   cfg_batch=cfg_batch, lora_mode=lora_mode, park=host.offload_device("diffusion"),
                                   release=host.release)
        host.ready_transformer_for_sampling(  # ComfyUI loads a resident one, freeing other models only as needed
            model.transformer, plan.block_offload, *grid, has_reference=has_reference, cfg_batch=plan.cfg_batch)
        with torch.no_grad():
            latents = sample_target(model.transformer, context.source, text.positive, text.negative,
                                    reference=context.reference, positions=context.positions, settings=settings,
                                    init_latents=init, callback=host.StepReporter(settings.steps), windows=windows,
                                    cfg_batch=plan.cfg_batch)
        return io.NodeOutput({"samples": denormalize_latents(latents.float().cpu(), context.vae)})


NODES = [WorldWanderSampler]
