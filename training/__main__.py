"""``python -m training train|prepare|benchmark ...``: the same commands as
``python -m training.train``, ``python -m training.prepare`` and ``python -m training.benchmark_step``."""

from __future__ import annotations

import sys

COMMANDS = ("train", "prepare", "benchmark")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m training {{{','.join(COMMANDS)}}} --config FILE [--section.option VALUE ...]",
              file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .train import main as run  # noqa: PLC0415
    elif command == "prepare":
        from .prepare import main as run  # noqa: PLC0415
    else:
        from .benchmark_step import main as run  # noqa: PLC0415
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
