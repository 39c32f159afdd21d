"""The training configuration: one dataclass per section, read from a YAML or TOML file, every
option overridable on the command line as ``--section.option value`` (``--train.max_steps 100``).

The defaults are the authors' recipe (spec, "Reference training settings"): LoRA rank 80 / alpha 80
on the six module kinds, AdamW 0.9 / 0.95, eps 1e-8, weight decay 0.01, lr 5e-5 scaled by
sqrt(world size x accumulation), 10 warm-up steps, shift-5 flow matching on 1000 timesteps,
10% prompt dropout, bf16, gradient checkpointing, 49 frames at stride 2, 704 x 1280.
Values are checked here, before anything is loaded; a bad one raises InputError naming the option.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.tasks import get_task

from .config_files import bundled_configs, read_config_file

# PEFT target names: each matches that linear in attn1 and attn2 of every block (ten per block).
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]


@dataclass
class ModelConfig:
    models_dir: str | None = None  # a ComfyUI models folder: the three files are found by their usual names
    diffusers_dir: str | None = None  # or a Diffusers Wan2.2-TI2V-5B folder
    transformer: str | None = None  # explicit paths override the two above
    vae: str | None = None
    text_encoder: str | None = None
    dtype: str = "auto"  # frozen base weights: auto = bf16 on GPU, fp32 on CPU (fp32 under FSDP)
    attention: str = "sdpa"
    positions: str = "collaborative"


@dataclass
class DataConfig:
    root: str | None = None  # triplet folder (ego/ exo/ reference/ or First_Video/ Third_Video/ Reference_Image/)
    cache: str | None = None  # a folder written by `prepare`: train from cached latents instead of videos
    pairing: str = "stem"  # "stem" (file names) or "sorted" (listing position, as the authors' loader)
    captions: bool = True  # use captions.json / <stem>.txt when present, else the task's fixed prompt
    num_frames: int = 49
    frame_stride: int = 2
    height: int = 704
    width: int = 1280
    resize_long: int = 1280  # long side before the centre crop: 1280 real footage, 1505 synthetic
    hflip: float = 0.0  # augmentation (off by default): probability of mirroring the whole triplet
    shuffle: bool = True
    num_workers: int = 2
    check_workers: int = 8  # threads probing the videos before training


@dataclass
class LoraTrainingConfig:
    rank: int = 80
    alpha: float = 80.0
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    save_dtype: str = "fp32"


@dataclass
class OptimConfig:
    lr: float = 5e-5
    scale_lr: bool = True  # lr x sqrt(world size x grad_accum), as the authors
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 10
    grad_clip: float | None = None  # None: no clipping (the authors' setting)
    grad_clip_mode: str = "norm"  # "norm" or "value" (the authors' Lightning setting, when a value is given)


@dataclass
class TrainConfig:
    max_steps: int = 8001
    batch_size: int = 4  # per process
    grad_accum: int = 1
    mixed_precision: str = "bf16"  # "bf16" autocast or "no"
    gradient_checkpointing: bool = True
    prompt_dropout: float = 0.1
    flow_shift: float = 5.0
    num_train_timesteps: int = 1000
    log_every: int = 1


@dataclass
class CheckpointConfig:
    every: int = 500
    keep_last: int = 3
    resume: str = "auto"  # "auto" (latest in output_dir), "none", or a checkpoint folder


@dataclass
class ValidationConfig:
    every: int = 0  # 0 = off
    stems: list[str] = field(default_factory=list)  # held-out pairs of data.root (never trained on)
    steps: int = 50
    cfg: float = 5.0
    seed: int = 1234
    fps: float = 8.0
    lpips: str = "auto"  # LPIPS beside PSNR / SSIM: auto (when its weights are on this machine), on, off


@dataclass
class LoggingConfig:
    tensorboard: str = "auto"  # "auto" (when installed), "on", "off"
    progress_bar: bool = True


@dataclass
class DistributedConfig:
    strategy: str = "ddp"  # "ddp" or "fsdp" (shards the base model; for GPUs short of memory)
    backend: str = "auto"  # auto: nccl on CUDA, gloo on CPU
    check_sync: bool = True  # at every save, verify that all ranks hold the same LoRA weights


@dataclass
class PrepareConfig:
    windows: int = 4  # windows per clip whose posterior mean / std are stored (every window if the clip has fewer)
    shard_size_mb: int = 2048
    dtype: str = "fp32"  # "fp32" (training from cache = training from video) or "bf16" (half the disk)
    overwrite: bool = False


@dataclass
class TrainingConfig:
    task: str = "exo2ego"
    output_dir: str | None = None  # None: ~/worldwander-training/<task> (outside any checkout)
    seed: int = 1234
    device: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraTrainingConfig = field(default_factory=LoraTrainingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainingConfig":
        """Check every option (InputError naming the first bad one); fills in the default output folder."""
        validate_config(self)
        if self.output_dir is None:
            self.output_dir = str(default_output_dir(self.task))
        self.output_dir = str(Path(self.output_dir).expanduser())
        return self


def default_output_dir(task: str) -> Path:
    """Where a run writes when output_dir is not given: a folder per task in the user's home."""
    return Path.home() / "worldwander-training" / get_task(task).name


