"""VQ-AD (Takikawa et al. 2022, Variable Bitrate Neural Fields): vector-quantized feature grid with streaming LOD."""
