"""ISBI-2015 segmentation metrics on binary lesion masks.

The metrics of the ISBI 2015 longitudinal MS lesion challenge (Carass et al., NeuroImage 148,
2017), for a prediction ``P`` and a reference ``R`` on the same voxel grid:

========  ===================================================================================
DSC       Dice similarity coefficient, 2·|P∩R| / (|P| + |R|)
PPV       positive predictive value (precision), |P∩R| / |P|
TPR       true positive rate (recall, sensitivity), |P∩R| / |R|
LFPR      lesion-wise false positive rate: predicted lesions that touch no reference voxel /
          predicted lesions
LTPR      lesion-wise true positive rate: reference lesions that touch at least one predicted
          voxel / reference lesions
VD        absolute volume difference relative to the reference, |V(P) − V(R)| / V(R)
Corr      Pearson correlation of the predicted and reference total lesion volumes across the
          subjects of a cohort (:func:`volume_correlation`)
SC        overall score, DSC/8 + PPV/8 + (1 − LFPR)/4 + LTPR/4 + Corr/4 (:func:`overall_score`)
========  ===================================================================================

**Lesions** are connected components under **18-connectivity** by default (face and edge
neighbours), as in the ModDrop++ authors' evaluation code; 6 and 26 are available through the
``connectivity`` parameter.  **Detection rule**: a lesion of one mask is detected when at least
one of its voxels is lesion in the other mask (an overlap of ≥ 1 voxel with the other mask as a
whole, whichever of its components that voxel belongs to).  So a reference lesion that the
prediction splits in two counts once, and two reference lesions that the prediction merges into
one both count as detected.

**Corr** follows ISBI's definition: one pair of total lesion volumes (mm³) per subject — here per
participant and session — and Pearson's r over the cohort.  (The authors' code instead computed
a voxel-wise correlation inside each subject; we do not.)  It is NaN with fewer than two subjects
or when either volume list has zero variance.  A subject's SC uses the cohort's Corr.

**Edge cases** (never an exception; NaN marks an undefined value):

* prediction and reference both empty: every metric takes its perfect value — DSC = PPV = TPR =
  LTPR = 1, LFPR = 0, VD = 0 — since the prediction agrees exactly with the reference;
* empty prediction, non-empty reference: DSC = TPR = LTPR = 0, VD = 1; PPV and LFPR are NaN
  (there is no predicted voxel or lesion to judge);
* empty reference, non-empty prediction: DSC = PPV = 0, LFPR = 1; TPR, LTPR and VD are NaN
  (there is no reference to recover or to divide by).

An SC with any NaN ingredient is NaN.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from bids_mdpp.lesions import label_lesions

#: Lesion connectivity of the authors' evaluation code.
SCORING_CONNECTIVITY = 18

#: Per-subject metric names, in table order.
SUBJECT_METRICS: tuple[str, ...] = ("dsc", "ppv", "tpr", "lfpr", "ltpr", "vd")


@dataclass(frozen=True)
class MaskScores:
    """ISBI-2015 metrics of one prediction against one reference (see the module docstring).

    Volumes are in mm³, counts are connected components under ``connectivity``.
    """

    dsc: float
    ppv: float
    tpr: float
    lfpr: float
    ltpr: float
    vd: float
    predicted_volume_mm3: float
    reference_volume_mm3: float
    predicted_lesions: int
    reference_lesions: int
    false_positive_lesions: int
    detected_reference_lesions: int
    connectivity: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a plain dict (for tables)."""
        return asdict(self)


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator else math.nan


def _overlapping_components(labels: np.ndarray, other: np.ndarray) -> int:
    """How many labelled components of ``labels`` have ≥ 1 voxel inside ``other``."""
    hit = np.unique(labels[other])
    return int(np.count_nonzero(hit))


def score_masks(
    prediction: np.ndarray,
    reference: np.ndarray,
    voxel_volume_mm3: float,
    *,
    connectivity: int = SCORING_CONNECTIVITY,
) -> MaskScores:
    """Score a predicted lesion mask against a reference mask on the same grid.

    Parameters
    ----------
    prediction, reference
        Masks of shape ``(X, Y, Z)``; any non-zero voxel is lesion.
    voxel_volume_mm3
        Volume of one voxel (mm³), > 0.
    connectivity
        6, 18 (default, as the authors) or 26, for the lesion-wise metrics.

    Returns
    -------
    MaskScores
        DSC, PPV, TPR, LFPR, LTPR, VD, volumes (mm³) and lesion counts, with the edge-case
        conventions of the module docstring.

    Raises
    ------
    ValueError
        The masks differ in shape or are not 3D, or the voxel volume is not positive.
    """
    predicted = np.asarray(prediction) > 0
    truth = np.asarray(reference) > 0
    if predicted.shape != truth.shape or predicted.ndim != 3:
        raise ValueError(
            f"prediction {predicted.shape} and reference {truth.shape} must be 3D masks of "
            "one shape"
        )
    if not (np.isfinite(voxel_volume_mm3) and voxel_volume_mm3 > 0):
        raise ValueError(
            f"voxel volume must be a positive number of mm³, got {voxel_volume_mm3!r}")
    n_pred = int(predicted.sum())
    n_ref = int(truth.sum())
    n_both = int(np.logical_and(predicted, truth).sum())
    pred_labels, pred_count = label_lesions(predicted, connectivity)
    ref_labels, ref_count = label_lesions(truth, connectivity)
    true_positive_lesions = _overlapping_components(pred_labels, truth)
    detected = _overlapping_components(ref_labels, predicted)
    both_empty = n_pred == 0 and n_ref == 0
    return MaskScores(
        dsc=1.0 if both_empty else _ratio(2 * n_both, n_pred + n_ref),
        ppv=1.0 if both_empty else _ratio(n_both, n_pred),
        tpr=1.0 if both_empty else _ratio(n_both, n_ref),
        lfpr=0.0 if both_empty else _ratio(pred_count - true_positive_lesions, pred_count),
        ltpr=1.0 if both_empty else _ratio(detected, ref_count),
        vd=0.0 if both_empty else _ratio(abs(n_pred - n_ref), n_ref),
        predicted_volume_mm3=n_pred * float(voxel_volume_mm3),
        reference_volume_mm3=n_ref * float(voxel_volume_mm3),
        predicted_lesions=pred_count,
        reference_lesions=ref_count,
        false_positive_lesions=pred_count - true_positive_lesions,
        detected_reference_lesions=detected,
        connectivity=connectivity,
    )


def volume_correlation(predicted_mm3: Sequence[float], reference_mm3: Sequence[float]) -> float:
    """Corr: Pearson's r of predicted vs reference total lesion volumes over subjects.

    One value per subject in each sequence (mm³, same order).  NaN with fewer than two
    subjects, when either sequence has zero variance, or when a volume is not finite.
    """
    from scipy.stats import pearsonr

    x = np.asarray(predicted_mm3, dtype=float)
    y = np.asarray(reference_mm3, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two 1D sequences of one length, got {x.shape} and {y.shape}")
    if x.size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return math.nan
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(pearsonr(x, y).statistic)


def overall_score(dsc: float, ppv: float, lfpr: float, ltpr: float, corr: float) -> float:
    """SC = DSC/8 + PPV/8 + (1 − LFPR)/4 + LTPR/4 + Corr/4 (NaN if any ingredient is NaN)."""
    return dsc / 8 + ppv / 8 + (1 - lfpr) / 4 + ltpr / 4 + corr / 4
