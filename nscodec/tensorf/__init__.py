"""CPU-fast TensoRF-VM base model (method ``nscodec-tensorf``), the model ``ectensorf`` compresses."""
