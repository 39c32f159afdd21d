"""A whole training run: setting it up from its config (``session``), the loop (``loop``), processes
and their engines (``distributed``), checkpoints and the RNG states they keep (``checkpoints``,
``rng_state``), one run per output folder (``output_lock``), the metrics files (``metrics_log``),
validation on held-out pairs and its image metrics (``validation``, ``video_metrics``), and the
warnings a run expects (``expected_warnings``).

May import: the core, ``wan_egoexo_training.config``, ``data`` and ``step``.
"""
