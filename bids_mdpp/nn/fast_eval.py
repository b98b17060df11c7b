"""Faster forms of the network's layers for evaluation without gradients (same weights, same maps).

* :func:`bn_relu` — batch norm + ReLU as one oneDNN depthwise convolution with a fused ReLU
  (one pass over memory instead of two);
* :func:`transposed_conv_as_subpixel` — the stride-2 3×3 transposed convolution as an ordinary
  2×2 convolution giving the four output phases (oneDNN has no fast bf16 transposed kernel);
* the final 1×1 convolution split over the last concatenation (in
  :meth:`bids_mdpp.nn.densenet.FCDenseNet.forward`).

They run when :func:`fast_evaluation` holds: eval mode, no gradients, and not inside
:func:`defining_modules` (which the reference path and FLOP counts use).  Importing this module
also raises oneDNN's primitive cache (:data:`ONEDNN_PRIMITIVE_CACHE`) unless the user set it.
"""
from __future__ import annotations

import contextlib
import contextvars
import os

import torch
from torch import nn
from torch.nn import functional as F

#: oneDNN keeps this many compiled primitives.  Its default, 1024, holds the ~170 primitives of
#: only ~6 of the ~60 slice shapes of a 1 mm brain, so every batch recompiled its own: ~10 % of
#: the inference time.  oneDNN reads it when it creates its first primitive, so it is set on
#: import, before any; a value in the environment wins.
ONEDNN_PRIMITIVE_CACHE = 16384
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_PRIMITIVE_CACHE))


def _fused_bn_relu_op():
    """oneDNN's convolution with a fused ReLU (``mkldnn::_convolution_pointwise``), or None.

    PyTorch's CPU builds with oneDNN register it (its compiler uses it for fusions); builds without
    it fall back to batch norm followed by ReLU.
    """
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_FUSED_BN_RELU = _fused_bn_relu_op()
_FAST_EVALUATION = contextvars.ContextVar("bids_mdpp_fast_evaluation", default=True)


@contextlib.contextmanager
def defining_modules():
    """Within this context, evaluation runs the modules as defined, without the faster forms.

    Evaluation without gradients normally runs the fused batch norm + ReLU (:func:`bn_relu`) and
    the sub-pixel form of the transposed convolutions (:func:`transposed_conv_as_subpixel`);
    the reference path (:func:`bids_mdpp.inference.predict_reference`) and FLOP counts use this.
    """
    token = _FAST_EVALUATION.set(False)
    try:
        yield
    finally:
        _FAST_EVALUATION.reset(token)


def fast_evaluation(module: nn.Module) -> bool:
    """Whether ``module`` may run its faster evaluation form: eval mode, no gradients, not disabled."""
    return not module.training and not torch.is_grad_enabled() and _FAST_EVALUATION.get()


def bn_relu(x: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
    """``relu(norm(x))`` for a batch norm in evaluation mode: ``(B, C, H, W)`` → same shape.

    Without gradients on the CPU, where oneDNN is present, the normalisation runs as a 1×1
    depthwise convolution with ReLU fused into it (scale ``γ/√(σ²+ε)`` and shift
    ``β − μ·scale`` in ``x``'s dtype): one pass over the memory instead of two, ~1.5× faster
    on the large activations of this network.  Elsewhere (and within :func:`defining_modules`)
    it is ``norm`` then an in-place ReLU.
    """
    fusable = (_FUSED_BN_RELU is not None and fast_evaluation(norm) and x.device.type == "cpu"
               and norm.running_var is not None and x.dtype in (torch.float32, torch.bfloat16))
    if not fusable:
        return torch.relu_(norm(x))
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    channels = scale.numel()
    return _FUSED_BN_RELU(x, scale.to(x.dtype).view(channels, 1, 1, 1), shift.to(x.dtype),
                          [0, 0], [1, 1], [1, 1], channels, "relu", [], "")


# Which tap of the 3-tap transposed kernel feeds output phase ``a`` (row parity) from padded input
# row ``r`` of a 2×2 window: even rows take kernel rows 2 (input row m−1) and 0 (row m), odd rows
# kernel row 1 (row m) only.
_SUBPIXEL_TAPS = {(0, 0): 2, (0, 1): 0, (1, 1): 1}


def subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """A stride-2 3×3 transposed-convolution kernel as an ordinary 2×2 convolution's kernel.

    ``weight (C_in, C_out, 3, 3)`` → ``(4·C_out, C_in, 2, 2)``, output channel ``4·c + 2·a + b``
    being phase ``(a, b)`` (row and column parity) of output channel ``c``, the order
    :func:`torch.nn.functional.pixel_shuffle` uses.
    """
    c_in, c_out = weight.shape[:2]
    phases = weight.new_zeros(c_out, 2, 2, c_in, 2, 2)
    for (a, r), ky in _SUBPIXEL_TAPS.items():
        for (b, c), kx in _SUBPIXEL_TAPS.items():
            phases[:, a, b, :, r, c] = weight[:, :, ky, kx].t()
    return phases.reshape(4 * c_out, c_in, 2, 2)


def transposed_conv_as_subpixel(x: torch.Tensor, weight: torch.Tensor,
                                bias: torch.Tensor | None) -> torch.Tensor:
    """``conv_transpose2d(x, weight, bias, stride=2)`` for a 3×3 kernel, via an ordinary convolution.

    ``x (B, C_in, h, w)`` → ``(B, C_out, 2h+1, 2w+1)``.  A 2×2 convolution (padding 1) computes the
    four output phases as ``4·C_out`` channels of size ``(h+1, w+1)``, which are interleaved into
    the output (one strided copy).  Exact in fp32 up to summation order; it runs as a plain oneDNN
    convolution, in bf16 under CPU autocast, where the transposed one has no fast kernel.  The
    output keeps ``x``'s memory format (channels_last stays channels_last).
    """
    if weight.shape[2:] != (3, 3):
        raise ValueError(f"expected a 3×3 transposed kernel, got {tuple(weight.shape)}")
    kernel = subpixel_weight(weight)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if channels_last:
        kernel = kernel.contiguous(memory_format=torch.channels_last)
    phases = F.conv2d(x, kernel, None if bias is None else bias.repeat_interleave(4), padding=1)
    batch, channels4, height, width = phases.shape
    channels = channels4 // 4
    layout = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((batch, channels, 2 * height, 2 * width), dtype=phases.dtype,
                      device=phases.device, memory_format=layout)
    out.unflatten(2, (height, 2)).unflatten(4, (width, 2)).copy_(
        phases.unflatten(1, (channels, 2, 2)).permute(0, 1, 4, 2, 5, 3))
    return out[:, :, :-1, :-1]
