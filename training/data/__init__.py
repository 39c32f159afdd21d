"""The trainer's data: finding the (ego, exo, reference) triplets (``pairing``) and checking them
before any model loads (``dataset_checks``), a clip's frame windows and the authors' resize and crop
(``clips``), the latent cache on disk (``cache``), the two datasets over videos or the cache
(``dataset``), per-sample randomness (``sample_draws``) and the order of samples (``data_order``),
the prompt table (``prompts``), and a synthetic dataset for tests and demos (``synthetic``).

May import: the core (``wan_egoexo``) and ``wan_egoexo_training.config``; not ``step`` or ``run``.
"""
