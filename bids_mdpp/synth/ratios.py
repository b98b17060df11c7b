"""Tissue intensity ratios: how real and synthetic images are compared.

The same simple measurement runs on the real MSLUB images and on synthetic ones: inside the
brain, a three-class 1-D k-means of the T1w intensities (lesions left out) splits CSF, GM
and WM; the median intensity of each class and of the lesions in every contrast, divided
by the WM median, gives the ratios.  CSF and WM are eroded by one voxel to limit partial
volume.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.cluster.vq import kmeans2

TISSUES = ("CSF", "GM", "WM")


def split_tissues(
    t1: np.ndarray, brain: np.ndarray, lesion: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """CSF, GM and WM masks from a T1w image (3-class k-means inside ``brain``, no lesions).

    All arrays share one shape; returns boolean masks, CSF and WM eroded by one voxel.
    """
    inside = brain.astype(bool)
    if lesion is not None:
        inside &= ~lesion.astype(bool)
    values = t1[inside].astype(np.float64)
    start = np.percentile(values, [10, 50, 90])
    centres, labels = kmeans2(values[:, None], start[:, None], minit="matrix", iter=30, seed=0)
    order = np.argsort(centres[:, 0])
    classes = {}
    for name, k in zip(TISSUES, order):
        mask = np.zeros(t1.shape, bool)
        mask[inside] = labels == k
        classes[name] = mask if name == "GM" else ndimage.binary_erosion(mask)
    return classes


def tissue_medians(image: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Median of ``image`` over each mask (NaN for an empty mask)."""
    return {name: float(np.median(image[m])) if m.any() else float("nan") for name, m in masks.items()}


def intensity_ratios(
    images: dict[str, np.ndarray], t1: np.ndarray, brain: np.ndarray, lesion: np.ndarray
) -> dict[str, dict[str, float]]:
    """Per contrast: median CSF, GM and lesion intensity relative to the WM median.

    ``images`` maps contrast names to arrays on the grid of ``t1``, ``brain`` and ``lesion``.
    """
    masks = split_tissues(t1, brain, lesion)
    masks["lesion"] = lesion.astype(bool)
    out = {}
    for contrast, image in images.items():
        medians = tissue_medians(image, masks)
        out[contrast] = {k: round(v / medians["WM"], 3) for k, v in medians.items() if k != "WM"}
    return out
