"""The first convolution of the network: static, or the ModDrop++ dynamic head.

Dynamic head with filter scaling (Liu et al. 2022, §2.2): a controller — a 1×1 convolution on
the binary modality code reshaped to ``(N, K, 1, 1)``, no activation — maps the K-bit code to
``u·v + v`` numbers (u input channels, v output channels; 15·48 + 48 = 768 for the default).
The first ``u·v``, row-major as ``(v, u)``, scale the static 3×3 kernels (one scale per kernel,
shared over its 3×3 positions); the last ``v`` scale the biases.  Samples with different codes
in one batch get their own filters through a grouped convolution (groups = N).  A ReLU follows
the dynamic convolution (only in the dynamic model, as in the authors' code).

Both heads take ``x (B, u, H, W)`` and a code and return ``(B, v, H, W)``; the static head
ignores the code.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def code_tensor(code: torch.Tensor | Sequence[int] | Sequence[Sequence[int]], batch: int,
                n_contrasts: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The modality code as a float tensor ``(N, K)`` with N = 1 (shared) or N = ``batch``.

    Accepts ``(K,)``, ``(1, K)`` or ``(B, K)``; anything else raises ``ValueError``.
    """
    code = torch.as_tensor(code, device=device).to(dtype)
    if code.dim() == 1:
        code = code.unsqueeze(0)
    if code.dim() != 2 or code.shape[1] != n_contrasts or code.shape[0] not in (1, batch):
        raise ValueError(
            f"the modality code must have shape ({n_contrasts},), (1, {n_contrasts}) or "
            f"({batch}, {n_contrasts}); got {tuple(code.shape)}"
        )
    return code


class StaticFirstConv(nn.Module):
    """A plain 3×3 convolution ``(B, u, H, W)`` → ``(B, v, H, W)`` (no activation)."""

    def __init__(self, in_channels: int, out_channels: int, n_contrasts: int):
        super().__init__()
        self.n_contrasts = n_contrasts
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class DynamicFirstConv(nn.Module):
    """Filter-scaling dynamic 3×3 convolution followed by ReLU (see the module docstring).

    Parameters: the static kernel ``conv.weight (v, u, 3, 3)`` and bias ``conv.bias (v,)``, and
    the controller ``controller.weight (u·v + v, K, 1, 1)``, ``controller.bias (u·v + v,)``.
    """

    def __init__(self, in_channels: int, out_channels: int, n_contrasts: int):
        super().__init__()
        self.n_contrasts = n_contrasts
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)
        self.controller = nn.Conv2d(n_contrasts, in_channels * out_channels + out_channels,
                                    kernel_size=1, bias=True)

    def scales(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel scales ``(N, v, u)`` and bias scales ``(N, v)`` for a code ``(N, K)``."""
        out_channels, in_channels = self.conv.weight.shape[:2]
        params = self.controller(code[:, :, None, None]).flatten(1)
        n_weights = out_channels * in_channels
        weight_scales = params[:, :n_weights].reshape(-1, out_channels, in_channels)
        return weight_scales, params[:, n_weights:]

    def forward(self, x: torch.Tensor, code: torch.Tensor | Sequence[int] | None) -> torch.Tensor:
        """``x (B, u, H, W)``, ``code (B, K)`` or a shared ``(K,)``/``(1, K)`` → ``(B, v, H, W)``."""
        if code is None:
            raise ValueError("the dynamic head needs the modality code of each sample")
        batch, _, height, width = x.shape
        code = code_tensor(code, batch, self.n_contrasts, device=x.device,
                           dtype=self.controller.weight.dtype)
        weight_scales, bias_scales = self.scales(code)
        weight = self.conv.weight.unsqueeze(0) * weight_scales[..., None, None]  # (N, v, u, 3, 3)
        bias = self.conv.bias.unsqueeze(0) * bias_scales  # (N, v)
        if code.shape[0] == 1:
            out = F.conv2d(x, weight[0], bias[0], padding=1)
        else:
            n, out_channels, in_channels = weight.shape[:3]
            out = F.conv2d(
                x.reshape(1, n * in_channels, height, width),
                weight.reshape(n * out_channels, in_channels, 3, 3),
                bias.reshape(n * out_channels), padding=1, groups=n,
            ).reshape(batch, out_channels, height, width)
        return F.relu(out)
