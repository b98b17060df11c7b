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


#: Percentiles reported per region by :func:`region_statistics`.
PERCENTILES = (10, 25, 50, 75, 90)
#: Caps and bands are measured this close to the lateral ventricles (mm).
CAP_MEASURE_MM = 3.0
BAND_MEASURE_MM = 2.0
#: Share of CSF around a voxel of the choroid plexus (5-voxel cube).
ENVELOPED_FRACTION = 0.45


def measurement_masks(regions, tissues: dict[str, np.ndarray], t1: np.ndarray,
                      lesion: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The masks whose intensities describe the hard negatives, from :class:`Regions`.

    ``tissues`` are the masks of :func:`split_tissues`; ``t1`` is the T1w image (it tells
    the tissue-like choroid plexus from the CSF around it); ``lesion`` (dilated by one
    voxel) is left out of every mask but its own.  Keys: ``WM``, ``GM_cortex``,
    ``GM_deep``, ``GM_cingulate``, ``GM_insula``, ``CSF_lateral``, ``caps`` and ``bands``
    (brighter than the GM median on T1w: no CSF partial volume), ``septum``, ``choroid``
    (in the atria, mostly surrounded by CSF, not CSF-dark on T1w), ``CSF_inflow`` and, when
    given, ``lesion``.
    """
    clear = np.ones(t1.shape, bool)
    if lesion is not None and lesion.any():
        clear = ~ndimage.binary_dilation(lesion.astype(bool))
    gm = tissues["GM"]
    special_gm = regions.deep_gm | regions.cingulate | regions.insula
    csf_level = np.median(t1[tissues["CSF"]]) if tissues["CSF"].any() else 0.0
    gm_level = np.median(t1[gm]) if gm.any() else 1.0
    d = regions.to_lateral_mm
    tissue_like = t1 > (csf_level + gm_level) / 2  # choroid plexus: not CSF on T1w
    wm_like = t1 > gm_level  # caps and bands: no CSF partial volume
    masks = {
        "WM": tissues["WM"],
        "GM_cortex": gm & ~special_gm,
        "GM_deep": gm & regions.deep_gm,
        "GM_cingulate": gm & regions.cingulate,
        "GM_insula": gm & regions.insula,
        "CSF_lateral": ndimage.binary_erosion(regions.lateral) & tissues["CSF"],
        "caps": (regions.caps > 0) & (d <= CAP_MEASURE_MM) & wm_like,
        "bands": (regions.caps == 0) & (d > 0) & (d <= BAND_MEASURE_MM) & ~gm & wm_like,
        "septum": regions.septum,
        "choroid": _enveloped(regions.choroid, regions.lateral) & tissue_like,
        "CSF_inflow": regions.inflow & tissues["CSF"],
    }
    masks = {name: mask & clear for name, mask in masks.items()}
    if lesion is not None:
        masks["lesion"] = lesion.astype(bool)
    return masks


def _enveloped(zone: np.ndarray, fluid: np.ndarray) -> np.ndarray:
    """Voxels of ``zone`` (dilated by 2) that are not ``fluid`` but mostly surrounded by it.

    The choroid plexus floats in the ventricle: at least :data:`ENVELOPED_FRACTION` of a
    5-voxel cube around it is CSF, unlike the ventricle's walls.
    """
    around = ndimage.uniform_filter(fluid.astype(np.float32), size=5)
    return ndimage.binary_dilation(zone, iterations=2) & ~fluid & (around >= ENVELOPED_FRACTION)


def region_statistics(images: dict[str, np.ndarray], masks: dict[str, np.ndarray]
                      ) -> dict[str, dict[str, dict[str, float]]]:
    """Per contrast and mask: percentiles of the intensity relative to the WM median.

    ``masks`` must hold ``WM``.  Returns ``{contrast: {mask: {"p10": …, "p50": …, "n": …}}}``
    (an empty mask gives only ``n`` = 0).
    """
    out = {}
    for contrast, image in images.items():
        wm = float(np.median(image[masks["WM"]]))
        out[contrast] = {}
        for name, mask in masks.items():
            entry: dict[str, float] = {"n": int(mask.sum())}
            if entry["n"]:
                values = np.percentile(image[mask], PERCENTILES) / wm
                entry.update({f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, values)})
            out[contrast][name] = entry
    return out
