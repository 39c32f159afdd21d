"""One training step: samples to model input (``batches``), the authors' flow-matching table and loss
weights (``flow_matching``), the objective of a micro-batch (``objective``), the trainable LoRA
(``lora_training``), the optimizer and schedule (``optim``) and the stop at the first non-finite
number (``numeric_guard``).

May import: the core, ``wan_egoexo_training.config`` and ``data``; not ``run``.
"""
