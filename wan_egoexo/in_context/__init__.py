"""The WorldWander method: the two tasks (``tasks``), the in-context sequence [reference?, source,
target] along the latent frame axis (``layout``), the collaborative rotary positions (``positions``),
the one in-context forward every caller uses (``predict_flow``), the per-channel normalised Wan2.2
latents (``latents``), the sliding windows over long clips (``windows``) and the in-context input of
one window for a host that windows the target itself (``window_input``).

May import: the top-level modules (errors, finite_checks) and ``memory.offload`` (the device a
streamed block runs on).
"""
