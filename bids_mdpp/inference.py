"""Inference: normalised contrasts on the model grid → one fused lesion-probability map.

The network sees 2.5D inputs: for slice i along an axis, the slices ``[i−1, i, i+1]`` of every
contrast, contrast-major, in the model card's order (edge slices replicate their neighbour).
Contrasts the model does not know are ignored; those it knows but the session lacks are
zero-filled and their modality-code bit is 0.  Every slice of the three orientations is
predicted and the three probability maps are averaged with equal weights (Zhang et al. 2019;
Liu et al. 2022).

:class:`Predictor` is the fast path: it crops to the brain mask's bounding box (plus a margin),
skips slices without brain, runs each batch of consecutive slices on the brain's bounding box in
those slices (plus the margin; batches of up to ``batch_size`` slices chosen to waste few pixels,
:mod:`bids_mdpp.slice_windows`), runs batches under ``torch.inference_mode`` in ``channels_last``
layout and — with ``precision="auto"`` on hardware with bfloat16 — under bf16 autocast, but
only after checking on central slices of this very input that bf16 stays within
:data:`BF16_TOLERANCE` of fp32 (otherwise the whole volume runs in fp32).  The result is
deterministic for a given input.  :func:`predict_reference` is the plain slice-by-slice
definition the fast path is tested and benchmarked against.

With ``flip_tta=True`` (test-time augmentation) the volumes are also predicted mirrored left to
right (axis 0, the R axis of the RAS+ model grid) and the two maps, the mirrored one flipped back,
are averaged: twice the time, a map that no longer depends on which hemisphere a pattern is in.

API::

    predictor = Predictor(load_model(directory), device="auto", batch_size=16, precision="auto")
    probability = predictor.predict({"FLAIR": flair, "T1w": t1}, brain_mask)   # (X, Y, Z) float32
    predictor.code_for(["FLAIR", "T1w"])                                       # (1, 1, 0, 0, 0)
"""
from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from bids_mdpp.contrasts import modality_code
from bids_mdpp.errors import UsageError
from bids_mdpp.model import pick_network
from bids_mdpp.nn import torch_threads
from bids_mdpp.nn.fast_eval import defining_modules
from bids_mdpp.slice_windows import bounding_box, plan_batches

LOGGER = logging.getLogger(__name__)

