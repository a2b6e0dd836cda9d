"""TensoRF-VM field on packed samples, reusing nerfstudio's encodings and field head.

TensoRF (Chen et al. 2022, "TensoRF: Tensorial Radiance Fields", Sec. 3.2, VM decomposition): density and
appearance are sums of vector-matrix products ``sum_r v_r^X ∘ M_r^{Y,Z} + ...``. We reuse nerfstudio's
:class:`~nerfstudio.field_components.encodings.TensorVMEncoding` and
:class:`~nerfstudio.fields.tensorf_field.TensoRFField` unchanged in their parameters (so checkpoints of stock
``ns-train tensorf`` load into ours) and add flat ``[S, 3]`` entry points that skip ``RaySamples`` overhead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nerfstudio.field_components.encodings import NeRFEncoding, TensorVMEncoding
from nerfstudio.fields.tensorf_field import TensoRFField
from torch import Tensor

from nscodec.grid import vm_encode


class ResizableVMEncoding(TensorVMEncoding):
    """``TensorVMEncoding`` whose grids follow the resolution of a loaded state dict, evaluated by the fused VM kernel.

    Coarse-to-fine training changes the plane size (``plane_coef [3, C, N, N]``, ``line_coef [3, C, N, 1]``); a
    model built at the initial resolution resizes itself when a checkpoint at another resolution is loaded,
    whatever path loads it (``ns-eval``, ``ns-viewer``, ``--load-dir``, init-from a stock checkpoint).

    :meth:`forward` runs :func:`nscodec.grid.vm_encode` (the fused CPU kernel on float32 CPU tensors; nerfstudio's
    ``grid_sample`` formulation, its reference twin, elsewhere): the same features, ``[..., 3]`` → ``[..., 3C]``.
    """

    def forward(self, in_tensor: Tensor) -> Tensor:
        """Features ``[..., 3C]`` at positions ``[..., 3]`` in ``[-1, 1]^3`` (no gradient to the positions)."""
        flat = in_tensor.reshape(-1, 3)
        return vm_encode(flat, self.plane_coef, self.line_coef).reshape(*in_tensor.shape[:-1], -1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401 (torch hook)
        key = prefix + "plane_coef"
        if key in state_dict and state_dict[key].shape != self.plane_coef.shape:
            shape = state_dict[key].shape
            self.num_components = int(shape[1])
            self.plane_coef = torch.nn.Parameter(torch.empty(shape, dtype=self.plane_coef.dtype))
            self.line_coef = torch.nn.Parameter(torch.empty(state_dict[prefix + "line_coef"].shape))
            self.resolution = int(shape[-1])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class PackedTensoRFField(TensoRFField):
    """TensoRF-VM field evaluated on flat sample lists.

    Args:
        aabb: ``[2, 3]`` scene box (world units); positions are normalised to ``[-1, 1]^3`` inside it.
        resolution: initial plane/line resolution ``N``.
        num_den_components, num_color_components: VM components per plane ``C_sigma``, ``C_c``.
        appearance_dim: output size of the appearance basis matrix ``B`` (TensoRF Eq. 4).
        density_init_scale: std of the initial density factors; small values start from (nearly) empty
            space, as TensoRF's shifted softplus does, instead of ReLU fog everywhere.
    """

    def __init__(
        self,
        aabb: Tensor,
        resolution: int,
        num_den_components: int = 16,
        num_color_components: int = 48,
        appearance_dim: int = 27,
        density_init_scale: float = 0.1,
    ) -> None:
        super().__init__(
            aabb,
            feature_encoding=NeRFEncoding(in_dim=appearance_dim, num_frequencies=2, min_freq_exp=0, max_freq_exp=2),
            direction_encoding=NeRFEncoding(in_dim=3, num_frequencies=2, min_freq_exp=0, max_freq_exp=2),
            density_encoding=ResizableVMEncoding(resolution=resolution, num_components=num_den_components, init_scale=density_init_scale),
            color_encoding=ResizableVMEncoding(resolution=resolution, num_components=num_color_components),
            appearance_dim=appearance_dim,
            head_mlp_num_layers=2,
            head_mlp_layer_width=128,
            use_sh=False,
        )

    def normalize(self, positions: Tensor) -> Tensor:
        """World ``[S, 3]`` → ``[-1, 1]^3`` box coordinates."""
        lo, hi = self.aabb[0], self.aabb[1]
        return (positions - lo) / (hi - lo) * 2.0 - 1.0

    def density_at(self, positions: Tensor) -> Tensor:
        """Density ``sigma [S]`` (1 / world unit) at world positions ``[S, 3]``: ReLU of the summed VM features."""
        if positions.shape[0] == 0:
            return positions.new_zeros((0,))
        feats = self.density_encoding(self.normalize(positions))
        return F.relu(feats.sum(dim=-1))

    def rgb_at(self, positions: Tensor, directions: Tensor) -> Tensor:
        """Colour ``[S, 3]`` in [0, 1] at world positions ``[S, 3]`` seen along unit ``directions [S, 3]``."""
        if positions.shape[0] == 0:  # nerfstudio's NeRFEncoding cannot reshape an empty batch
            return positions.new_zeros((0, 3))
        feats = self.B(self.color_encoding(self.normalize(positions)))
        h = torch.cat([feats, directions, self.feature_encoding(feats), self.direction_encoding(directions)], dim=-1)
        return self.field_output_rgb(self.mlp_head(h))

    @torch.no_grad()
    def upsample(self, resolution: int) -> None:
        """Bilinearly resample both VM encodings to ``resolution`` (TensoRF's coarse-to-fine schedule)."""
        self.density_encoding.upsample_grid(resolution)
        self.color_encoding.upsample_grid(resolution)
