"""Speed and memory options for the transformer, VAE and text encoder, one concept per module.

- ``modulation``: compact per-token timestep modulation (no [B, N, 6, dim] fp32 copies; exact).
- ``prompt_cache``: UMT5 embeddings cached on disk, so repeat runs never load the text encoder.
- ``offload``: transformer blocks kept on the CPU and streamed to the GPU ahead of use.
- ``fp8_weights``: float8 weight storage with bf16 compute (diffusers layerwise casting).
- ``vae_chunking``: VAE encode/decode in spatial tiles (time is already processed in causal chunks).
- ``attention_choice``: flash-attention 2/3 when installed and supported, else PyTorch SDPA.
- ``compile``: torch.compile of the repeated transformer blocks.
- ``flops``: FLOP count of one predict_flow step (the spec's cost model).
- ``footprint``: the memory model, in bytes, of weights, activations and attention per option.
- ``auto``: choosing the options from the free GPU memory.

Nothing here edits the loaders or the sampler: each option is a function taking the loaded
objects, so the CLI and the nodes can apply it after loading.
"""
