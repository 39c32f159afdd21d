"""Headless WorldWander LoRA training on the shared ``wan_egoexo`` core.

Installed as ``wan_egoexo_training`` (its source is this ``training/`` folder; a plain ``training``
could shadow, or be shadowed by, another distribution's). The top level holds the commands and the
configuration; ``data/`` (triplets, checks, clips, the latent cache, datasets), ``step/`` (one
training step: batches, objective, flow matching, LoRA, optimizer, numeric guard) and ``run/`` (a
whole run: session, loop, processes, checkpoints, lock, metrics, validation) the parts.

Commands (see docs/training.md; installed by ``pip install -e ".[train]"``, they work from any folder):
  python -m wan_egoexo_training.prepare  --config exo2ego --data.root DATA --data.cache CACHE_DIR   (wan-egoexo-prepare)
  python -m wan_egoexo_training.train    --config exo2ego --data.cache CACHE_DIR [--section.option VALUE ...]  (wan-egoexo-train)
  python -m wan_egoexo_training.evaluate OUTPUTS GROUND_TRUTH                                        (wan-egoexo-evaluate)
  torchrun --nproc_per_node 4 -m wan_egoexo_training.train --config exo2ego ...
  python -m wan_egoexo_training train|prepare|evaluate|benchmark ...                  (the same, by name)
Python: ``wan_egoexo_training.run.loop.train(config)`` with ``wan_egoexo_training.config.load_config(path, overrides)``.
"""
