"""Modality drop-out, done the TorchIO way: first draw the parameters, then apply them.

* :func:`draw_drop` draws which contrasts to keep.  With n contrasts available it draws k
  uniformly from {0, …, n−1} and drops k of them at random, so "all present" has probability
  1/n and the all-missing code is impossible.  The result is the kept-code, a tuple of 0/1 in
  the model's contrast order; record it to reproduce the sample.  ``single_p`` > 0 first keeps
  one available contrast alone (uniformly) with that probability: with the uniform draw a
  single contrast is kept only 1/n² of the time, which can leave the weakest single-contrast
  codes (T1w alone) unlearned.
* :func:`apply_code` is the deterministic transform: it zero-fills the channels of every
  contrast whose code bit is 0 (the normalised background is −1, so 0 marks "missing").  It
  works on a batch with one code per sample.

Example::

    rng = numpy.random.default_rng(seed)
    code = draw_drop([True, True, True, False, True], rng)      # e.g. (1, 0, 1, 0, 0)
    x_missing = apply_code(x_full, [code], slices_per_contrast=3)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def draw_drop(available: Sequence[bool], rng: np.random.Generator,
              single_p: float = 0.0) -> tuple[int, ...]:
    """Draw the kept-code for one sample: ``available`` (K flags) → K bits, at least one 1.

    ``single_p`` is the probability of keeping exactly one available contrast (chosen
    uniformly) instead of the uniform-k draw; with 0 (the default, as the authors) no extra
    random number is drawn, so the stream of draws is the authors' scheme exactly.
    Raises ``ValueError`` when no contrast is available or ``single_p`` is outside [0, 1].
    """
    available = [bool(a) for a in available]
    present = np.flatnonzero(available)
    if present.size == 0:
        raise ValueError("modality drop-out needs at least one available contrast")
    if not 0.0 <= single_p <= 1.0:
        raise ValueError(f"single_p must lie in [0, 1], got {single_p}")
    if single_p > 0 and rng.random() < single_p:
        kept = int(rng.choice(present))
        return tuple(int(i == kept) for i in range(len(available)))
    n_drop = int(rng.integers(0, present.size))  # uniform in {0, …, n−1}
    dropped = set(rng.choice(present, size=n_drop, replace=False).tolist())
    return tuple(int(a and i not in dropped) for i, a in enumerate(available))


def channel_mask(code: torch.Tensor | np.ndarray | Sequence, slices_per_contrast: int):
    """Per-channel 0/1 mask ``(B, K·s)`` from codes ``(B, K)`` (or ``(K,)`` → ``(1, K·s)``)."""
    if isinstance(code, torch.Tensor):
        code = code.reshape(-1, code.shape[-1])
        return code.repeat_interleave(slices_per_contrast, dim=1)
    code = np.asarray(code)
    code = code.reshape(-1, code.shape[-1])
    return np.repeat(code, slices_per_contrast, axis=1)


def apply_code(x: torch.Tensor | np.ndarray, code, slices_per_contrast: int = 3):
    """Zero the channels of the contrasts whose code bit is 0.

    ``x (B, K·s, H, W)`` (tensor or array), ``code (B, K)`` per sample or ``(K,)`` for all →
    a new tensor/array of ``x``'s type and shape (``x`` is not modified).
    """
    if isinstance(x, torch.Tensor):
        code = torch.as_tensor(code, device=x.device)
    mask = channel_mask(code, slices_per_contrast)
    if x.ndim != 4 or mask.shape[1] != x.shape[1] or mask.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"cannot apply codes of shape {tuple(np.shape(code))} with {slices_per_contrast} slices "
            f"per contrast to input of shape {tuple(x.shape)}"
        )
    mask = mask[:, :, None, None]
    if isinstance(x, torch.Tensor):
        return x * mask.to(x.dtype)
    return x * mask.astype(x.dtype)
