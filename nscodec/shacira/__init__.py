"""SHACIRA (Girish, Shrivastava, Gupta 2023, ICCV): end-to-end compressed hash-grid radiance fields with levels
of detail. :mod:`.latents` (soft rounding, Eq. 4), :mod:`.field` (hash grid from decoded latents, Eqs. 1–3, 7),
:mod:`.model` (``ShaciraModelConfig`` / ``ShaciraModel``: training objective Eq. 9, ``.nsc`` codec, LOD)."""
