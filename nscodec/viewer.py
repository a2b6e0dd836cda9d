"""A view-only ``ns-viewer`` session for decoded ``.nsc`` files.

The start-up hook (:mod:`nscodec._startup.hook`) binds :class:`NscViewerState` as the ``ViewerState`` of
``nerfstudio.scripts.viewer.run_viewer`` (nerfstudio's ``nerfstudio.viewer.viewer.Viewer``) (``ns-viewer`` only; the viewer of a training run is nerfstudio's own).
For a pipeline decoded from a file (``pipeline.nsc_path``) it:

* hides what only training has: the Pause/Resume Training buttons, the "Train Speed" and "Train Util" controls;
* replaces the "Step" line by the file's name, method, bytes on disk and decode source;
* opens every browser tab at the file's default view — a training camera that looks at the scene
  (:func:`nscodec.cameras.default_view`) — instead of nerfstudio's default pose (often inside the scene), with the
  training-camera frustums hidden (their images are placeholders; "Show Train Cams" shows them).

The model's own controls appear under "Custom Elements" as for any nerfstudio model: for a method with levels of
detail, one control serves every such method — :func:`attach_lod_controls` gives the model a slider picking the
rendered level and a text showing that level's cumulative bytes (from the decoded file's level table, or from
exporting a finalized copy, :func:`nscodec.io.lod_bytes`); :class:`nscodec.pipeline.NscPipeline` attaches them, in
training runs and decoded files alike. For any other pipeline :class:`NscViewerState` is nerfstudio's ``Viewer``
unchanged.
"""

from __future__ import annotations

import os

import numpy as np
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO, Viewer

__all__ = ["NscViewerState", "attach_lod_controls", "lod_label", "viser_pose"]


def lod_label(model, lod: int) -> str:
    """The text beside the level-of-detail slider: level, top level, and the level's cumulative file bytes when
    known."""
    top = model.num_lods - 1
    known = model.lod_bytes_cached()
    if known is None:
        return f"level {lod}/{top} (bytes: exported on first move)"
    return f"level {lod}/{top}: {known[min(lod, len(known) - 1)]:,} bytes"


def attach_lod_controls(model) -> None:
    """Give a model with levels of detail (``supports_lod`` and ``num_lods`` > 1) the viewer's level-of-detail slider
    (``model.viewer_lod``) and the read-only text with that level's cumulative bytes (``model.viewer_lod_bytes``), as
    attributes, where nerfstudio's viewer finds them. Moving the slider measures the level table once
    (:func:`nscodec.io.lod_bytes`) and renders that level (:meth:`~nscodec.core.contract.NscContract.set_lod`).
    Other models, a model that has them already, or a missing viewer: nothing is attached."""
    if not (getattr(model, "supports_lod", False) and model.num_lods > 1) or getattr(model, "viewer_lod", None) is not None:
        return
    try:
        from nerfstudio.viewer.viewer_elements import ViewerSlider, ViewerText
    except Exception:  # viewer extras missing: the model works without the controls
        return
    from nscodec.errors import NscError
    from nscodec.io import lod_bytes

    top = model.num_lods - 1

    def on_change(slider) -> None:
        try:
            lod_bytes(model)
        except NscError:  # nothing exportable yet: the label says so
            pass
        model.set_lod(int(slider.value))

    model.viewer_lod = ViewerSlider("Level of detail", top, 0, top, step=1, cb_hook=on_change,
                                    hint="render with levels 0..l of the file (a file prefix decodes them)")
    model.viewer_lod_bytes = ViewerText("Level-of-detail bytes", lod_label(model, model.lod), disabled=True,
                                        hint="cumulative .nsc bytes needed to decode this level")
    model.lod_listeners.append(lambda lod: setattr(model.viewer_lod_bytes, "value", lod_label(model, lod)))


def viser_pose(c2w) -> tuple:
    """``(wxyz, position)`` of a viser camera showing the nerfstudio camera-to-world ``c2w [3, 4]`` (OpenGL axes;
    viser looks down +z, hence the half turn about x — the inverse of nerfstudio's ``get_camera_state``)."""
    import viser.transforms as vtf

    c2w = np.asarray(c2w, dtype=np.float64)
    rot = vtf.SO3.from_matrix(c2w[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)
    return tuple(rot.wxyz), tuple(c2w[:3, 3] * VISER_NERFSTUDIO_SCALE_RATIO)


class NscViewerState(Viewer):
    """nerfstudio's ``Viewer``; view-only for a decoded ``.nsc`` (module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        path = getattr(self.pipeline, "nsc_path", None)
        if path is None:
            return
        for button in (self.pause_train, self.resume_train):
            button.visible = False
        for element in (self.control_panel._train_speed, self.control_panel._train_util):
            element.set_visible(False)
        model = self.pipeline.model
        from nscodec.io import codec_name_of

        source = "its own cameras" if type(self.pipeline.datamanager).__name__ == "CamerasDataManager" else "its dataset"
        self.stats_markdown.content = (f"**{os.path.basename(path)}** · {codec_name_of(model)} · "
                                       f"{os.path.getsize(path):,} bytes  \nview only (decoded file, {source})")
        cams = getattr(model, "viewer_cameras", None)
        if cams is not None:
            c2w = cams.camera_to_worlds[getattr(model, "viewer_default_view", 0)].cpu().numpy()
        else:  # no stored cameras: the first dataset camera
            c2w = self.pipeline.datamanager.train_dataset.cameras.camera_to_worlds[0].cpu().numpy()
        wxyz, position = viser_pose(c2w)

        def open_at_default_view(client) -> None:
            with client.atomic():
                client.camera.position = position
                client.camera.wxyz = wxyz

        self.viser_server.on_client_connect(open_at_default_view)

    def init_scene(self, *args, **kwargs) -> None:
        """nerfstudio's scene set-up; for a decoded file the training-camera frustums start hidden ("Show Train Cams"
        brings them back): their images are placeholders, and the frustum of the view the session opens at would
        sit in front of the scene."""
        super().init_scene(*args, **kwargs)
        if getattr(self.pipeline, "nsc_path", None) is not None and self.hide_images.visible:
            self.set_camera_visibility(False)
            self.toggle_cameravis_button()

    def make_stats_markdown(self, step, res) -> str:
        """nerfstudio's "Step / Resolution" line, kept to the resolution for a decoded file (no training steps)."""
        if getattr(self.pipeline, "nsc_path", None) is None or not hasattr(self, "stats_markdown"):
            return super().make_stats_markdown(step, res)
        head = self.stats_markdown.content.split("  \n")[:2]
        if res is None:
            return "  \n".join(head)
        return "  \n".join(head + [f"Resolution: {res}"])
