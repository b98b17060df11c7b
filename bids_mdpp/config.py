"""Frozen configuration of one run, built once by the command line and passed down.

Only the top level reads it; workflows and functions receive plain keyword arguments.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bids_mdpp.errors import UsageError

ANALYSIS_LEVELS = ("participant", "group")
#: ``--intensity-model`` values (:mod:`bids_mdpp.intensity_model`); the first is the default.
INTENSITY_MODEL_MODES = ("combine", "off")
#: Weight of the network's probability against the intensity model's posterior where the model
#: card names none (:meth:`bids_mdpp.model.ModelCard.network_weight_for`): their mean.
DEFAULT_NETWORK_WEIGHT = 0.5
#: Lesions (26-connected components of the mask) smaller than this (mm³) are dropped from the
#: mask and the lesion table by default: on a 1 mm grid, specks of one or two voxels, below the
#: three voxels that lesion-wise evaluations usually count.
DEFAULT_MIN_LESION_MM3 = 3.0
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def parse_memory_gb(text: str | None) -> float | None:
    """``"16G"``, ``"16GB"``, ``"1500M"``, ``"0.5T"`` or a bare number of GB → GB (float)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.I)
    if not match:
        raise UsageError(f"invalid --mem value {text!r}; use a size such as 16G, 1500M or 8")
    value, unit = float(match.group(1)), match.group(2).upper()
    gb = value * {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "": 1.0}[unit]
    if gb <= 0:
        raise UsageError(f"--mem must be positive, got {text!r}")
    return gb


def default_omp_nthreads(nprocs: int) -> int:
    """Threads per preprocessing step without ``--omp-nthreads`` (fMRIPrep's rule).

    One less than ``nprocs``, at least 1 and at most 8: independent steps (one registration per
    contrast, one bias correction per contrast) then run side by side, which on 2 cores was
    faster than running them one after another with 2 threads each (docs/benchmarks.md).
    """
    return max(1, min(nprocs - 1, 8))


@dataclass(frozen=True)
class RunConfig:
    """Everything a ``participant`` or ``group`` run needs (paths are absolute)."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    participant_labels: tuple[str, ...] = ()
    session_labels: tuple[str, ...] = ()
    bids_filters: dict = field(default_factory=dict)
    bids_filter_file: Path | None = None
    skip_validation: bool = False
    work_dir: Path | None = None
    nprocs: int = 1
    omp_nthreads: int = 1
    #: Threads for PyTorch during inference, which runs alone once preprocessing is done.
    inference_nthreads: int = 1
    mem_gb: float | None = None
    model_dir: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    #: Average each prediction with that of the left-right mirrored images (test-time augmentation).
    flip_tta: bool = False
    #: ``combine``: average the network's probability with the per-session intensity model's
    #: (:mod:`bids_mdpp.intensity_model`); ``off``: the network alone.
    intensity_model: str = INTENSITY_MODEL_MODES[0]
    plugin_file: Path | None = None
    verbose: int = 0
    overwrite: bool = False
    output_spaces: tuple[str, ...] = ()
    labels_dir: Path | None = None
    threshold: float = 0.5
    threshold_from_model: bool = True
    min_lesion_mm3: float = DEFAULT_MIN_LESION_MM3
    command_line: str = ""

    def __post_init__(self) -> None:
        if self.analysis_level not in ANALYSIS_LEVELS:
            raise UsageError(f"analysis level must be one of {ANALYSIS_LEVELS}")
        if not DEVICE_PATTERN.match(self.device):
            raise UsageError(f"invalid --device {self.device!r}; use auto, cpu, cuda or cuda:N")
        if self.intensity_model not in INTENSITY_MODEL_MODES:
            raise UsageError(f"--intensity-model must be one of {', '.join(INTENSITY_MODEL_MODES)}, "
                             f"got {self.intensity_model!r}")
        if not 0.0 < self.threshold < 1.0:
            raise UsageError(f"--threshold must lie strictly between 0 and 1, got {self.threshold}")
        if self.nprocs < 1 or self.omp_nthreads < 1 or self.inference_nthreads < 1:
            raise UsageError("--nprocs and --omp-nthreads must be at least 1")

    @property
    def effective_work_dir(self) -> Path:
        """The Nipype work directory (``-w``), by default inside the output's ``work/`` folder."""
        return self.work_dir or (self.output_dir / "work")
