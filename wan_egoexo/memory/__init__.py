"""Speed and memory options for the transformer, VAE and text encoder, one concept per module.

- ``modulation``: compact timestep modulation (one row per group of equal-timestep tokens, in the
  model dtype; no [B, N, 6, dim] float32 tensors).
- ``prompt_cache``: UMT5 embeddings cached on disk, so repeat runs never load the text encoder.
- ``offload``: N transformer blocks resident, the others streamed from CPU memory ahead of use.
- ``fp8_weights``: float8 weight storage with bf16 compute (diffusers layerwise casting).
- ``vae_chunking``: VAE encode/decode in spatial tiles (time is already processed in causal chunks).
- ``attention_choice``: flash-attention 2/3 when installed and supported, else PyTorch SDPA.
- ``compile``: torch.compile of the repeated transformer blocks.
- ``flops``: FLOP count of one predict_flow step (the spec's cost model).
- ``footprint``: the memory model, in bytes, of weights, activations and attention per option.
- ``auto``: choosing the options (guidance batch, resident blocks, tiling, fp8) from the free GPU
  memory and the clip.
- ``runtime``: planning and preparing each sampler run (LoRA chain merged or unfused, resident blocks).
- ``choices``: the names the nodes and the CLI offer.

Sequential guidance itself lives in ``wan_egoexo.sampling.sampler`` (``cfg_batch``) and merged LoRAs in
``wan_egoexo.lora.merge``. Each option is a function taking the loaded objects, so the CLI and the
nodes apply them after loading.
"""
