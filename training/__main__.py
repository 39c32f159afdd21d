"""``python -m wan_egoexo_training train|prepare|evaluate|benchmark ...``: the same commands as
``python -m wan_egoexo_training.train``, ``wan_egoexo_training.prepare``, ``wan_egoexo_training.evaluate`` and ``wan_egoexo_training.benchmark_step``
(installed as the ``wan-egoexo-train``, ``-prepare`` and ``-evaluate`` console scripts)."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {"train": "train", "prepare": "prepare", "evaluate": "evaluate", "benchmark": "benchmark_step"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m wan_egoexo_training {{{','.join(COMMANDS)}}} [options]  (each command's --help lists them)",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f".{COMMANDS[argv[0]]}", __package__)
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
