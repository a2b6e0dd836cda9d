"""CodecNeRF (Kang et al., AAAI 2025): feed-forward NeRF codec + parameter-efficient finetuning + entropy-coded deltas.

Modules: :mod:`.encoder` (features, unprojection, aggregation, VQ compressor), :mod:`.triplane` (generator,
renderer), :mod:`.peft` (plane deltas, LoRA), :mod:`.network` (shared codec + codec-model file), :mod:`.model`
(nerfstudio model ``codecnerf``), :mod:`.pretrain` (``nscodec codecnerf-pretrain``).
"""
