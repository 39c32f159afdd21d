"""Sampling the target latents: the reference flow-matching solvers and their sigmas, host-free
(``solvers``), and the sampler that runs them over ``predict_flow``, with guidance, windows and the
per-step non-finite checks (``sampler``).

May import: the top-level modules (errors, finite_checks, option_ranges), ``in_context`` and
``memory.offload``.
"""
