"""Running on several processes with PyTorch's own engines: the process group (from the environment
``torchrun`` and ``accelerate launch`` both set), DistributedDataParallel, or FSDP2 (``fully_shard``,
every block then the root) to shard the 5B base across GPUs; and the state-dict helpers of
``torch.distributed.checkpoint`` that gather the LoRA and optimizer state in the same way for all three.

On CPU the same code runs with the gloo backend; one process without a launcher needs no group at all.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from wan_egoexo.devices import resolve_device
from wan_egoexo.errors import InputError


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather_objects(self, value) -> list:
        """``value`` from every rank, in rank order (on every rank)."""
        if not self.distributed:
            return [value]
        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def broadcast_object(self, value):
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def run_on_main(self, fn):
        """``fn()`` on rank 0 and its result on every rank; an InputError it raises is raised on every rank."""
        outcome, error = None, None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except InputError as exc:
                error, outcome = exc, ("error", str(exc))
        outcome = self.broadcast_object(outcome)
        if outcome[0] == "error":
            raise error if error is not None else InputError(outcome[1])
        return outcome[1]

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.distributed:
            return bool(flag)
        tensor = torch.tensor([1.0 if flag else 0.0], dtype=torch.float32, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item() > 0)

    def mean(self, value: float) -> float:
        if not self.distributed:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size


def init_distributed(device: str = "auto", backend: str = "auto") -> DistributedContext:
    """Join the process group described by RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR (set by torchrun
    or accelerate launch), or run as a single process when WORLD_SIZE is absent or 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = resolve_device(device)
    if wanted.type == "cuda" and (device in (None, "auto") or torch.device(device).index is None):
        wanted = torch.device("cuda", local_rank)  # "cuda" without an index: each process its own GPU
    if world_size <= 1:
        return DistributedContext(device=wanted)
    if backend == "auto":
        backend = "nccl" if wanted.type == "cuda" else "gloo"
    if wanted.type == "cuda":
        torch.cuda.set_device(wanted)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                              device=wanted, backend=backend, owns_group=owns)


def shutdown(context: DistributedContext) -> None:
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


class ForwardThroughWrapper:
    """What ``predict_flow`` reads from a transformer (config, rope, patch_embedding, ...) comes from the
    inner model; calling it goes through the DDP wrapper, whose forward sets up the gradient all-reduce."""

    def __init__(self, wrapper, inner):
        object.__setattr__(self, "_wrapper", wrapper)
        object.__setattr__(self, "_inner", inner)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __call__(self, *args, **kwargs):
        return self._wrapper(*args, **kwargs)


@dataclass
class WrappedModel:
    forward: object  # what predict_flow gets
    state_module: torch.nn.Module  # what the state-dict helpers get (DDP, FSDP or the plain model)
    inner: torch.nn.Module  # the transformer itself (validation on rank 0, LoRA names)
    strategy: str

    def no_sync(self, last_micro_step: bool):
        """DDP / FSDP: skip the gradient all-reduce on all but the last micro-step of an accumulation."""
        if self.strategy == "ddp" and not last_micro_step:
            return self.state_module.no_sync()
        if self.strategy == "fsdp" and not last_micro_step:
            self.state_module.set_requires_gradient_sync(False)
        elif self.strategy == "fsdp":
            self.state_module.set_requires_gradient_sync(True)
        return contextlib.nullcontext()


def wrap_model(transformer, context: DistributedContext, strategy: str, mixed_precision: str) -> WrappedModel:
    """DDP or FSDP2 around the transformer (its LoRA already added) when there are several processes."""
    if not context.distributed:
        return WrappedModel(transformer, transformer, transformer, "single")
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

        device_ids = [context.device.index] if context.device.type == "cuda" else None
        ddp = DistributedDataParallel(transformer, device_ids=device_ids, find_unused_parameters=False)
        return WrappedModel(ForwardThroughWrapper(ddp, transformer), ddp, transformer, "ddp")
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # noqa: PLC0415

        dtypes = {p.dtype for p in transformer.parameters()}
        if dtypes != {torch.float32}:
            raise InputError(f"distributed.strategy fsdp: the base weights are {sorted(map(str, dtypes))}; "
                             "expected model.dtype fp32 (FSDP keeps fp32 shards and computes in bf16 with "
                             "train.mixed_precision bf16).")
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if mixed_precision == "bf16" else MixedPrecisionPolicy()
        for block in transformer.blocks:
            fully_shard(block, mp_policy=policy)
        fully_shard(transformer, mp_policy=policy)
        return WrappedModel(transformer, transformer, transformer, "fsdp")
    raise InputError(f"distributed.strategy: {strategy!r} is not supported; expected 'ddp' or 'fsdp'.")


_FULL = dict(full_state_dict=True, cpu_offload=True)


def trainable_state(model: WrappedModel) -> dict[str, torch.Tensor]:
    """The LoRA tensors (trainable parameters only), full and on the CPU (complete on rank 0 at least)."""
    return get_model_state_dict(model.state_module, options=StateDictOptions(ignore_frozen_params=True, **_FULL))


def load_trainable_state(model: WrappedModel, state: dict[str, torch.Tensor]) -> None:
    """Put saved LoRA tensors (names as trainable_state gives them) back into the model, in place."""
    trainable = {n: p for n, p in model.inner.named_parameters() if p.requires_grad}
    if set(state) != set(trainable):
        missing, unknown = sorted(set(trainable) - set(state)), sorted(set(state) - set(trainable))
        raise InputError(f"LoRA state: {len(missing)} trainable tensors missing (e.g. {missing[:2]}), {len(unknown)} "
                         f"unknown (e.g. {unknown[:2]}); expected a state saved with the same LoRA settings.")
    if model.strategy == "fsdp":
        # shards the full tensors; given a copy because set_model_state_dict adds entries to its argument
        set_model_state_dict(model.state_module, dict(state),
                             options=StateDictOptions(full_state_dict=True, strict=False))
        return
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(state[name])


def optimizer_state(model: WrappedModel, optimizer) -> dict:
    return get_optimizer_state_dict(model.state_module, optimizer, options=StateDictOptions(**_FULL))


def load_optimizer_state(model: WrappedModel, optimizer, state: dict) -> None:
    set_optimizer_state_dict(model.state_module, optimizer, state, options=StateDictOptions(full_state_dict=True))
