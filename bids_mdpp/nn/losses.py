"""Losses of ModDrop++: the focal loss on logits and the SSIM between feature maps.

* :class:`FocalLoss` (Lin et al. 2017) on logits ``(B, 1, H, W)`` against a lesion mask of the
  same shape (0/1, or soft labels in [0, 1])::

      p_t = p·t + (1 − p)·(1 − t),   a_t = (1 − alpha)·t + alpha·(1 − t)
      FL  = a_t · (1 − p_t)^gamma · BCE(logit, t)          (= −a_t (1 − p_t)^γ log p_t)

  ``alpha`` is the weight of the background class, as in the authors' code: alpha = 0.25 gives
  0.25 to background and 0.75 to lesion voxels.  gamma defaults to 2 (the paper; the authors'
  code used 1).  Reduced by the mean over all voxels.
* :func:`ssim` — the structural similarity of two ``(B, C, H, W)`` tensors with an 11×11
  Gaussian window (σ = 1.5), zero padding, C1 = 0.01², C2 = 0.03² (data range 1), averaged over
  all elements (batch, channels and pixels).  :class:`SSIMLoss` returns ``1 − ssim``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


class FocalLoss(nn.Module):
    """Binary focal loss on logits (see the module docstring).

    Parameters
    ----------
    gamma : float
        Focusing parameter (≥ 0; 0 gives the class-weighted cross-entropy).
    alpha : float
        Weight of the background class in [0, 1]; lesion voxels weigh ``1 − alpha``.
    reduction : str
        ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-voxel losses, the input's shape).
    """

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25, reduction: str = "mean"):
        super().__init__()
        if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"focal loss gamma must be a finite number ≥ 0, got {gamma!r}")
        if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"focal loss alpha (background weight) must lie in [0, 1], got {alpha!r}")
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` and ``target`` of the same shape, e.g. ``(B, 1, H, W)`` → a scalar."""
        if logits.shape != target.shape:
            raise ValueError(
                f"focal loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape"
            )
        logits = logits.float()
        target = target.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        prob = torch.sigmoid(logits)
        p_t = prob * target + (1 - prob) * (1 - target)
        a_t = (1 - self.alpha) * target + self.alpha * (1 - target)
        return _reduce(a_t * (1 - p_t).pow(self.gamma) * bce, self.reduction)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """A normalised 2-D Gaussian window ``(size, size)`` (float32), the outer product of 1-D ones."""
    if not (isinstance(size, int) and size >= 1 and size % 2 == 1):
        raise ValueError(f"SSIM window size must be a positive odd integer, got {size!r}")
    if not sigma > 0:
        raise ValueError(f"SSIM sigma must be positive, got {sigma!r}")
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).float()


def ssim_map(x: torch.Tensor, y: torch.Tensor, *, window_size: int = 11, sigma: float = 1.5,
             c1: float = 0.01**2, c2: float = 0.03**2) -> torch.Tensor:
    """Per-pixel SSIM ``(B, C, H, W)`` of two tensors of that shape (computed in float32)."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"SSIM needs two (B, C, H, W) tensors of the same shape; got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    x, y = x.float(), y.float()
    channels = x.shape[1]
    window = gaussian_window(window_size, sigma).to(x.device).expand(channels, 1, -1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, padding=window_size // 2, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(x: torch.Tensor, y: torch.Tensor, **options) -> torch.Tensor:
    """Mean SSIM over all elements of two ``(B, C, H, W)`` tensors (1 = identical)."""
    return ssim_map(x, y, **options).mean()


class SSIMLoss(nn.Module):
    """``1 − SSIM(x, y)`` averaged over all elements (0 for identical inputs)."""

    def __init__(self, window_size: int = 11, sigma: float = 1.5):
        super().__init__()
        gaussian_window(window_size, sigma)  # validates the options now
        self.window_size = window_size
        self.sigma = sigma

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1 - ssim(x, y, window_size=self.window_size, sigma=self.sigma)
