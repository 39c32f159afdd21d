"""The WorldWander ComfyUI nodes: NODE_CLASS_MAPPINGS (keys are the class names) and display names.

One module per concern: loaders, text, video (load, decode, save), context, sampling; the host
(ComfyUI) is reached only through host.py, and the WW_* socket values are defined in handles.py.
The native_* modules work on ComfyUI's own MODEL, VAE, LATENT, SAMPLER, SIGMAS and NOISE (they reach
ComfyUI only inside their functions): in-context latent and Keep Target, the in-context
windows for long clips through ComfyUI's context windows, LoRA, the reference solver,
and Restore Clip Size after any decode.
"""

from .context import WorldWanderInContext
from .loaders import WorldWanderLoraLoader, WorldWanderModelLoader, WorldWanderTextEncoderLoader, WorldWanderVAELoader
from .native_context import WorldWanderInContextNative, WorldWanderKeepTarget
from .native_lora import WorldWanderLoraNative
from .native_sampling import WorldWanderNoise, WorldWanderSigmas, WorldWanderSolver
from .native_video import WorldWanderRestoreClip
from .native_windows import WorldWanderInContextWindowsNative
from .sampling import WorldWanderSampler
from .text import WorldWanderConditioningBridge, WorldWanderTextEncode
from .video import WorldWanderDecode, WorldWanderLoadVideo, WorldWanderSaveVideo

_DISPLAY_NAMES = {
    WorldWanderModelLoader: "WorldWander Model Loader",
    WorldWanderLoraLoader: "WorldWander LoRA Loader",
    WorldWanderVAELoader: "WorldWander VAE Loader",
    WorldWanderTextEncoderLoader: "WorldWander Text Encoder Loader",
    WorldWanderTextEncode: "WorldWander Text Encode",
    WorldWanderConditioningBridge: "WorldWander Conditioning Bridge",
    WorldWanderLoadVideo: "WorldWander Load Video",
    WorldWanderInContext: "WorldWander In-Context",
    WorldWanderSampler: "WorldWander Sampler",
    WorldWanderDecode: "WorldWander Decode",
    WorldWanderSaveVideo: "WorldWander Save Video",
    WorldWanderInContextNative: "WorldWander In-Context (native)",
    WorldWanderInContextWindowsNative: "WorldWander In-Context Windows (native)",
    WorldWanderLoraNative: "WorldWander LoRA (native)",
    WorldWanderKeepTarget: "WorldWander Keep Target",
    WorldWanderRestoreClip: "WorldWander Restore Clip Size",
    WorldWanderSolver: "WorldWander Solver",
    WorldWanderSigmas: "WorldWander Sigmas",
    WorldWanderNoise: "WorldWander Noise",
}

NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in _DISPLAY_NAMES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: name for cls, name in _DISPLAY_NAMES.items()}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
