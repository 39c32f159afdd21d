"""The names of the memory and LoRA choices the nodes and the CLI offer (no imports: listing them in
a node's INPUT_TYPES costs nothing)."""

MEMORY_MODES = ("auto", "resident", "offload")  # where the transformer's blocks live while sampling
LORA_MODES = ("merged", "unfused")  # LoRAs added into the weights, or separate adapters
CFG_BATCH_MODES = ("auto", "batched", "sequential")  # guidance: the plan's choice, one batch, two in a row
