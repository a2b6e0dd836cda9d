"""``nscodec render scene.nsc --output out.mp4|frames/``: a video of a ``.nsc`` file, from the file alone.

The pipeline comes from :func:`nscodec.pipeline.nsc_eval_setup` (the file's own cameras when its dataset is not
there); the camera path is an orbit around the scene (:func:`nscodec.cameras.orbit_cameras`) or a nerfstudio
camera-path JSON (the viewer's "Render" tab writes one; :func:`nerfstudio.cameras.camera_paths.get_path_from_json`);
frames are rendered and written by nerfstudio's own ``ns-render`` code (``_render_trajectory_video``), with the
ffmpeg binary of ``imageio-ffmpeg`` when the system has none.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from nscodec.errors import NscError

__all__ = ["render_file", "add_arguments", "render_command"]


def render_file(path: Path, output: Path, camera_path: Optional[Path] = None, seconds: float = 4.0, fps: int = 24,
                resolution_scale: float = 1.0, lod: Optional[int] = None) -> Path:
    """Render ``path`` along an orbit (or ``camera_path``) to ``output``: an ``.mp4`` (or ``.mov``/``.webm``), or a
    folder of PNG frames when ``output`` has no video suffix. Returns what was written.

    Args:
        seconds, fps: the orbit's length (ignored with ``camera_path``, which has its own).
        resolution_scale: image size relative to the default training camera's.
        lod: render at this level of detail (codecs that have levels).

    Raises:
        NscError / NscFormatError / FileNotFoundError: a bad or missing file or camera path.
    """
    import mediapy
    from nerfstudio.cameras.camera_paths import get_path_from_json
    from nerfstudio.scripts.render import _render_trajectory_video

    from nscodec.cameras import orbit_cameras
    from nscodec.compat.ffmpeg import ensure_ffmpeg
    from nscodec.pipeline import nsc_eval_setup

    path, output = Path(path), Path(output)
    video = output.suffix.lower() in (".mp4", ".mov", ".webm")
    if video:
        exe = ensure_ffmpeg()
        if exe is None:
            frames = output.with_suffix("")
            print(f"nscodec: no ffmpeg found (pip install imageio-ffmpeg, or apt-get install ffmpeg); writing PNG frames "
                  f"to {frames}/ instead", flush=True)
            output, video = frames, False
        else:
            mediapy.set_ffmpeg(exe)
    _, pipeline, _, _ = nsc_eval_setup(path, test_mode="inference", source="any")
    model = pipeline.model
    if lod is not None:
        model.set_lod(int(lod))
    if camera_path is not None:
        try:
            spec = json.loads(Path(camera_path).read_text())
            cameras = get_path_from_json(spec)
        except FileNotFoundError:
            raise
        except Exception as err:
            raise NscError(f"camera path {camera_path} is not a nerfstudio camera-path JSON ({type(err).__name__}: {err})") from None
        seconds = float(spec.get("seconds", len(cameras) / max(1, fps)))
    else:
        base = model.viewer_cameras if model.viewer_cameras is not None else pipeline.datamanager.train_dataset.cameras
        view = getattr(model, "viewer_default_view", 0) if model.viewer_cameras is not None else 0
        cameras = orbit_cameras(base, getattr(model, "world_box", model.scene_box), frames=max(1, int(round(seconds * fps))), view=view)
    if video:
        output.parent.mkdir(parents=True, exist_ok=True)
    _render_trajectory_video(pipeline, cameras, output_filename=output, rendered_output_names=["rgb"],
                             rendered_resolution_scaling_factor=resolution_scale, seconds=seconds,
                             output_format="video" if video else "images", image_format="png")
    return output if video else output.parent / output.stem


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``nscodec render``."""
    p.add_argument("file", help="a .nsc file")
    p.add_argument("--output", required=True, help="out.mp4 (a video) or a folder name (PNG frames)")
    p.add_argument("--camera-path", default=None, help="a nerfstudio camera-path JSON (default: an orbit)")
    p.add_argument("--seconds", type=float, default=4.0, help="orbit length in seconds")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--resolution-scale", type=float, default=1.0, help="image size relative to the training views")
    p.add_argument("--lod", type=int, default=None, help="level of detail to render (codecs with levels)")


def render_command(args: argparse.Namespace) -> int:
    """Entry of ``nscodec render``."""
    out = render_file(Path(args.file), Path(args.output), Path(args.camera_path) if args.camera_path else None,
                      args.seconds, args.fps, args.resolution_scale, args.lod)
    print(f"wrote {out}")
    return 0
