"""Weight names of the Wan2.2 VAE: the original single-file layout (``wan2.2_vae.safetensors``, the
names of ComfyUI's ``comfy/ldm/wan/vae2_2.py``) and diffusers' ``AutoencoderKLWan`` layout, the
mapping between them in both directions, and recognising which layout (or which wrong kind of
file) a set of names comes from.

The mapping is a table of name templates rather than chains of ``str.replace``: each rule is read
both ways, so the forward and inverse mappings cannot drift apart. diffusers ships no converter for
this file (``from_single_file`` only knows the Wan2.1 VAE), hence this module.
"""

from __future__ import annotations

import re

from ..errors import ModelFileError

ORIGINAL_LAYOUT = "wan2.2 original"
DIFFUSERS_LAYOUT = "wan2.2 diffusers"

# What each placeholder of a template may stand for. {down} / {up} are the position of the resampling
# layer inside an original block: after the num_res_blocks residual blocks of an encoder level, after
# the num_res_blocks + 1 of a decoder level; diffusers names that layer without an index.
_PLACEHOLDER_PATTERNS = {
    "part": r"encoder|decoder",
    "i": r"\d+",
    "j": r"\d+",
    "down": r"\d+",
    "up": r"\d+",
    "p": r"weight|bias",
}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")

# One residual block: original nn.Sequential positions -> diffusers attribute names.
_RESNET_LEAVES = [
    ("residual.0.gamma", "norm1.gamma"),
    ("residual.2.{p}", "conv1.{p}"),
    ("residual.3.gamma", "norm2.gamma"),
    ("residual.6.{p}", "conv2.{p}"),
    ("shortcut.{p}", "conv_shortcut.{p}"),
]
_RESNET_PLACES = [
    ("{part}.middle.0.", "{part}.mid_block.resnets.0."),
    ("{part}.middle.2.", "{part}.mid_block.resnets.1."),
    ("encoder.downsamples.{i}.downsamples.{j}.", "encoder.down_blocks.{i}.resnets.{j}."),
    ("decoder.upsamples.{i}.upsamples.{j}.", "decoder.up_blocks.{i}.resnets.{j}."),
]
_OTHER_RULES = [
    ("encoder.conv1.{p}", "encoder.conv_in.{p}"),
    ("decoder.conv1.{p}", "decoder.conv_in.{p}"),
    ("conv1.{p}", "quant_conv.{p}"),
    ("conv2.{p}", "post_quant_conv.{p}"),
    ("{part}.head.0.gamma", "{part}.norm_out.gamma"),
    ("{part}.head.2.{p}", "{part}.conv_out.{p}"),
    ("{part}.middle.1.norm.gamma", "{part}.mid_block.attentions.0.norm.gamma"),
    ("{part}.middle.1.to_qkv.{p}", "{part}.mid_block.attentions.0.to_qkv.{p}"),
    ("{part}.middle.1.proj.{p}", "{part}.mid_block.attentions.0.proj.{p}"),
    ("encoder.downsamples.{i}.downsamples.{down}.resample.1.{p}", "encoder.down_blocks.{i}.downsampler.resample.1.{p}"),
    ("encoder.downsamples.{i}.downsamples.{down}.time_conv.{p}", "encoder.down_blocks.{i}.downsampler.time_conv.{p}"),
    ("decoder.upsamples.{i}.upsamples.{up}.resample.1.{p}", "decoder.up_blocks.{i}.upsampler.resample.1.{p}"),
    ("decoder.upsamples.{i}.upsamples.{up}.time_conv.{p}", "decoder.up_blocks.{i}.upsampler.time_conv.{p}"),
]


def _compile(template: str) -> re.Pattern:
    pieces, pos = [], 0
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        pieces.append(re.escape(template[pos:match.start()]))
        pieces.append(f"(?P<{name}>{_PLACEHOLDER_PATTERNS[name]})")
        pos = match.end()
    pieces.append(re.escape(template[pos:]))
    return re.compile("".join(pieces))


_RULES = [(place_o + leaf_o, place_d + leaf_d) for place_o, place_d in _RESNET_PLACES for leaf_o, leaf_d in _RESNET_LEAVES]
_RULES += _OTHER_RULES
_COMPILED = [(_compile(original), original, _compile(diffusers), diffusers) for original, diffusers in _RULES]


def original_to_diffusers_key(key: str) -> str | None:
    """The diffusers name of one original Wan2.2 VAE weight name, or None if it is not one."""
    for original_re, _, _, diffusers in _COMPILED:
        match = original_re.fullmatch(key)
        if match:
            return diffusers.format(**match.groupdict())
    return None


