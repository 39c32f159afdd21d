"""The reference solver inside ComfyUI's sampling: a SAMPLER, the matching SIGMAS and a NOISE for
SamplerCustom / SamplerCustomAdvanced that together reproduce the WorldWander Sampler (and the
CLI) for the same settings and seed.

ComfyUI's own uni_pc differs from diffusers' UniPC in flow mode by a few percent on the same sigmas,
so the SAMPLER steps with the core's ``solvers.solve`` (diffusers' scheduler over ComfyUI's sigma
list), evaluating ComfyUI's model (guider, CFG, patches, inpainting mask and all) where the
reference evaluates it. Stock samplers and schedulers stay usable with the same graph.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

CATEGORY = "WorldWander/native"
DEFAULT_SEED = 1234  # the authors' setting


def _solver_choices() -> list[str]:
    from wan_egoexo.sampling.solvers import SOLVERS  # noqa: PLC0415  (cheap: diffusers is imported only when used)

    return list(SOLVERS)


def _sigma_for_timestep(timestep: float) -> torch.Tensor:
    """A float32 sigma whose float32 product with 1000 is ``timestep`` (exactly where one exists):
    ComfyUI's flow models compute their timestep as sigma * 1000, and the reference feeds the model
    this timestep (UniPC's are integers)."""
    guess = torch.tensor(timestep / 1000.0, dtype=torch.float32)
    candidates = [guess]
    for direction in (float("inf"), float("-inf")):
        step = guess
        for _ in range(3):
            step = torch.nextafter(step, torch.tensor(direction))
            candidates.append(step)
    return min(candidates, key=lambda sigma: abs(float(sigma * 1000) - timestep))


def evaluated_sigmas(solver: str, sigmas: torch.Tensor) -> torch.Tensor:
    """The sigmas the model is really called with for each step (UniPC: those of floor(1000 sigma)), then
    the last one: what ComfyUI's context windows look the current step up in (``sample_sigmas``, which
    they match to the called sigma within 1e-4 and, on 0.3.64, raise when nothing matches)."""
    from wan_egoexo.sampling.solvers import FlowSolver  # noqa: PLC0415

    steps = FlowSolver(solver, sigmas.detach().cpu())
    called = [_sigma_for_timestep(steps.model_timestep(i)) for i in range(len(steps))]
    return torch.stack(called + [sigmas[-1].detach().cpu().float()]).to(sigmas.device)


def reference_sampler_function(solver: str):
    """A k-diffusion style sampler function (ComfyUI's KSAMPLER calls it) stepping with ``solver``."""

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        from wan_egoexo.sampling.solvers import solve  # noqa: PLC0415

        extra_args = {} if extra_args is None else extra_args
        ones = x.new_ones([x.shape[0]])
        denoised = {}

        def flow_at(latents, timestep):
            sigma = _sigma_for_timestep(timestep).to(latents.device)
            denoised["last"] = model(latents, sigma * ones, **extra_args)
            return (latents - denoised["last"]) / sigma

        def on_step(i, latents, _flow):
            if callback is not None:
                callback({"x": latents, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i],
                          "denoised": denoised["last"]})

        options = extra_args.get("model_options", {}).get("transformer_options")
        if isinstance(options, dict):  # this run's own copy (CFGGuider.inner_sample makes it)
            options["sample_sigmas"] = evaluated_sigmas(solver, sigmas)
        x = solve(solver, flow_at, x, sigmas.detach().cpu(), on_step)
        mask = extra_args.get("denoise_mask")
        if mask is not None and float(sigmas[-1]) == 0.0:
            # Clean frames are conditioning: the model wrapper puts them back before every call and the last
            # denoised holds them exactly, while the solver's own value there drifts (UniPC's x0 uses the
            # sigma, the model the integer timestep). The result keeps them as they came in.
            x = x * mask + denoised["last"] * (1.0 - mask)
        return x

    return sample


