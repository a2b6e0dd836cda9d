"""``ectensorf``: Neural NeRF Compression (Pham et al., arXiv 2406.08943) on the nscodec TensoRF-VM base."""
