"""torch.compile of the transformer's repeated blocks (diffusers' ``compile_repeated_blocks``,
regional compilation): the 30 identical blocks compile once, the rest stays eager.

Off by default: compiling takes minutes on the CPU and tens of seconds on a GPU, and a changed
clip size triggers a recompile unless ``dynamic=True``. Call it last, after LoRAs, compact
modulation, fp8 storage and offloading are set up (the compiled code traces through their hooks).
"""

from __future__ import annotations

from ..errors import InputError


def compile_blocks(transformer, backend: str = "inductor", mode: str | None = None, dynamic: bool | None = None,
                   fullgraph: bool = False) -> None:
    """Compile every WanTransformerBlock in place with ``torch.compile(backend, mode, dynamic, fullgraph)``."""
    if not hasattr(transformer, "compile_repeated_blocks"):
        raise InputError(f"transformer: {type(transformer).__name__} cannot compile its blocks; expected a diffusers "
                         "WanTransformer3DModel.")
    kwargs = {"backend": backend, "fullgraph": fullgraph}
    if mode is not None:
        kwargs["mode"] = mode
    if dynamic is not None:
        kwargs["dynamic"] = dynamic
    transformer.compile_repeated_blocks(**kwargs)


def blocks_compiled(transformer) -> bool:
    return any(getattr(block, "_compiled_call_impl", None) is not None for block in transformer.blocks)
