"""Partial block offloading: the first N transformer blocks and everything outside the blocks stay on
the compute device; the other blocks live in CPU memory (pinned, for asynchronous copies) and are
copied in just before they run and dropped right after. With CUDA the next streamed block is
copied on a side stream while the current block computes, so with N resident the device holds
N + 2 blocks at most (the running one and the prefetched one). Without CUDA the copies are plain
synchronous copies: exact and slower, never chosen by the memory plan, but the same code path
(the tests run it on the CPU).

Written here rather than with diffusers' group offloading, which streams every block of a
ModuleList and cannot keep a resident share (ComfyUI keeps as much resident as fits, the
WanVideoWrapper lets users pick how many blocks to swap). The hooks are plain PyTorch forward
(pre-)hooks, so they compose with any diffusers hook (compact modulation, layerwise fp8 casting)
in any order. The weights at rest are the CPU copies: LoRA merging edits them in place, and
adding or removing unfused adapters needs offloading switched off and on again
(``runtime.prepare_for_sampling`` does that). Inference only: the copies are dropped after each
block, which autograd cannot see.
"""

from __future__ import annotations

import torch

from ..devices import resolve_device
from ..errors import InputError

_STATE_ATTR = "_wan_egoexo_block_offload"


class _BlockStreamer:
    """The offloading state of one transformer: which blocks stream, their CPU copies, the copies
    in flight, and the hooks."""

    def __init__(self, transformer, device: torch.device, resident: int, use_stream: bool):
        self.device = device
        self.resident = resident
        self.streamed = list(range(resident, len(transformer.blocks)))
        self.stream = torch.cuda.Stream(device) if use_stream else None
        pin = device.type == "cuda" and torch.cuda.is_available()
        self.tensors: dict[int, list[torch.Tensor]] = {}  # the block's parameters and buffers
        self.at_rest: dict[int, list[torch.Tensor]] = {}  # their CPU copies (what .data is between runs)
        self.loaded: dict[int, list[torch.Tensor]] = {}  # device copies in flight or in use
        self.ready: dict[int, torch.cuda.Event] = {}
        streamed = {id(t) for i in self.streamed for t in _block_tensors(transformer.blocks[i])}
        for tensor in [*transformer.parameters(), *transformer.buffers()]:
            if id(tensor) not in streamed:
                tensor.data = tensor.data.to(device)
        for index in self.streamed:
            tensors = _block_tensors(transformer.blocks[index])
            for tensor in tensors:
                cpu = tensor.data.to("cpu")
                tensor.data = cpu.pin_memory() if pin else cpu
            self.tensors[index] = tensors
            self.at_rest[index] = [tensor.data for tensor in tensors]
        # torch.compile must not trace the swaps (wrapped here, not decorated: importing this module
        # must not import torch._dynamo)
        opaque = torch.compiler.disable
        self.handles = [transformer.register_forward_pre_hook(opaque(self._before_forward)),
                        # also when the forward raises (an OOM half-way): the blocks are back on their
                        # stored copies before anything edits the weights (a LoRA merge) or the next forward
                        transformer.register_forward_hook(opaque(self._after_forward), always_call=True)]
        for index in self.streamed:
            block = transformer.blocks[index]
            self.handles.append(block.register_forward_pre_hook(opaque(self._before_block(index))))
            self.handles.append(block.register_forward_hook(opaque(self._after_block(index))))

    def _onload(self, index: int) -> None:
        if index in self.loaded:
            return
        if self.stream is None:
            self.loaded[index] = [source.to(self.device, copy=True) for source in self.at_rest[index]]
            return
        with torch.cuda.stream(self.stream):
            self.loaded[index] = [source.to(self.device, non_blocking=True) for source in self.at_rest[index]]
            self.ready[index] = self.stream.record_event()

    def _next_streamed(self, index: int) -> int | None:
        position = self.streamed.index(index) + 1
        return self.streamed[position] if position < len(self.streamed) else None

    def _before_forward(self, _module, _args):
        self._put_back()  # a forward interrupted by a KeyboardInterrupt (which skips _after_forward)
        if self.streamed:
            self._onload(self.streamed[0])  # overlaps the embeddings and the resident blocks

    def _before_block(self, index: int):
        def hook(_module, _args):
            self._onload(index)
            if self.stream is not None:
                compute = torch.cuda.current_stream(self.device)
                compute.wait_event(self.ready.pop(index))
            for tensor, copy in zip(self.tensors[index], self.loaded[index]):
                tensor.data = copy
                if self.stream is not None:
                    copy.record_stream(compute)  # freed only after the compute stream used it
            following = self._next_streamed(index)
            if following is not None:
                self._onload(following)

        return hook

    def _after_block(self, index: int):
        def hook(_module, _args, output):
            for tensor, rest in zip(self.tensors[index], self.at_rest[index]):
                tensor.data = rest
            self.loaded.pop(index, None)
            return output

        return hook

    def _after_forward(self, _module, _args, _output):
        self._put_back()  # nothing left after a forward that ran to the end; after one that raised, the rest

    def _put_back(self) -> None:
        if self.stream is not None and self.loaded:
            self.stream.synchronize()
        for index in list(self.loaded):
            for tensor, rest in zip(self.tensors[index], self.at_rest[index]):
                tensor.data = rest
        self.loaded.clear()
        self.ready.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self._put_back()


def _block_tensors(block) -> list[torch.Tensor]:
    return [*block.parameters(), *block.buffers()]


def _state(transformer) -> _BlockStreamer | None:
    return transformer.__dict__.get(_STATE_ATTR)


def block_offload_enabled(transformer) -> bool:
    return _state(transformer) is not None


def resident_blocks(transformer) -> int:
    """Blocks kept on the compute device: all of them when offloading is off."""
    state = _state(transformer)
    return len(transformer.blocks) if state is None else state.resident


def execution_device(transformer) -> torch.device:
    """Where the transformer computes (offloading keeps everything outside the blocks there)."""
    state = _state(transformer)
    return state.device if state is not None else transformer.patch_embedding.weight.device


def enable_block_offload(transformer, device=None, resident: int = 0, use_stream: bool | None = None) -> None:
    """Keep ``resident`` blocks (the first ones) and the non-block modules on ``device`` (default:
    the first GPU) and stream the others in from CPU memory ahead of use.

    use_stream: prefetch on a side CUDA stream (default: on for CUDA devices; needs CUDA).
    """
    device = resolve_device(device)
    blocks = getattr(transformer, "blocks", None)
    if blocks is None:
        raise InputError(f"transformer: {type(transformer).__name__} has no blocks to offload; expected a diffusers "
                         "WanTransformer3DModel.")
    if not isinstance(resident, int) or not 0 <= resident <= len(blocks):
        raise InputError(f"resident blocks: expected an integer from 0 to {len(blocks)}, got {resident!r}.")
    if block_offload_enabled(transformer):
        raise InputError("block offload: already enabled on this transformer (disable_block_offload first).")
    streams = device.type == "cuda" if use_stream is None else bool(use_stream)
    if streams and (device.type != "cuda" or not torch.cuda.is_available()):
        raise InputError(f"block offload: CUDA streams need an available CUDA device, not {device}.")
    transformer.__dict__[_STATE_ATTR] = _BlockStreamer(transformer, device, resident, streams)


def disable_block_offload(transformer, device=None) -> None:
    """Remove the hooks and put every weight on ``device`` (default: the compute device)."""
    state = _state(transformer)
    if state is None:
        return
    state.remove()
    del transformer.__dict__[_STATE_ATTR]
    transformer.to(resolve_device(device) if device is not None else state.device)
