"""The model ↔ ``.nsc`` contract every nscodec method implements (:class:`NscContract`, a part of
:class:`nscodec.core.model_base.NscModel`).

========================================  =====================================================================
``nsc_sections()``                        encode the model into sections (its compression); never mutates it
``load_nsc_sections(nsc)``                decode sections into an already-built model (a whole file or a prefix)
``finalize_for_storage()``                round the model in place to exactly what its file stores (idempotent)
``export_blocker()``                      why the model cannot be exported yet (None: it can)
``decoded_tensors()``                     what its decoder networks compute from the file (thread-count checks)
``supports_lod``, ``num_lods``            whether a file prefix decodes a coarser level, and how many levels
``set_lod(l)``, ``lod``                   render level ``l``; the level rendered
========================================  =====================================================================

Export never mutates the live model: :meth:`NscContract.encode` finalizes a copy (:meth:`NscContract.finalized_copy`),
unless the model is already finalized — the last training step finalizes it once (``finalize_at_last_step``), and a
model decoded from a file is finalized by construction (:meth:`NscContract.on_decoded`). Every decoder network runs
under :meth:`NscContract.decoding` (a fixed intra-op thread count, :mod:`nscodec.coding.determinism`), so a file
decodes bit-identically everywhere. The file around the sections — header, viewer cameras, level table — is
:mod:`nscodec.io`'s.
"""

from __future__ import annotations

import abc
import copy
from typing import Any, Callable, ClassVar, Dict, List, Optional

import torch
from torch import Tensor

from nscodec.coding.container import NscFile, Section, encode_nsc, read_nsc
from nscodec.coding.determinism import fixed_threads
from nscodec.errors import NscError

__all__ = ["NscContract"]


