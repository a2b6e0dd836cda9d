"""ffmpeg for videos on a fresh machine: nerfstudio's ``ns-render`` (and mediapy, its writer) look for an ``ffmpeg``
on ``PATH`` and stop with "Could not find ffmpeg" when there is none. The ``imageio-ffmpeg`` wheel (a dependency)
ships a static binary; :func:`ensure_ffmpeg` puts a link named ``ffmpeg`` to it on this process's ``PATH``."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

__all__ = ["ensure_ffmpeg"]


def ensure_ffmpeg() -> Optional[str]:
    """Path of the ``ffmpeg`` this process will use (the system's, else the ``imageio-ffmpeg`` binary, linked as
    ``ffmpeg`` into a per-user temp directory prepended to ``PATH``); None when there is neither."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        return None
    link_dir = Path(tempfile.gettempdir()) / f"nscodec-ffmpeg-{os.getuid() if hasattr(os, 'getuid') else 0}"
    link_dir.mkdir(mode=0o700, exist_ok=True)
    link = link_dir / "ffmpeg"
    if not (link.exists() and os.path.samefile(link, exe)):
        tmp = link_dir / f".ffmpeg.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(exe, tmp)
        os.replace(tmp, link)
    os.environ["PATH"] = f"{link_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return str(link)