class WorldWanderSolver(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderSolver", display_name="WorldWander Solver", category=CATEGORY,
            description="The WorldWander reference solver as a SAMPLER for SamplerCustom / SamplerCustomAdvanced: "
                        "diffusers' UniPC in flow mode (the authors' setting) or flow-matching Euler. Use it with "
                        "WorldWander Sigmas to get the WorldWander Sampler's result.",
            inputs=[io.Combo.Input("solver", options=_solver_choices(), default="unipc",
                                   tooltip="unipc: the reference multistep solver (ComfyUI's own uni_pc differs from "
                                           "it by a few percent); euler: first order, the same as ComfyUI's euler.")],
            outputs=[io.Sampler.Output(display_name="sampler", tooltip="The solver, for the sampler input of "
                                                                       "SamplerCustom / SamplerCustomAdvanced.")])

    @classmethod
    def execute(cls, solver) -> io.NodeOutput:
        import comfy.samplers  # noqa: PLC0415

        from wan_egoexo.sampling.solvers import check_solver  # noqa: PLC0415

        return io.NodeOutput(comfy.samplers.KSAMPLER(reference_sampler_function(check_solver(solver))))


class WorldWanderSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderSigmas", display_name="WorldWander Sigmas", category=CATEGORY,
            description="The noise schedule the WorldWander Sampler uses for these steps, shift and solver, as "
                        "SIGMAS for SamplerCustom / SamplerCustomAdvanced.",
            inputs=[
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Sampling steps (50 in the reference setting)."),
                io.Float.Input("shift", default=5.0, min=0.01, max=100.0, step=0.1,
                               tooltip="Flow shift of the noise schedule (5 for Wan2.2-TI2V-5B)."),
                io.Combo.Input("solver", options=_solver_choices(), default="unipc",
                               tooltip="The solver the schedule is for: the same as WorldWander Solver's (UniPC's "
                                       "schedule starts at 1 - 1e-6, Euler's at 1)."),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                               tooltip="1 = from pure noise. Below 1 only the last steps run, starting from the "
                                       "target frames of the latent (they must then hold a clip, not the empty "
                                       "target)."),
            ],
            outputs=[io.Sigmas.Output(display_name="sigmas", tooltip="steps + 1 sigmas from about 1 down to 0.")])

    @classmethod
    def execute(cls, steps, shift, solver, denoise) -> io.NodeOutput:
        from wan_egoexo.sampling.solvers import reference_sigmas  # noqa: PLC0415

        return io.NodeOutput(reference_sigmas(solver, int(steps), float(shift), float(denoise)))


class WorldWanderNoiseSource:
    """A ComfyUI NOISE: the target frames get the WorldWander Sampler's noise for this seed, the clean
    frames none (the sampler replaces them by the clean latents anyway)."""

    def __init__(self, seed: int):
        self.seed = seed

    def generate_noise(self, input_latent):
        from wan_egoexo.comfy_interop import latent_samples  # noqa: PLC0415
        from wan_egoexo.in_context.layout import target_frames_from_mask  # noqa: PLC0415
        from wan_egoexo.sampling.sampler import initial_noise  # noqa: PLC0415

        samples = latent_samples(input_latent, "latent_image")
        mask = input_latent.get("noise_mask")
        target = slice(None) if mask is None else target_frames_from_mask(mask, samples.shape[2], "latent_image")
        noise = torch.zeros(samples.shape, dtype=torch.float32)
        noise[:, :, target] = initial_noise(noise[:, :, target].shape, self.seed)
        return noise.to(samples.dtype)


class WorldWanderNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WorldWanderNoise", display_name="WorldWander Noise", category=CATEGORY,
            description="Noise for SamplerCustomAdvanced that gives the target frames the same noise as the "
                        "WorldWander Sampler and the CLI draw for this seed (the stock Random Noise draws it for the "
                        "whole latent, so its target noise differs).",
            inputs=[io.Int.Input("noise_seed", default=DEFAULT_SEED, min=0, max=0xFFFFFFFFFFFFFFFF,
                                 control_after_generate=True,
                                 tooltip="Noise seed; drawn on the CPU, so a seed gives the same result on every "
                                         "device. 1234 is the authors' setting.")],
            outputs=[io.Noise.Output(display_name="noise",
                                     tooltip="The noise, for the noise input of SamplerCustomAdvanced.")])

    @classmethod
    def execute(cls, noise_seed) -> io.NodeOutput:
        return io.NodeOutput(WorldWanderNoiseSource(int(noise_seed)))


NODES = [WorldWanderSolver, WorldWanderSigmas, WorldWanderNoise]