class NscContract:
    """The ``.nsc`` side of a model (module docstring): abstract :meth:`nsc_sections` / :meth:`load_nsc_sections`,
    finalizing and encoding, and the level-of-detail state. :meth:`init_contract` sets that state up (the model's
    ``populate_modules`` calls it); :meth:`on_decoded` marks a model decoded from a file."""

    #: a file prefix ending on a level boundary decodes a coarser level (see :mod:`nscodec.coding.lod`)
    supports_lod: ClassVar[bool] = False
    #: the last training step rounds the model in place to its file (False: a post-hoc codec, chosen at export)
    finalize_at_last_step: ClassVar[bool] = True

    def init_contract(self) -> None:
        """The contract's state: not finalized (a buffer, saved in checkpoints), no stored sections, every level."""
        self.register_buffer("nsc_finalized", torch.zeros((), dtype=torch.bool))
        self._lod_bytes: Optional[List[int]] = None
        self._lod_bytes_from_file = False
        self._stored_sections: Optional[List[Section]] = None  # a round-trip finalize's sections: the file itself
        self.decoded_lod = self.num_lods - 1
        """Highest level of detail whose data the model holds (less after decoding a file prefix)."""
        self._lod = self.num_lods - 1
        self.lod_listeners: List[Callable[[int], None]] = []
        """Called with the new level whenever :meth:`set_lod` changes it (the viewer's controls listen)."""
        self.export_meta: Optional[Dict[str, Any]] = None
        """Metadata ``ns-export compressed`` records for this model (set by :class:`nscodec.pipeline.NscPipeline`);
        :func:`nscodec.io.lod_bytes` measures a file with it, so its byte counts are those of the exported file."""

    # ------------------------------------------------------------------------------- contract: the subclass
    @abc.abstractmethod
    def nsc_sections(self) -> List[Section]:
        """The model's ``.nsc`` sections (levels of detail coarse to fine). Called on a finalized model; must not
        change it. Raises NscError when it cannot be encoded."""

    @abc.abstractmethod
    def load_nsc_sections(self, nsc: NscFile) -> None:
        """Decode ``nsc`` (a whole file or, for level-of-detail codecs, a prefix) into this freshly built model.
        Sets :attr:`decoded_lod` where it decodes fewer levels. Raises NscFormatError on missing, extra or
        malformed sections."""

    def finalize_for_storage(self) -> None:
        """Round the model in place to exactly what its file stores, so a file written afterwards decodes to this
        very model (idempotent). Default: a round trip through the codec (encode, decode into ``self``), right for a
        post-hoc codec; its sections are kept and are the file (re-encoding a decoded post-hoc model need not give back
        the same bits). Methods that quantize in training override it with their in-place rounding."""
        sections = self.nsc_sections()
        self.load_nsc_sections(read_nsc(encode_nsc("roundtrip", {}, sections)))  # a container of its sections only
        self._stored_sections = sections

    def export_blocker(self) -> Optional[str]:
        """Why the model cannot be exported (finalized) yet, e.g. still in a pretraining stage; None when it can."""
        return None

    def decoded_tensors(self) -> Dict[str, Tensor]:
        """The tensors the model's decoder networks compute from its stored values (planes, tables), evaluated as
        rendering uses them. Empty for codecs without a decoder network."""
        return {}

    def on_lod_changed(self) -> None:
        """Hook: the rendered level (:attr:`lod`) changed."""

    # -------------------------------------------------------------------------------- finalize and encode
    @property
    def finalized(self) -> bool:
        """True when the model holds exactly what its file stores (saved in checkpoints)."""
        return bool(self.nsc_finalized)

    @property
    def decoded_from_file(self) -> bool:
        """True for a model built by :func:`nscodec.io.load_model` (its level table and cameras are the file's)."""
        return self._lod_bytes_from_file

    @torch.no_grad()
    def finalize(self) -> None:
        """:meth:`finalize_for_storage` in place and mark the model finalized.

        Raises:
            NscError: :meth:`export_blocker` names a reason the model cannot be stored yet.
        """
        blocker = self.export_blocker()
        if blocker is not None:
            raise NscError(blocker)
        self._stored_sections = None
        self.finalize_for_storage()
        self.nsc_finalized.fill_(True)

    def finalized_copy(self) -> "NscContract":
        """A finalized deep copy (``self`` itself when already finalized); the live model, its parameters, buffers and
        the global RNG are left untouched. Viewer controls are shared, not copied.

        Raises:
            NscError: as :meth:`finalize`.
        """
        if self.finalized:
            return self
        blocker = self.export_blocker()
        if blocker is not None:
            raise NscError(blocker)
        with _preserved_rng(self):
            clone = copy.deepcopy(self, _copy_memo(self))
            clone.finalize()
        return clone

    def encode(self) -> List[Section]:
        """The sections of this model's file, from a finalized copy unless the model is finalized (never mutates
        the model nor consumes its RNG).

        Raises:
            NscError: the model cannot be exported yet, or its sections cannot be encoded.
        """
        model = self.finalized_copy()
        if model._stored_sections is not None:
            return list(model._stored_sections)
        with _preserved_rng(self), torch.no_grad():
            return model.nsc_sections()

    def decoding(self):
        """Context manager every decoder network runs under: a fixed intra-op thread count, so the decoded tensors
        are bit-identical on the sender's and every receiver's machine."""
        return fixed_threads()

    def on_decoded(self, sections: List[Section], lod_bytes: List[int]) -> None:
        """Called by :func:`nscodec.io.load_model` after :meth:`load_nsc_sections`: the model is the file (finalized),
        its codec ``sections`` are what exporting it again writes (re-encoding would need what a file does not carry,
        e.g. the trained entropy models behind its CDF tables), ``lod_bytes`` its level table (cumulative bytes), and it
        renders the finest level it decoded."""
        self.nsc_finalized.fill_(True)
        self._stored_sections = list(sections)
        self._lod_bytes = [int(b) for b in lod_bytes]
        self._lod_bytes_from_file = True
        self.set_lod(self.decoded_lod)

    # --------------------------------------------------------------------------------------- levels of detail
    @property
    def num_lods(self) -> int:
        """Number of levels of detail (1 for codecs without them)."""
        return 1

    @property
    def lod(self) -> int:
        """The rendered level of detail (levels ``0..lod`` are used)."""
        return self._lod

    def set_lod(self, lod: int) -> None:
        """Render at level of detail ``lod`` (clamped to :attr:`decoded_lod`, the finest level the model holds).

        Raises:
            ValueError: ``lod`` outside ``[0, num_lods)``.
        """
        if not 0 <= int(lod) < self.num_lods:
            raise ValueError(f"level of detail must be in [0, {self.num_lods - 1}], got {lod}")
        self._lod = min(int(lod), self.decoded_lod)
        self.on_lod_changed()
        for listener in self.lod_listeners:  # e.g. the viewer's level-of-detail controls
            listener(self._lod)

    def lod_bytes_cached(self) -> Optional[List[int]]:
        """The cumulative bytes of each level when known: the decoded file's level table, or what
        :func:`nscodec.io.lod_bytes` measured since the last training step; None otherwise."""
        return self._lod_bytes

    def remember_lod_bytes(self, lod_bytes: List[int]) -> None:
        """Keep a measured level table (:func:`nscodec.io.lod_bytes`) until the next training step."""
        self._lod_bytes = [int(b) for b in lod_bytes]

    def begin_training_step(self) -> None:
        """This step changes the model: it is no longer finalized, and a measured level table is stale."""
        if self.finalized:
            self.nsc_finalized.fill_(False)
            self._stored_sections = None
        if not self._lod_bytes_from_file:
            self._lod_bytes = None


def _copy_memo(model: torch.nn.Module) -> Dict[int, Any]:
    """``deepcopy`` memo for :meth:`NscContract.finalized_copy`: the copy shares the viewer controls (their handles hold
    the viewer's server, threads and locks, which cannot be copied), and tensors that are results of this step's
    autograd graph (e.g. decoded planes held as plain attributes) are copied detached — deepcopy refuses non-leaf
    tensors, and the finalized copy recomputes them anyway."""
    try:
        from nerfstudio.viewer.viewer_elements import ViewerElement
    except Exception:  # viewer extras missing: no elements to share
        ViewerElement = ()  # noqa: N806
    memo: Dict[int, Any] = {}
    for mod in model.modules():
        for v in vars(mod).values():
            if ViewerElement and isinstance(v, ViewerElement):
                memo[id(v)] = v
            elif isinstance(v, Tensor) and v.grad_fn is not None:
                memo[id(v)] = v.detach().clone()
    return memo


class _preserved_rng:
    """Context manager: the global torch RNG (CPU and the model's CUDA device) is restored on exit, so exporting or
    evaluating a copy never changes the random numbers training draws next."""

    def __init__(self, model: torch.nn.Module) -> None:
        dev = next((t.device for t in model.buffers()), torch.device("cpu"))
        self._devices = [dev.index or 0] if dev.type == "cuda" else []

    def __enter__(self):
        self._ctx = torch.random.fork_rng(devices=self._devices)
        return self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