#: bf16 is used (precision="auto") only if its probabilities stay this close to fp32's.
BF16_TOLERANCE = 1e-2
#: Central slices (axial) on which ``auto`` compares bf16 with fp32 before using it.
PROBE_SLICES = 4
#: Voxels of background kept around the brain mask's bounding box (the network's context;
#: on a real 1 mm brain 4 and 16 gave the same DSC, and 4 costs ~25 % less).
CROP_MARGIN = 4
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` → the first CUDA GPU if there is one, else the CPU; checks that it exists.

    Accepts ``auto``, ``cpu``, ``cuda``, ``cuda:N`` and ``mps``; raises
    :class:`~bids_mdpp.errors.UsageError` for an unknown name or a device this machine lacks.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"invalid device {spec!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {spec!r} was requested but no CUDA GPU is usable here "
                f"(torch {torch.__version__}); use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"device {spec!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"device {spec!r} was requested but Apple MPS is not available")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N")
    return device


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` has native bfloat16 arithmetic (AVX-512 BF16/AMX, or a recent GPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def extract_slices(stack: np.ndarray, axis: int, indices: Sequence[int] | np.ndarray,
                   slices_per_contrast: int = 3) -> np.ndarray:
    """2.5D network inputs from a contrast stack.

    ``stack (K, X, Y, Z)``, slice ``indices`` along spatial ``axis`` (0, 1 or 2) →
    ``(N, K·s, A, B)`` float32 where channel ``k·s + j`` is contrast k at slice
    ``i − s//2 + j`` (clamped to the volume: edge slices are replicated) and ``(A, B)`` are the
    two other axes in their order.
    """
    moved = np.moveaxis(stack, axis + 1, 1)  # (K, L, A, B)
    half = slices_per_contrast // 2
    offsets = np.arange(-half, half + 1)
    neighbours = np.clip(np.asarray(indices)[:, None] + offsets, 0, moved.shape[1] - 1)  # (N, s)
    out = moved[:, neighbours]  # (K, N, s, A, B)
    out = out.transpose(1, 0, 2, 3, 4)
    return np.ascontiguousarray(out.reshape(out.shape[0], -1, *out.shape[3:]), dtype=np.float32)


def predict_reference(network: torch.nn.Module, stack: np.ndarray, code: Sequence[int], *,
                      slices_per_contrast: int = 3, axes: Iterable[int] = (0, 1, 2)) -> np.ndarray:
    """The plain definition: every slice of ``axes``, one at a time, fp32, no cropping.

    Puts ``network`` in eval mode and runs its modules as defined
    (:func:`bids_mdpp.nn.fast_eval.defining_modules`: no fused or sub-pixel forms).

    ``stack (K, X, Y, Z)`` → the mean over ``axes`` of the sigmoid probabilities, ``(X, Y, Z)``.
    """
    network.eval()
    parameter = next(network.parameters())
    code_t = torch.tensor([list(code)], dtype=parameter.dtype, device=parameter.device)
    axes = tuple(axes)
    fused = np.zeros(stack.shape[1:], dtype=np.float64)
    with torch.no_grad(), defining_modules():
        for axis in axes:
            per_axis = np.moveaxis(fused, axis, 0)  # a view: writes land in ``fused``
            for i in range(stack.shape[axis + 1]):
                x = torch.from_numpy(extract_slices(stack, axis, [i], slices_per_contrast))
                prob = torch.sigmoid(network(x.to(parameter.device), code_t))[0, 0]
                per_axis[i] += prob.cpu().numpy()
    return (fused / len(axes)).astype(np.float32)


class Predictor:
    """Run a loaded model on one session's volumes (see the module docstring).

    Parameters
    ----------
    loaded_model : bids_mdpp.model.LoadedModel
        The model; its network (and anchor network, for the inputs that include the card's
        anchor contrast) is copied, not changed.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (see :func:`resolve_device`).
    batch_size : int
        Slices per forward pass.
    precision : str
        ``auto`` (bf16 where native and within :data:`BF16_TOLERANCE` of fp32, else fp32),
        ``fp32``, ``bf16`` or ``fp16``.
    num_threads : int or None
        CPU threads for torch during :meth:`predict` (None keeps torch's setting).
    crop_margin : int
        Voxels kept around the brain mask's bounding box.
    flip_tta : bool
        Also predict the left-right mirrored volumes and average (see the module docstring).
    recalibrate : bool
        Pass every prediction through the card's ``probability_calibration`` (when it has one);
        False gives the network's own fused probabilities, which is what a recalibration is
        fitted on.
    """

    def __init__(self, loaded_model, *, device: str = "auto", batch_size: int = 16,
                 precision: str = "auto", num_threads: int | None = None,
                 crop_margin: int = CROP_MARGIN, flip_tta: bool = False, recalibrate: bool = True):
        if precision not in PRECISIONS:
            raise UsageError(f"invalid precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        if num_threads is not None and num_threads < 1:
            raise UsageError(f"number of threads must be at least 1, got {num_threads}")
        self.num_threads = num_threads
        self.card = loaded_model.card
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.precision = precision
        self.crop_margin = crop_margin
        self.flip_tta = flip_tta
        self.recalibrate = recalibrate
        self.network = self._ready(loaded_model.network)
        self.anchor_contrast = loaded_model.anchor_contrast
        self.anchor_subsets = loaded_model.anchor_subsets
        self.anchor_network = (None if loaded_model.anchor_network is None
                               else self._ready(loaded_model.anchor_network))
        depth = len(self.card.network_config.down_blocks)
        self.pooling_grid = 2**depth
        #: The arithmetic the last :meth:`predict` used (``fp32``, ``bf16`` or ``fp16``).
        self.precision_used: str | None = None

    def _ready(self, network: torch.nn.Module) -> torch.nn.Module:
        """A copy of ``network`` on this predictor's device, in eval mode and memory format."""
        network = copy.deepcopy(network).to(self.device).eval()
        if self.device.type in ("cpu", "cuda"):
            network = network.to(memory_format=torch.channels_last)
        return network

    def network_for(self, contrasts: Iterable[str]) -> torch.nn.Module:
        """The network an input of exactly ``contrasts`` runs through (the anchor network for
        the inputs that include the card's anchor contrast or are one of its anchor subsets)."""
        return pick_network(self.network, self.anchor_network, self.anchor_contrast, contrasts,
                            self.anchor_subsets)

    def code_for(self, contrasts: Iterable[str]) -> tuple[int, ...]:
        """The modality code of the available ``contrasts`` in the model's order."""
        return modality_code(contrasts, self.card.contrasts)

    def stack(self, volumes: Mapping[str, np.ndarray],
              box: tuple[slice, ...] | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
        """Check the volumes and stack them in the model's order: ``(K, X, Y, Z)`` and the code.

        With ``box`` (slices of the volumes), only that block is stacked: ``(K, *box sides)``.
        Raises ``ValueError`` naming the contrasts for a wrong dimension, disagreeing shapes,
        non-finite values, or when none of them is known to the model.
        """
        known, shape = self._checked(volumes)
        return self._stack_block(known, shape, box), self.code_for(known)

    def _checked(self, volumes: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
        """The volumes the model knows (float32), checked as :meth:`stack` says, and their shape."""
        arrays = {name: np.asarray(v, dtype=np.float32) for name, v in volumes.items()}
        for name, array in arrays.items():
            if array.ndim != 3:
                raise ValueError(f"contrast {name}: expected a 3D volume (X, Y, Z), got shape {array.shape}")
        shapes = {array.shape for array in arrays.values()}
        if len(shapes) > 1:
            listed = ", ".join(f"{name} {array.shape}" for name, array in arrays.items())
            raise ValueError(f"the contrasts' shapes disagree: {listed}")
        known = {name: arrays[name] for name in self.card.contrasts if name in arrays}
        if not known:
            raise ValueError(
                f"none of the given contrasts ({', '.join(arrays) or 'none'}) is known to the model "
                f"({', '.join(self.card.contrasts)})"
            )
        for name, array in known.items():
            if not np.isfinite(array).all():
                raise ValueError(f"contrast {name}: the volume holds NaN or infinite values")
        shape = next(iter(shapes))
        if min(shape) < self.pooling_grid:
            raise ValueError(
                f"volumes of shape {shape} are smaller than the network's minimum of "
                f"{self.pooling_grid} voxels per axis"
            )
        return known, shape

    def _stack_block(self, known: Mapping[str, np.ndarray], shape: tuple[int, ...],
                     box: tuple[slice, ...] | None) -> np.ndarray:
        """``(K, *block)``: the ``box`` of each known contrast in the model's order, zeros elsewhere."""
        box = tuple(slice(0, n) for n in shape) if box is None else box
        block = tuple(len(range(*b.indices(n))) for b, n in zip(box, shape))
        stack = np.zeros((len(self.card.contrasts), *block), dtype=np.float32)
        for k, name in enumerate(self.card.contrasts):
            if name in known:
                stack[k] = known[name][box]
        return stack

    def predict(self, volumes: Mapping[str, np.ndarray],
                brain_mask: np.ndarray | None = None) -> np.ndarray:
        """Fused lesion probability ``(X, Y, Z)`` float32 in [0, 1] (0 outside ``brain_mask``).

        ``volumes``: normalised contrasts on the model grid, each ``(X, Y, Z)``, axis 0 running
        left to right.  Without a brain mask every slice of the whole volume is predicted.
        The card's probability calibration, if any, is applied last (``recalibrate``).
        """
        with torch_threads(self.num_threads):
            probability = self._predict(volumes, brain_mask)
            if self.flip_tta:
                mirrored = self._predict(
                    {name: np.flip(np.asarray(v), 0) for name, v in volumes.items()},
                    None if brain_mask is None else np.flip(np.asarray(brain_mask), 0))
                probability = (probability + np.flip(mirrored, 0)) / 2.0
        return self.card.recalibrated(probability) if self.recalibrate else probability

    @property
    def settings(self) -> dict:
        """How the last :meth:`predict` ran, for the outputs' sidecars."""
        settings = {"Precision": self.precision_used,
                    "TestTimeAugmentation": ["left-right flip"] if self.flip_tta else []}
        calibration = self.card.probability_calibration
        if self.recalibrate and calibration:
            settings["ProbabilityCalibration"] = {
                "Method": calibration["method"], "Scale": calibration["scale"],
                "Bias": calibration["bias"]}
        return settings

    def _predict(self, volumes: Mapping[str, np.ndarray], brain_mask: np.ndarray | None) -> np.ndarray:
        known, shape = self._checked(volumes)
        if brain_mask is None:
            mask = None
            box = tuple(slice(0, n) for n in shape)
        else:
            mask = np.asarray(brain_mask) > 0
            if mask.shape != shape:
                raise ValueError(f"the brain mask's shape {mask.shape} differs from the volumes' {shape}")
            if not mask.any():
                raise ValueError("the brain mask is empty")
            box = bounding_box(mask, self.crop_margin, self.pooling_grid)
        # only the brain's box is stacked (copying the whole volumes first cost ~0.8 s)
        cropped, code = self._stack_block(known, shape, box), self.code_for(known)
        inside = None if mask is None else mask[box]
        code_t = torch.tensor([code], dtype=torch.float32, device=self.device)
        network = self.network_for(known)
        dtype = self._dtype(network, cropped, inside, code_t)
        fused = np.zeros(cropped.shape[1:], dtype=np.float32)
        for axis in range(3):
            per_axis = np.moveaxis(fused, axis, 0)
            inside_axis = None if inside is None else np.moveaxis(inside, axis, 0)
            for indices in self._batches(inside, axis, cropped.shape[axis + 1]):
                window = self._window(inside_axis, indices, per_axis.shape[1:])
                per_axis[(indices, *window)] += self._run(network, cropped, axis, indices,
                                                          code_t, dtype, window)
        fused /= 3.0
        probability = np.zeros(shape, dtype=np.float32)
        probability[box] = fused
        if mask is not None:
            probability[~mask] = 0.0
        return np.clip(probability, 0.0, 1.0)

    def _batches(self, inside: np.ndarray | None, axis: int, length: int) -> list[np.ndarray]:
        """Slice indices along ``axis`` that hold brain, in batches of at most ``batch_size``.

        Without a mask, consecutive batches of ``batch_size``; with one, the runs of
        :func:`bids_mdpp.slice_windows.plan_batches` (fewer pixels where the brain's outline
        changes quickly, ~9 % less work on a 1 mm brain).
        """
        if inside is None:
            indices = np.arange(length)
            return [indices[i:i + self.batch_size] for i in range(0, length, self.batch_size)]
        return plan_batches(np.moveaxis(inside, axis, 0), self.batch_size, self.crop_margin,
                            self.pooling_grid)

    def _window(self, inside: np.ndarray | None, indices: np.ndarray,
                plane: tuple[int, int]) -> tuple[slice, slice]:
        """The in-plane box the slices ``indices`` are predicted on.

        ``inside (L, A, B)``: the brain mask with the slicing axis first.  The box is the bounding
        box of the brain in these slices grown by ``crop_margin``, starting on the pooling grid
        (:func:`bounding_box`: the pooling windows fall where they fall on the whole slice).  Its
        far sides are not rounded up: the network takes any size, and rounding to the grid cost
        ~17 % more FLOPs on a 1 mm brain than the few extra shapes it saved.
        """
        if inside is None:
            return slice(0, plane[0]), slice(0, plane[1])
        return bounding_box(inside[indices].any(axis=0), self.crop_margin, self.pooling_grid)

    def _run(self, network: torch.nn.Module, stack: np.ndarray, axis: int, indices: np.ndarray,
             code_t: torch.Tensor, dtype: torch.dtype | None,
             window: tuple[slice, slice] = (slice(None), slice(None))) -> np.ndarray:
        """Probabilities ``(N, A, B)`` of the slices ``indices`` along ``axis``, within ``window``
        of the plane ``(A, B)``."""
        moved = np.moveaxis(stack, axis + 1, 1)[(slice(None), slice(None), *window)]
        x = torch.from_numpy(extract_slices(moved, 0, indices, self.card.slices_per_contrast))
        x = x.to(self.device)
        if self.device.type in ("cpu", "cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(self.device.type, dtype=dtype) if dtype is not None
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            logits = network(x, code_t)
        return torch.sigmoid(logits.float())[:, 0].cpu().numpy()

    def _dtype(self, network: torch.nn.Module, stack: np.ndarray, inside: np.ndarray | None,
               code_t: torch.Tensor) -> torch.dtype | None:
        """The autocast dtype for this input (None = fp32); ``auto`` checks bf16 on a few slices."""
        if self.precision != "auto":
            self.precision_used = self.precision
            return DTYPES[self.precision]
        self.precision_used = "fp32"
        if not bf16_supported(self.device):
            return None
        indices = np.concatenate(self._batches(inside, 2, stack.shape[3]))
        middle = len(indices) // 2
        probe = indices[max(0, middle - PROBE_SLICES // 2):][:PROBE_SLICES]
        window = self._window(None if inside is None else np.moveaxis(inside, 2, 0), probe,
                              stack.shape[1:3])
        exact = self._run(network, stack, 2, probe, code_t, None, window)
        fast = self._run(network, stack, 2, probe, code_t, torch.bfloat16, window)
        difference = float(np.abs(exact - fast).max())
        if difference > BF16_TOLERANCE:
            LOGGER.info("bf16 differs from fp32 by %.4f on this input; using fp32", difference)
            return None
        self.precision_used = "bf16"
        return torch.bfloat16
