"""The model files and the three models: finding the files a translation needs (``model_files``),
reading safetensors files safely (``checkpoint_files``) and ComfyUI's fp8-scaled layout (``fp8_scaled``),
and loading the Wan2.2-TI2V-5B transformer
(``transformer_loader``, with ``weight_source`` recording where each weight came from), the Wan2.2 VAE
(``vae_loader``, its key maps in ``vae_keys``) and the UMT5 text encoder (``text_encoder_loader``,
``umt5_tokenizer``, prompts to embeddings in ``text_encoding``).

May import: the top-level modules (errors, devices), ``in_context.tasks`` (a task's LoRA file names) and
``memory.attention_choice`` (the attention backends a loader accepts).
"""
