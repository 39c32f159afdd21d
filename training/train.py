"""``python -m wan_egoexo_training.train --config exo2ego [--section.option VALUE ...]`` (or ``wan-egoexo-train``)

Trains a WorldWander LoRA from one config file. The same command runs on one GPU, under
``torchrun --nproc_per_node N`` or ``accelerate launch`` (data parallel; ``--distributed.strategy fsdp``
shards the base model), on several nodes, and on the CPU. See docs/training.md.
"""

from __future__ import annotations

import os
import sys

from wan_egoexo.atomic_files import DISK_ERRNOS, as_write_error
from wan_egoexo.errors import WanEgoExoError

from .config import build_parser, config_from_args, dump_config


def main(argv=None) -> int:
    parser = build_parser("python -m wan_egoexo_training.train", "Train a WorldWander LoRA (ego <-> exo) on Wan2.2-TI2V-5B.")
    args = parser.parse_args(argv)
    config = None
    try:
        config = config_from_args(args)
        if args.print_config:
            print(dump_config(config), end="")
            return 0
        from .run.loop import train  # noqa: PLC0415  (torch / diffusers load only when training)

        result = train(config)
    except WanEgoExoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a write the run did not wrap: a full or read-only disk still ends with a named error
        if exc.errno not in DISK_ERRNOS:
            raise
        where = exc.filename or getattr(config, "output_dir", None) or "the training output"
        print(f"error: {as_write_error(exc, where, 'free some space or choose a writable output_dir')}",
              file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained to step {result.step}; LoRA: {result.lora_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
