"""Headless WorldWander LoRA training on the shared ``wan_egoexo`` core.

Commands (see docs/training.md; installed by ``pip install -e ".[train]"``, they work from any folder):
  python -m training.prepare  --config exo2ego --data.root DATA --data.cache CACHE_DIR   (wan-egoexo-prepare)
  python -m training.train    --config exo2ego --data.cache CACHE_DIR [--section.option VALUE ...]  (wan-egoexo-train)
  python -m training.evaluate OUTPUTS GROUND_TRUTH                                        (wan-egoexo-evaluate)
  torchrun --nproc_per_node 4 -m training.train --config exo2ego ...
Python: ``training.loop.train(config)`` with ``training.config.load_config(path, overrides)``.
"""
