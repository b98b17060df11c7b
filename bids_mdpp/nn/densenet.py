"""The 2.5D FC-DenseNet ("Tiramisu", Jégou et al. 2017) of Zhang et al. (MICCAI 2019).

The default configuration is FC-DenseNet-57 as used by ModDrop++ (Liu et al., MICCAI 2022):
dense blocks of 4 layers (5 down, a 4-layer bottleneck, 5 up), growth rate 12, a first 3×3
convolution to 48 channels, ~1.38 M parameters.

Input: ``(B, K·s, H, W)`` — for each of the K contrasts, ``s`` adjacent slices (``s = 3``:
``[i−1, i, i+1]``), contrast-major.  Output: lesion logits ``(B, 1, H, W)``; the probability is
``sigmoid(logit)``.  Any H×W works: each transposed convolution is centre-cropped to the size of
its skip connection.

The first layer is either a static 3×3 convolution or the ModDrop++ dynamic head
(:mod:`bids_mdpp.nn.dynamic_head`), chosen by :attr:`NetworkConfig.dynamic_head`.

Public API::

    config = NetworkConfig(n_contrasts=5, dynamic_head=True)       # FC-DenseNet-57
    net = FCDenseNet(config)   # or bids_mdpp.nn.build_network(dict_or_config)
    logits = net(x, code)                                          # (B, 1, H, W)
    logits, features = net(x, code, return_features=True)          # features (B, 48, H, W)

``code`` is the binary modality code ``(B, K)`` (or ``(K,)``/``(1, K)`` for the whole batch); the
static network ignores it.  ``features`` is the first layer's output (after the dynamic head's
ReLU), the map the intra-subject co-training compares.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from bids_mdpp.nn.dynamic_head import DynamicFirstConv, StaticFirstConv
from bids_mdpp.nn.fast_eval import bn_relu, fast_evaluation, transposed_conv_as_subpixel


@dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of the FC-DenseNet; the defaults are the authors' FC-DenseNet-57.

    Attributes
    ----------
    n_contrasts : int
        K, the number of contrast slots (the length of the modality code).
    slices_per_contrast : int
        Adjacent slices per contrast (odd; 3 = ``[i−1, i, i+1]``).
    growth_rate : int
        Channels each dense layer adds.
    down_blocks, up_blocks : tuple[int, ...]
        Dense layers per block on the way down and up (same length).
    bottleneck_layers : int
        Dense layers of the bottleneck block.
    first_conv_channels : int
        Output channels of the first 3×3 convolution (the co-training feature map).
    dropout : float
        ``Dropout2d`` probability after every dense layer and transition down.
    dynamic_head : bool
        Whether the first convolution is the ModDrop++ dynamic head.
    """

    n_contrasts: int = 5
    slices_per_contrast: int = 3
    growth_rate: int = 12
    down_blocks: tuple[int, ...] = (4, 4, 4, 4, 4)
    up_blocks: tuple[int, ...] = (4, 4, 4, 4, 4)
    bottleneck_layers: int = 4
    first_conv_channels: int = 48
    dropout: float = 0.2
    dynamic_head: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "down_blocks", tuple(int(n) for n in self.down_blocks))
        object.__setattr__(self, "up_blocks", tuple(int(n) for n in self.up_blocks))
        positive = {
            "n_contrasts": self.n_contrasts, "slices_per_contrast": self.slices_per_contrast,
            "growth_rate": self.growth_rate, "bottleneck_layers": self.bottleneck_layers,
            "first_conv_channels": self.first_conv_channels,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"network option {name} must be a positive integer, got {value!r}")
        if self.slices_per_contrast % 2 == 0:
            raise ValueError(
                f"slices_per_contrast must be odd (centre slice ± neighbours), got {self.slices_per_contrast}"
            )
        if not self.down_blocks or len(self.down_blocks) != len(self.up_blocks):
            raise ValueError(
                f"down_blocks {self.down_blocks} and up_blocks {self.up_blocks} must be non-empty "
                "and of equal length"
            )
        if min(self.down_blocks + self.up_blocks) < 1:
            raise ValueError("every dense block needs at least one layer")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not isinstance(self.dynamic_head, bool):
            raise ValueError(f"dynamic_head must be true or false, got {self.dynamic_head!r}")

    @property
    def in_channels(self) -> int:
        """Input channels: ``n_contrasts × slices_per_contrast`` (15 for the default)."""
        return self.n_contrasts * self.slices_per_contrast

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists) that :meth:`from_dict` reads back."""
        return {
            f.name: list(v) if isinstance(v, tuple) else v
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NetworkConfig:
        """Build from a dict; unknown keys raise ``ValueError`` naming them."""
        if isinstance(values, NetworkConfig):
            return values
        if not isinstance(values, dict):
            raise ValueError(f"network hyper-parameters must be a mapping, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown network option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(f"invalid network options: {exc}") from exc


class DenseLayer(nn.Sequential):
    """BN → ReLU → 3×3 conv (with bias) → Dropout2d: ``(B, C, H, W)`` → ``(B, growth, H, W)``."""

    def __init__(self, in_channels: int, growth_rate: int, dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, growth_rate, kernel_size=3, padding=1, bias=True)
        self.drop = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not fast_evaluation(self):
            return super().forward(x)
        return self.conv(bn_relu(x, self.norm))   # dropout is the identity in evaluation


class DenseBlock(nn.Module):
    """``n_layers`` dense layers, each fed the concatenation of the input and all earlier outputs.

    Returns ``(B, C + n·growth, H, W)`` (input and new features), or only the new features
    ``(B, n·growth, H, W)`` when ``new_features_only`` (bottleneck and upsampling blocks).
    """

    def __init__(self, in_channels: int, growth_rate: int, n_layers: int, dropout: float,
                 *, new_features_only: bool = False):
        super().__init__()
        self.new_features_only = new_features_only
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, dropout) for i in range(n_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.new_features_only:
            return torch.cat(self._run(x)[1], dim=1)
        return torch.cat(self.forward_split(x), dim=1)

    def forward_split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output in two parts, not yet concatenated (which costs a pass over memory).

        ``(B, C, H, W)`` → the input and all new features but the last ``(B, C + (n−1)·growth,
        H, W)``, and the last layer's features ``(B, growth, H, W)``.
        """
        x, new_features = self._run(x)
        return x, new_features[-1]

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Runs the layers: (the input with all new features but the last, each layer's output)."""
        new_features = []
        for i, layer in enumerate(self.layers):
            if i:
                x = torch.cat([x, new_features[-1]], dim=1)
            new_features.append(layer(x))
        return x, new_features


class TransitionDown(nn.Sequential):
    """BN → ReLU → 1×1 conv → Dropout2d → 2×2 max-pool: ``(B, C, H, W)`` → ``(B, C, H//2, W//2)``."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(channels, channels, kernel_size=1, bias=True)
        self.drop = nn.Dropout2d(dropout)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not fast_evaluation(self):
            return super().forward(x)
        return self.pool(self.conv(bn_relu(x, self.norm)))


class TransitionUp(nn.Module):
    """3×3 transposed conv, stride 2, centre-cropped to the skip's size, then concatenated.

    ``x (B, C, h, w)``, ``skip (B, S, H, W)`` → ``(B, C + S, H, W)``.

    In training the transposed convolution is :class:`torch.nn.ConvTranspose2d`; under CPU
    autocast it runs in fp32 (its result is cast back to the input's dtype): oneDNN's bf16
    transposed convolution is ~4× slower than its fp32 one.  In evaluation mode the same weights
    run as an ordinary convolution
    (:func:`~bids_mdpp.nn.fast_eval.transposed_conv_as_subpixel`), ~2.7× faster than the fp32
    transposed one in bf16 and ~1.6× in fp32 (``benchmarks/inference.py``).  With gradients on,
    or within :func:`~bids_mdpp.nn.fast_eval.defining_modules`, evaluation keeps the module.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, channels, kernel_size=3, stride=2, bias=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if fast_evaluation(self):
            out = transposed_conv_as_subpixel(x, self.conv.weight, self.conv.bias)
        elif x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                out = self.conv(x.float()).to(x.dtype)
        else:
            out = self.conv(x)
        height, width = skip.shape[-2:]
        top = (out.shape[-2] - height) // 2
        left = (out.shape[-1] - width) // 2
        out = out[:, :, top:top + height, left:left + width]
        return torch.cat([out, skip], dim=1)


class FCDenseNet(nn.Module):
    """FC-DenseNet with a static or dynamic first convolution (see the module docstring)."""

    def __init__(self, config: NetworkConfig | None = None):
        super().__init__()
        self.config = config = config or NetworkConfig()
        growth, dropout = config.growth_rate, config.dropout
        head_cls = DynamicFirstConv if config.dynamic_head else StaticFirstConv
        self.first_conv = head_cls(config.in_channels, config.first_conv_channels, config.n_contrasts)

        channels = config.first_conv_channels
        skip_channels = []
        self.down_blocks = nn.ModuleList()
        self.down_transitions = nn.ModuleList()
        for n_layers in config.down_blocks:
            self.down_blocks.append(DenseBlock(channels, growth, n_layers, dropout))
            channels += growth * n_layers
            skip_channels.append(channels)
            self.down_transitions.append(TransitionDown(channels, dropout))

        self.bottleneck = DenseBlock(channels, growth, config.bottleneck_layers, dropout,
                                     new_features_only=True)
        passed_on = growth * config.bottleneck_layers

        self.up_transitions = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        last = len(config.up_blocks) - 1
        for i, n_layers in enumerate(config.up_blocks):
            self.up_transitions.append(TransitionUp(passed_on))
            channels = passed_on + skip_channels[last - i]
            self.up_blocks.append(
                DenseBlock(channels, growth, n_layers, dropout, new_features_only=i < last)
            )
            passed_on = growth * n_layers
        channels += growth * config.up_blocks[-1]
        self.final_conv = nn.Conv2d(channels, 1, kernel_size=1, bias=True)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """The authors' initialisation: conv weights N(0, std), biases 0, BN weights N(1, std)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, 0.0, std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, std)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None,
                return_features: bool = False):
        """``x (B, K·s, H, W)``, ``code (B, K)`` → logits ``(B, 1, H, W)``.

        With ``return_features``, returns ``(logits, features)`` where ``features (B, 48, H, W)``
        is the output of the first layer (after the dynamic head's ReLU).
        """
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input of shape (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}"
            )
        features = self.first_conv(x, code)
        out = features
        skips = []
        for block, transition in zip(self.down_blocks, self.down_transitions):
            out = block(out)
            skips.append(out)
            out = transition(out)
        out = self.bottleneck(out)
        for transition, block in zip(self.up_transitions[:-1], self.up_blocks[:-1]):
            out = block(transition(out, skips.pop()))
        out = self.up_transitions[-1](out, skips.pop())
        if fast_evaluation(self):
            # the 1×1 convolution of a concatenation is the sum of the parts' convolutions:
            # the full-resolution concatenation of the last block is never written
            earlier, last = self.up_blocks[-1].forward_split(out)
            weight, split = self.final_conv.weight, earlier.shape[1]
            parts = (F.conv2d(earlier, weight[:, :split], self.final_conv.bias),
                     F.conv2d(last, weight[:, split:]))
            logits = (parts[0].float() + parts[1].float()).to(parts[0].dtype)   # one rounding
        else:
            logits = self.final_conv(self.up_blocks[-1](out))
        return (logits, features) if return_features else logits
