"""Optimizer configs for nerfstudio's ``Optimizers`` (``config.optimizers[group]["optimizer"]``).

:class:`FusedAdamOptimizerConfig` is nerfstudio's ``AdamOptimizerConfig`` with torch's fused Adam kernel (one
pass over each parameter for the whole update, on CPU and CUDA) instead of the per-op ``foreach`` path. On the
TensoRF base its dense VM planes (~5 M parameters) are updated every step, and there the fused update is several
times cheaper (measured in ``docs/benchmarks.md``). The update rule is the same Adam
(Kingma & Ba 2015); results differ from the unfused path only by float rounding (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

import torch
from nerfstudio.engine.optimizers import AdamOptimizerConfig, OptimizerConfig

_FUSED_DEVICES = ("cpu", "cuda")


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """``torch.optim.Adam(fused=True)`` where every parameter is a dense floating tensor on CPU or CUDA, else the
    default implementation (so the config never fails on a device torch has no fused kernel for)."""

    def setup(self, params) -> torch.optim.Optimizer:
        params = list(params)
        tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
        fused = bool(tensors) and all(t.is_floating_point() and not t.is_sparse and t.device.type in _FUSED_DEVICES for t in tensors)
        return torch.optim.Adam(params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=fused or None)


@dataclass
class SparseAdamOptimizerConfig(OptimizerConfig):
    """Lazy Adam (:class:`FusedSparseAdam`, ``torch.optim.SparseAdam``'s update): updates only the grid rows a batch
    touched, so a step costs what the batch read, not the whole table (used by VQ-AD's ``m × 2^b`` logits)."""

    _target: type = field(default_factory=lambda: FusedSparseAdam)


def _sparse_adam_kernel():
    """The compiled lazy-Adam kernel, or None where torch's step runs (:func:`nscodec._backend.kernel`)."""
    from nscodec._backend import kernel

    return kernel("sparse_adam")


def _coalesced(grad: torch.Tensor) -> torch.Tensor:
    """``grad.coalesce()``, without its sort where the rows are already strictly increasing: autograd's gradient
    accumulation clones a sparse gradient and drops its coalesced flag, although the grid kernels emit one sorted row
    per vertex (:func:`nscodec.grid.dense_level_vertex_grads`). Checking the order is O(nnz); a sort is not."""
    if grad.is_coalesced():
        return grad
    idx = grad._indices()
    if idx.shape[0] == 1 and (idx.shape[1] < 2 or bool((idx[0, 1:] > idx[0, :-1]).all())):
        return torch.sparse_coo_tensor(idx, grad._values(), grad.shape, is_coalesced=True)
    return grad.coalesce()


class FusedSparseAdam(torch.optim.SparseAdam):
    """``torch.optim.SparseAdam`` with its row update in one fused C++ pass (``nscodec/csrc/sparse_adam.cpp``) for
    2-D float32 CPU parameters: the same lazy Adam (Kingma & Ba 2015, moments and parameter of the touched rows only,
    bias correction by the parameter's step count), without the sparse-tensor ops (``sparse_mask``, a second
    coalesce, sparse ``add_``) that made torch's step ~20 ms per VQ-AD iteration. Other parameters, and every
    parameter where the kernel is unavailable (:mod:`nscodec._backend`), take torch's own step. Results equal
    torch's up to float rounding (tested against it in ``tests/test_kernel_twins.py``).
    """

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102  (torch.optim.SparseAdam.step)
        kernel = _sparse_adam_kernel()
        if kernel is None or any(g.get("maximize", False) for g in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("SparseAdam does not support dense gradients, please consider Adam instead")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                grad = _coalesced(p.grad)
                values = grad._values()
                if values.numel() == 0:
                    continue
                t = state["step"]
                step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                if p.dim() == 2 and p.dtype == torch.float32 and p.device.type == "cpu" and p.is_contiguous():
                    kernel.sparse_adam_step_(p, state["exp_avg"], state["exp_avg_sq"], grad._indices()[0].contiguous(),
                                             values.contiguous(), beta1, beta2, group["eps"], step_size)
                    # written through the data pointer: bump the version counters as an in-place torch op would
                    # (caches keyed on them, e.g. VQ-AD's hard indices, must see the change)
                    torch.autograd.graph.increment_version([p, state["exp_avg"], state["exp_avg_sq"]])
                else:
                    torch.optim._functional.sparse_adam([p], [grad], [state["exp_avg"]], [state["exp_avg_sq"]], [t],
                                                        eps=group["eps"], beta1=beta1, beta2=beta2, lr=group["lr"],
                                                        maximize=False)
        return loss


def reset_param_group(
    attrs, group: str = "encodings", max_steps: Optional[int] = None, keep_state: bool = False
) -> None:
    """Re-create the optimizer (and scheduler) of one nerfstudio param group, e.g. after its tensors were replaced
    (TensoRF's plane upsampling) or a training stage began (ectensorf's stage switch).

    Args:
        attrs: nerfstudio ``TrainingCallbackAttributes`` (its ``optimizers`` and ``pipeline``).
        group: the param group's name in the trainer config's ``optimizers``.
        max_steps: the new scheduler decays over this many steps instead of its config's ``max_steps``.
        keep_state: keep the optimizer (same tensors, Adam moments kept) and re-create only the scheduler, which
            restarts from the configured initial learning rate.

    Raises:
        ValueError: ``attrs`` has no optimizers or pipeline (a callback built outside a trainer), or no such group.
    """
    if attrs.optimizers is None or attrs.pipeline is None:
        raise ValueError("reset_param_group needs the trainer's optimizers and pipeline")
    if group not in attrs.optimizers.config:
        raise ValueError(f"reset_param_group: no param group {group!r} in the optimizer config")
    conf = attrs.optimizers.config[group]
    if not keep_state:
        params = attrs.pipeline.get_param_groups()[group]
        attrs.optimizers.optimizers[group] = conf["optimizer"].setup(params=params)
    if conf["scheduler"]:
        sched = conf["scheduler"] if max_steps is None else replace(conf["scheduler"], max_steps=max(1, max_steps))
        optimizer = attrs.optimizers.optimizers[group]
        for pg in optimizer.param_groups:  # restart from the configured rate (LambdaLR scales initial_lr)
            pg["initial_lr"] = pg["lr"] = conf["optimizer"].lr
        attrs.optimizers.schedulers[group] = sched.setup().get_scheduler(optimizer=optimizer, lr_init=conf["optimizer"].lr)
