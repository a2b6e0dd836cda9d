"""Start-up hook package (imported from ``nscodec_startup.pth``); must not import torch or nerfstudio."""