# ---------------------------------------------------------------- coercion


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _is_section(hint) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _coerce(name: str, value, hint):
    """Turn a YAML/TOML/command-line value into the field's type; InputError naming ``name`` otherwise."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~", "")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(name, value, inner)
    origin = typing.get_origin(hint)
    if origin is list:
        if isinstance(value, str):
            parsed = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            value = parsed
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{name}: expected a list, got {value!r}.")
        return [_coerce(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise InputError(f"{name}: expected true or false, got {value!r}.")
    if hint is int:
        if isinstance(value, bool):
            raise InputError(f"{name}: expected an integer, got {value!r}.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{name}: expected an integer, got {value!r}.") from None
        if number != int(number):
            raise InputError(f"{name}: expected an integer, got {value!r}.")
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise InputError(f"{name}: expected a number, got {value!r}.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InputError(f"{name}: expected a number, got {value!r}.") from None
    if hint is str:
        if isinstance(value, (dict, list)):
            raise InputError(f"{name}: expected a string, got {value!r}.")
        return str(value)
    raise InputError(f"{name}: unsupported option type {hint!r}.")


def apply_values(config, values: dict, source: str, prefix: str = ""):
    """Set fields of the (nested) dataclass ``config`` from a nested dict; unknown keys raise."""
    if not isinstance(values, dict):
        raise InputError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a mapping of options, got {values!r}.")
    hints = _hints(type(config))
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in hints:
            known = ", ".join(f"{prefix}{k}" for k in hints)
            raise InputError(f"{source}: unknown option {name!r}; expected one of: {known}.")
        if _is_section(hints[key]):
            apply_values(getattr(config, key), value if value is not None else {}, source, f"{name}.")
        else:
            setattr(config, key, _coerce(name, value, hints[key]))
    return config


# ---------------------------------------------------------------- command line


def _option_names(cls=TrainingConfig, prefix: str = ""):
    for key, hint in _hints(cls).items():
        if _is_section(hint):
            yield from _option_names(hint, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", hint


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                     epilog="Every option of the config file can be given as --section.option VALUE "
                                            "(lists as a,b or [a, b]; none/null for no value); the command line wins.")
    parser.add_argument("--config", help=f"YAML or TOML config file, or a bundled config: {', '.join(bundled_configs())}")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    options = parser.add_argument_group("options (override the config file)")
    defaults = TrainingConfig()
    for name, hint in _option_names():
        default = defaults
        for part in name.split("."):
            default = getattr(default, part)
        options.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, metavar="VALUE",
                             help=f"default: {json.dumps(default)}")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """The config file (if any), then every --section.option given, validated."""
    config = TrainingConfig()
    if getattr(args, "config", None):
        apply_values(config, read_config_file(args.config), str(args.config))
    overrides: dict = {}
    for name, value in vars(args).items():
        if "." not in name and name not in _hints(TrainingConfig):
            continue
        node = overrides
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    apply_values(config, overrides, "command line", "")
    return config.validate()


def load_config(path=None, overrides: dict | None = None) -> TrainingConfig:
    """For Python callers and tests: file (optional) then a nested dict of overrides, validated."""
    config = TrainingConfig()
    if path is not None:
        apply_values(config, read_config_file(path), str(path))
    if overrides:
        apply_values(config, overrides, "overrides")
    return config.validate()


def dump_config(config: TrainingConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


# ---------------------------------------------------------------- validation


def _require(condition: bool, name: str, expected: str, value) -> None:
    if not condition:
        raise InputError(f"{name}: expected {expected}, got {value!r}.")


def validate_config(c: TrainingConfig) -> None:
    get_task(c.task)
    _require(c.data.num_frames >= 1 and (c.data.num_frames - 1) % 4 == 0, "data.num_frames",
             "4k+1 frames (e.g. 9, 49)", c.data.num_frames)
    for name in ("height", "width"):
        value = getattr(c.data, name)
        _require(value >= 32 and value % 32 == 0, f"data.{name}", "a positive multiple of 32", value)
    _require(c.data.resize_long >= max(c.data.height, c.data.width), "data.resize_long",
             f"at least the crop's long side {max(c.data.height, c.data.width)}", c.data.resize_long)
    _require(c.data.frame_stride >= 1, "data.frame_stride", "an integer >= 1", c.data.frame_stride)
    _require(c.data.pairing in ("stem", "sorted"), "data.pairing", "'stem' or 'sorted'", c.data.pairing)
    _require(0.0 <= c.data.hflip <= 1.0, "data.hflip", "a probability 0..1", c.data.hflip)
    _require(c.data.num_workers >= 0, "data.num_workers", "an integer >= 0", c.data.num_workers)
    _require(c.data.check_workers >= 1, "data.check_workers", "an integer >= 1", c.data.check_workers)
    _require(c.lora.rank >= 1, "lora.rank", "an integer >= 1", c.lora.rank)
    _require(c.lora.alpha > 0, "lora.alpha", "a number > 0", c.lora.alpha)
    _require(bool(c.lora.target_modules), "lora.target_modules", "a non-empty list of module names",
             c.lora.target_modules)
    _require(c.lora.save_dtype in ("fp32", "bf16", "fp16"), "lora.save_dtype", "fp32, bf16 or fp16",
             c.lora.save_dtype)
    _require(c.optim.lr > 0, "optim.lr", "a learning rate > 0", c.optim.lr)
    _require(len(c.optim.betas) == 2 and all(0 <= b < 1 for b in c.optim.betas), "optim.betas",
             "two numbers in [0, 1)", c.optim.betas)
    _require(c.optim.warmup_steps >= 0, "optim.warmup_steps", "an integer >= 0", c.optim.warmup_steps)
    _require(c.optim.grad_clip is None or c.optim.grad_clip > 0, "optim.grad_clip", "none or a number > 0",
             c.optim.grad_clip)
    _require(c.optim.grad_clip_mode in ("norm", "value"), "optim.grad_clip_mode", "'norm' or 'value'",
             c.optim.grad_clip_mode)
    _require(c.train.max_steps >= 1, "train.max_steps", "an integer >= 1", c.train.max_steps)
    _require(c.train.batch_size >= 1, "train.batch_size", "an integer >= 1", c.train.batch_size)
    _require(c.train.grad_accum >= 1, "train.grad_accum", "an integer >= 1", c.train.grad_accum)
    _require(c.train.mixed_precision in ("bf16", "no"), "train.mixed_precision", "'bf16' or 'no'",
             c.train.mixed_precision)
    _require(0.0 <= c.train.prompt_dropout <= 1.0, "train.prompt_dropout", "a probability 0..1",
             c.train.prompt_dropout)
    _require(c.train.flow_shift > 0, "train.flow_shift", "a number > 0", c.train.flow_shift)
    _require(c.train.num_train_timesteps >= 2, "train.num_train_timesteps", "an integer >= 2",
             c.train.num_train_timesteps)
    _require(c.train.log_every >= 1, "train.log_every", "an integer >= 1", c.train.log_every)
    _require(c.checkpoint.every >= 0, "checkpoint.every", "an integer >= 0 (0 = only at the end)",
             c.checkpoint.every)
    _require(c.checkpoint.keep_last >= 1, "checkpoint.keep_last", "an integer >= 1", c.checkpoint.keep_last)
    _require(c.validation.every >= 0, "validation.every", "an integer >= 0 (0 = off)", c.validation.every)
    if c.validation.every:
        _require(bool(c.validation.stems), "validation.stems", "the stems of held-out pairs when validation is on",
                 c.validation.stems)
        _require(c.data.root is not None, "data.root", "the dataset folder holding the validation pairs",
                 c.data.root)
    _require(c.validation.steps >= 1, "validation.steps", "an integer >= 1", c.validation.steps)
    _require(c.validation.lpips in ("auto", "on", "off"), "validation.lpips", "auto, on or off", c.validation.lpips)
    _require(c.logging.tensorboard in ("auto", "on", "off"), "logging.tensorboard", "auto, on or off",
             c.logging.tensorboard)
    _require(c.distributed.strategy in ("ddp", "fsdp"), "distributed.strategy", "'ddp' or 'fsdp'",
             c.distributed.strategy)
    _require(c.distributed.backend in ("auto", "nccl", "gloo"), "distributed.backend", "auto, nccl or gloo",
             c.distributed.backend)
    _require(c.prepare.windows >= 1, "prepare.windows", "an integer >= 1", c.prepare.windows)
    _require(c.prepare.shard_size_mb >= 1, "prepare.shard_size_mb", "an integer >= 1", c.prepare.shard_size_mb)
    _require(c.prepare.dtype in ("fp32", "bf16"), "prepare.dtype", "'fp32' or 'bf16'", c.prepare.dtype)
    _require(c.model.positions in ("collaborative", "uniform"), "model.positions", "'collaborative' or 'uniform'",
             c.model.positions)