def diffusers_to_original_key(key: str, num_res_blocks: int) -> str | None:
    """The original Wan2.2 VAE name of one diffusers AutoencoderKLWan weight name, or None."""
    for _, original, diffusers_re, _ in _COMPILED:
        match = diffusers_re.fullmatch(key)
        if match:
            return original.format(down=num_res_blocks, up=num_res_blocks + 1, **match.groupdict())
    return None


def original_to_diffusers(keys) -> tuple[dict[str, str], list[str]]:
    """Map original names to diffusers names: ({original: diffusers}, [names that match no rule])."""
    mapping, unknown = {}, []
    for key in keys:
        new = original_to_diffusers_key(key)
        if new is None:
            unknown.append(key)
        else:
            mapping[key] = new
    return mapping, unknown


def diffusers_to_original(keys, num_res_blocks: int) -> tuple[dict[str, str], list[str]]:
    """Map diffusers names to original names: ({diffusers: original}, [names that match no rule])."""
    mapping, unknown = {}, []
    for key in keys:
        new = diffusers_to_original_key(key, num_res_blocks)
        if new is None:
            unknown.append(key)
        else:
            mapping[key] = new
    return mapping, unknown


# ---------------------------------------------------------------------------------------------------
# Recognising what a file holds, from its names (and a few shapes) alone.

_WAN21_HINT = ("the Wan2.2 VAE, wan2.2_vae.safetensors (48 latent channels, 2x2 patchified RGB); "
               "Wan2.2-TI2V-5B cannot use the Wan2.1 VAE")
_EXPECTED = "the Wan2.2 VAE: wan2.2_vae.safetensors (ComfyUI models/vae) or a Diffusers AutoencoderKLWan folder"


def _latent_channels(infos, key: str) -> str:
    info = infos.get(key)
    return str(info.shape[0] // 2) if info is not None and info.shape else "?"


def _has(keys, *fragments: str) -> bool:
    return any(fragment in key for key in keys for fragment in fragments)


def identify_vae_layout(path, infos) -> str:
    """Return ORIGINAL_LAYOUT or DIFFUSERS_LAYOUT for the names of a Wan2.2 VAE; raise ModelFileError
    naming ``path`` and what the file is instead (Wan2.1 VAE, an image VAE, a diffusion model, a text
    encoder, a LoRA) otherwise. ``infos`` maps names to objects with a ``shape``."""
    keys = set(infos)
    if "encoder.conv1.weight" in keys and "decoder.middle.0.residual.0.gamma" in keys:
        if _has(keys, "decoder.upsamples.0.upsamples.0."):
            return ORIGINAL_LAYOUT
        if "decoder.upsamples.0.residual.0.gamma" in keys:
            raise ModelFileError(path, f"is the Wan2.1 VAE ({_latent_channels(infos, 'conv1.weight')} latent channels, "
                                 "no 2x2 patchify, flat 'decoder.upsamples.N' blocks).", _WAN21_HINT)
    encoder_in = infos.get("encoder.conv_in.weight")
    if encoder_in is not None and len(encoder_in.shape) == 5 and "decoder.norm_out.gamma" in keys:
        if _has(keys, "encoder.down_blocks.0.resnets."):
            return DIFFUSERS_LAYOUT
        if "encoder.down_blocks.0.norm1.gamma" in keys:
            raise ModelFileError(path, f"is the Wan2.1 VAE in Diffusers layout ({_latent_channels(infos, 'quant_conv.weight')} "
                                 "latent channels, no 2x2 patchify).", _WAN21_HINT)
    raise ModelFileError(path, f"is {_describe_other_file(keys)}, not the Wan2.2 VAE.", _EXPECTED)


def _describe_other_file(keys) -> str:
    if _has(keys, "lora_A", "lora_B", "lora_down", "lora_up", ".lora."):
        return "a LoRA file"
    if _has(keys, "self_attn.q.", "patch_embedding.", "condition_embedder.", "attn1.to_q.", "double_blocks.",
            "joint_blocks.", "input_blocks.", "transformer_blocks.", "diffusion_model."):
        return "a diffusion model (transformer/UNet) file, which belongs in models/diffusion_models"
    if _has(keys, "SelfAttention.", "spiece_model", "shared.weight", "text_model.", "final_layer_norm", "embed_tokens"):
        return "a text-encoder file, which belongs in models/text_encoders"
    if _has(keys, "encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.") or \
            (_has(keys, "encoder.down_blocks.") and not _has(keys, ".gamma")):
        return ("an image VAE of the Stable Diffusion / SDXL / SD3 / Flux kind (2D layers, names like "
                "'encoder.down.0.block.0.norm1.weight')")
    if _has(keys, "encoder.", "decoder."):
        return "the VAE of another model (its layer names are not those of the Wan VAE)"
    sample = ", ".join(sorted(keys)[:3]) or "no tensors"
    return f"not a VAE file (first tensor names: {sample})"
