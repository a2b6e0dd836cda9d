"""Adds ``ns-export compressed`` to nerfstudio's exporter, and ``.nsc`` files to ``ns-eval`` / ``ns-viewer``,
without editing site-packages.

nerfstudio 1.1.5's ``ns-export`` builds its subcommand union (``nerfstudio.scripts.exporter.Commands``) at
module import and offers no plugin hook. The wheel installs ``nscodec_startup.pth``, which Python's ``site``
module executes at interpreter start; it imports this module, which registers a :class:`sys.meta_path` finder
for four module names (the exporter, train, eval and viewer scripts). When ``nerfstudio.scripts.exporter`` is
imported, the finder:

1. makes ``import open3d`` at the exporter's top level safe: open3d 0.20 needs the system library
   ``libusb-1.0``; if open3d cannot be loaded, a stand-in module is bound whose first attribute access raises
   one clear ``ImportError`` (so ``pointcloud``/``tsdf``/``poisson`` report what is missing, while
   ``cameras``, ``gaussian-splat`` and ``compressed`` work);
2. after the module ran, appends our ``compressed`` subcommand to ``Commands`` (see
   :func:`nscodec.tools.export.register_with_exporter`).

The same finder patches ``nerfstudio.scripts.eval``, ``nerfstudio.scripts.viewer.run_viewer`` and
``nerfstudio.scripts.render`` after they run: their module-level name ``eval_setup`` is rebound to a function of
:mod:`nscodec.pipeline` that hands ``config.yml`` paths to nerfstudio's own ``eval_setup`` unchanged and decodes
``.nsc`` files (``ns-eval``/``ns-viewer``/``ns-render … --load-config scene.nsc``; viewing and rendering need only
the file, :mod:`nscodec.cameras`). ``ns-viewer``'s ``ViewerState`` becomes :class:`nscodec.viewer.NscViewerState`
(view-only for decoded files), and ``ns-render`` gets the ffmpeg binary of ``imageio-ffmpeg`` when the system has
none.

In every patched script (and ``nerfstudio.scripts.train``) the console entry point ``entrypoint`` is wrapped so
that an nscodec error — a bad dataset, a malformed ``.nsc``, a missing file the user named — ends the command with
one line, ``ns-<tool>: error: <message>`` and exit status 2, instead of a traceback. Other exceptions are left to
nerfstudio as before.

Cost at start-up: one small import, no torch. Disable with ``NSCODEC_NO_STARTUP_HOOK=1``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

_EXPORTER = "nerfstudio.scripts.exporter"
_VIEWER = "nerfstudio.scripts.viewer.run_viewer"
_RENDER = "nerfstudio.scripts.render"
#: modules whose ``eval_setup`` is rebound to accept ``.nsc`` files, and to which function of nscodec.pipeline:
#: ns-eval needs the dataset's images; ns-viewer opens a file on its own cameras; ns-render uses the dataset when
#: found, else the file's cameras
_EVAL_SETUP_USERS = {"nerfstudio.scripts.eval": "eval_setup_any", _VIEWER: "eval_setup_view", _RENDER: "eval_setup_render"}
_TRAIN = "nerfstudio.scripts.train"
_TARGETS = (_EXPORTER, _TRAIN) + tuple(_EVAL_SETUP_USERS)
#: console-script name of each target, for the one-line error
_TOOL = {_EXPORTER: "ns-export", _TRAIN: "ns-train", "nerfstudio.scripts.eval": "ns-eval", _VIEWER: "ns-viewer",
         _RENDER: "ns-render"}


def _bundled_ffmpeg() -> None:
    """Give ns-render an ffmpeg on a fresh machine (:func:`nscodec.compat.ffmpeg.ensure_ffmpeg`)."""
    try:
        from nscodec.compat.ffmpeg import ensure_ffmpeg

        if ensure_ffmpeg() is None:
            sys.stderr.write("nscodec: no ffmpeg for videos: pip install imageio-ffmpeg (or apt-get install ffmpeg)\n")
    except Exception as err:  # never break stock ns-render because of us
        sys.stderr.write(f"nscodec: no ffmpeg for videos ({type(err).__name__}: {err})\n")


def _one_line_errors(module) -> None:
    """Wrap ``module.entrypoint`` so an :class:`nscodec.errors.NscError` exits with one line (status 2)."""
    inner = getattr(module, "entrypoint", None)
    if inner is None or getattr(inner, "_nscodec_wrapped", False):
        return
    tool = _TOOL.get(module.__name__, module.__name__)

    def entrypoint(*args, **kwargs):
        from nscodec.errors import NscError

        try:
            return inner(*args, **kwargs)
        except NscError as err:
            sys.stderr.write(f"{tool}: error: {' '.join(str(err).split())}\n")
            raise SystemExit(2) from None

    entrypoint._nscodec_wrapped = True  # type: ignore[attr-defined]
    entrypoint.__doc__ = inner.__doc__
    module.entrypoint = entrypoint


class _Open3dShim(types.ModuleType):
    """Stand-in for an ``open3d`` that cannot be loaded: tries the real import on first use, else raises."""

    def __init__(self, reason: str) -> None:
        super().__init__("open3d")
        self.__dict__["_nscodec_reason"] = reason

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            "open3d could not be loaded (" + self.__dict__["_nscodec_reason"] + "). The point-cloud and mesh "
            "exports need it: on Debian/Ubuntu install the system library with `apt-get install libusb-1.0-0`. "
            "`ns-export compressed` does not need open3d."
        )


def _install_open3d_shim() -> None:
    if "open3d" in sys.modules:
        return
    before = set(sys.modules)
    try:
        import open3d  # noqa: F401  (the real one, if it loads)
    except (ImportError, OSError) as err:  # libusb-1.0.so.0 missing, or no open3d at all
        for name in set(sys.modules) - before:
            if name == "open3d" or name.startswith("open3d."):
                del sys.modules[name]
        sys.modules["open3d"] = _Open3dShim(str(err).splitlines()[0] if str(err) else type(err).__name__)


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        if module.__name__ == _TRAIN:
            self._inner.exec_module(module)
            _one_line_errors(module)
            return
        if module.__name__ in _EVAL_SETUP_USERS:
            self._inner.exec_module(module)
            _one_line_errors(module)
            try:
                import nscodec.pipeline as pipeline
            except Exception as err:  # never break stock ns-eval / ns-viewer / ns-render because of us
                sys.stderr.write(f"nscodec: .nsc files cannot be opened here ({type(err).__name__}: {err})\n")
                return
            module.eval_setup = getattr(pipeline, _EVAL_SETUP_USERS[module.__name__])
            if module.__name__ == _VIEWER:
                try:
                    from nscodec.viewer import NscViewerState
                except Exception as err:  # never break stock ns-viewer because of us
                    sys.stderr.write(f"nscodec: view-only viewer unavailable ({type(err).__name__}: {err})\n")
                else:
                    module.ViewerState = NscViewerState  # view-only for decoded files, nerfstudio's own otherwise
            if module.__name__ == _RENDER:
                _bundled_ffmpeg()
            if module.__name__ == "nerfstudio.scripts.eval":
                pipeline.add_data_option(module)  # `ns-eval --load-config scene.nsc --data /path/to/scene`
            return
        _install_open3d_shim()
        self._inner.exec_module(module)
        _one_line_errors(module)
        pending = sys.modules.get("nscodec.tools.export")
        if pending is not None and not hasattr(pending, "register_with_exporter"):
            return  # nscodec.tools.export itself is importing the exporter; it registers when it finishes loading
        try:
            from nscodec.tools.export import register_with_exporter
        except Exception as err:  # never break stock ns-export because of us
            sys.stderr.write(f"nscodec: `ns-export compressed` unavailable ({type(err).__name__}: {err})\n")
            return
        register_with_exporter(module)


class _ExporterFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader)
        return spec


def install() -> None:
    """Register the finder once (idempotent). Modules already imported are not patched."""
    if os.environ.get("NSCODEC_NO_STARTUP_HOOK"):
        return
    if any(isinstance(f, _ExporterFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _ExporterFinder())


install()
