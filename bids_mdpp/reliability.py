"""How far a lesion-probability map can be trusted: calibration and false positives.

Views used beside the DSC to choose a model (docs/training.md), all on one voxel grid:

* **Reliability curve** (:func:`reliability_curve`): the voxels of a region are put in equal-width
  probability bins; in each bin the mean predicted probability is set against the observed
  frequency of reference lesion.  A calibrated map has the two equal.
* **Expected calibration error** (:func:`expected_calibration_error`, ECE): the voxel-weighted
  mean of ``|mean probability − observed frequency|`` over the bins.  Over a whole brain the
  many confident background voxels make it small, so it is also reported over the *lesion
  region*: voxels where the model or the reference sees lesion (:func:`lesion_region`).
* **Median probability inside the reference lesions** (:func:`median_probability_inside`): a
  map that ranks voxels well but is compressed (lesions at 0.4–0.5) is found here.
* **False-positive volume away from the reference** (:func:`false_positive_volume_mm3`): the
  predicted lesion volume (mm³) farther than a margin from every reference lesion voxel, i.e.
  in normal-appearing tissue.  On a lesion-free brain it is the whole predicted volume.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Probability bins of the reliability curve.
DEFAULT_BINS = 10
#: Voxels with at least this probability belong to the lesion region (with the reference's).
LESION_REGION_PROBABILITY = 0.05
#: Predicted voxels within this distance (mm) of a reference lesion are not false positives
#: "away from the reference" (boundary disagreements are the DSC's business).
FALSE_POSITIVE_MARGIN_MM = 3.0


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per bin ``b`` (``bins + 1`` edges from 0 to 1): voxel count, mean probability, lesion
    frequency (NaN for an empty bin)."""

    edges: np.ndarray
    counts: np.ndarray
    mean_probability: np.ndarray
    observed_frequency: np.ndarray

    def to_dict(self) -> dict:
        """JSON-ready lists (None for empty bins)."""
        def listed(values):
            return [None if np.isnan(v) else round(float(v), 4) for v in values]
        return {"edges": [round(float(e), 4) for e in self.edges],
                "counts": [int(c) for c in self.counts],
                "mean_probability": listed(self.mean_probability),
                "observed_frequency": listed(self.observed_frequency)}


def _checked(probability: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probability = np.asarray(probability, dtype=np.float64)
    reference = np.asarray(reference) > 0
    if probability.shape != reference.shape:
        raise ValueError(f"the probability map's shape {probability.shape} differs from the "
                         f"reference's {reference.shape}")
    if not np.isfinite(probability).all() or probability.min() < 0 or probability.max() > 1:
        raise ValueError("the probability map must hold finite values in [0, 1]")
    return probability, reference


def reliability_curve(probability: np.ndarray, reference: np.ndarray,
                      region: np.ndarray | None = None, bins: int = DEFAULT_BINS) -> ReliabilityCurve:
    """The reliability curve of ``probability`` against the binary ``reference`` in ``region``
    (all voxels when None).  A probability of exactly 1 falls in the last bin."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    probability, reference = _checked(probability, reference)
    if region is not None:
        region = np.asarray(region) > 0
        probability, reference = probability[region], reference[region]
    else:
        probability, reference = probability.ravel(), reference.ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1], right=False), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    sums = np.bincount(which, weights=probability, minlength=bins)
    hits = np.bincount(which, weights=reference.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / counts, np.nan)
        frequency = np.where(counts > 0, hits / counts, np.nan)
    return ReliabilityCurve(edges, counts, mean, frequency)


def expected_calibration_error(curve: ReliabilityCurve) -> float:
    """Voxel-weighted mean ``|mean probability − observed frequency|`` over the non-empty bins
    (NaN when the curve holds no voxel)."""
    total = curve.counts.sum()
    if total == 0:
        return float("nan")
    filled = curve.counts > 0
    gaps = np.abs(curve.mean_probability[filled] - curve.observed_frequency[filled])
    return float((curve.counts[filled] * gaps).sum() / total)


def lesion_region(probability: np.ndarray, reference: np.ndarray,
                  level: float = LESION_REGION_PROBABILITY) -> np.ndarray:
    """Voxels where the map gives at least ``level`` or the reference is lesion (bool)."""
    probability, reference = _checked(probability, reference)
    return (probability >= level) | reference


def median_probability_inside(probability: np.ndarray, reference: np.ndarray) -> float:
    """The median probability over the reference lesion voxels (NaN without any)."""
    probability, reference = _checked(probability, reference)
    return float(np.median(probability[reference])) if reference.any() else float("nan")


def false_positive_volume_mm3(prediction: np.ndarray, reference: np.ndarray,
                              voxel_sizes_mm: tuple[float, float, float],
                              margin_mm: float = FALSE_POSITIVE_MARGIN_MM) -> float:
    """Predicted lesion volume (mm³) farther than ``margin_mm`` from every reference voxel.

    ``prediction`` and ``reference`` are binary masks of one grid with voxel sizes
    ``voxel_sizes_mm``; an empty reference makes every predicted voxel count.
    """
    prediction = np.asarray(prediction) > 0
    reference = np.asarray(reference) > 0
    if prediction.shape != reference.shape:
        raise ValueError(f"the prediction's shape {prediction.shape} differs from the "
                         f"reference's {reference.shape}")
    voxel_mm3 = float(np.prod(voxel_sizes_mm))
    if not reference.any():
        return float(prediction.sum()) * voxel_mm3
    distance = ndimage.distance_transform_edt(~reference, sampling=voxel_sizes_mm)
    return float((prediction & (distance > margin_mm)).sum()) * voxel_mm3
