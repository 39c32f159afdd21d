"""Headless WorldWander LoRA training on the shared ``wan_egoexo`` core.

Commands (see docs/training.md):
  python -m training.prepare --config training/configs/exo2ego.yaml --data.cache CACHE_DIR
  python -m training.train   --config training/configs/exo2ego.yaml [--section.option VALUE ...]
  torchrun --nproc_per_node 4 -m training.train --config ...
Python: ``training.loop.train(config)`` with ``training.config.load_config(path, overrides)``.
"""
