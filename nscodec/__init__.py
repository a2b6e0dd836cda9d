"""nscodec: NeRF compression for nerfstudio.

Four papers as nerfstudio methods (``ectensorf``, ``vqad``, ``shacira``, ``codecnerf``) on one shared coding
core (:mod:`nscodec.coding`: entropy models, integer CDF tables, entropy coders and the ``.nsc`` container),
plus a CPU-fast TensoRF-VM base model (:mod:`nscodec.tensorf`, method ``nscodec-tensorf``).

This module must stay import-light: it is imported by the ``.pth`` start-up hook in every Python process.
"""

__version__ = "0.1.0"
