"""The tissue-ratio measurement used to compare synthetic and real images."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_mdpp.synth.ratios import intensity_ratios, split_tissues


def _phantom():
    """Nested boxes: CSF core, GM shell, WM shell, a lesion in the WM (32³ voxels)."""
    labels = np.zeros((32, 32, 32), np.uint8)
    labels[2:30, 2:30, 2:30] = 3  # WM
    labels[4:28, 4:28, 4:28] = 2  # GM
    labels[10:22, 10:22, 10:22] = 1  # CSF
    lesion = np.zeros(labels.shape, bool)
    lesion[3, 10:14, 10:14] = True
    rng = np.random.default_rng(0)
    t1 = np.choose(labels, [0.0, 20.0, 70.0, 100.0]) + rng.normal(0, 1, labels.shape)
    t1[lesion] = 60.0
    t2 = np.choose(labels, [0.0, 300.0, 130.0, 100.0]) + rng.normal(0, 1, labels.shape)
    t2[lesion] = 170.0
    return labels, lesion, t1, t2


def test_split_recovers_the_phantom_tissues():
    labels, lesion, t1, _ = _phantom()
    masks = split_tissues(t1, labels > 0, lesion)
    assert np.array_equal(masks["GM"], labels == 2)
    assert masks["CSF"].sum() > 0 and np.all(labels[masks["CSF"]] == 1)
    assert np.all(labels[masks["WM"]] == 3) and not (masks["WM"] & lesion).any()


def test_ratios_are_medians_relative_to_wm():
    labels, lesion, t1, t2 = _phantom()
    ratios = intensity_ratios({"T1w": t1, "T2w": t2}, t1, labels > 0, lesion)
    assert ratios["T1w"] == pytest.approx({"CSF": 0.2, "GM": 0.7, "lesion": 0.6}, abs=0.02)
    assert ratios["T2w"] == pytest.approx({"CSF": 3.0, "GM": 1.3, "lesion": 1.7}, abs=0.03)


def test_real_mslub_images_follow_the_orderings_the_generator_uses(shared_data):
    root = shared_data / "mslub-cross"
    lesion = np.asanyarray(nib.load(
        root / "derivatives/manual/sub-26/anat/sub-26_label-lesion_mask.nii.gz").dataobj) > 0
    names = {"T1w": "T1w", "T2w": "T2w", "FLAIR": "FLAIR", "ceT1w": "ce-gadolinium_T1w"}
    images = {c: np.asanyarray(nib.load(root / f"sub-26/anat/sub-26_{n}.nii.gz").dataobj) for c, n in names.items()}
    brain = ndimage.binary_erosion(ndimage.binary_fill_holes(images["T1w"] > 5), iterations=2)
    r = intensity_ratios(images, images["T1w"], brain, lesion)
    assert 1.0 > r["T1w"]["GM"] > r["T1w"]["CSF"] and r["T1w"]["lesion"] < 1.0
    assert r["T2w"]["CSF"] > r["T2w"]["lesion"] > r["T2w"]["GM"] > 1.0
    assert r["FLAIR"]["lesion"] > r["FLAIR"]["GM"] > 1.0 > 2 * r["FLAIR"]["CSF"]
    assert 1.0 > r["ceT1w"]["GM"] > r["ceT1w"]["CSF"]


def test_measurement_masks_follow_the_regions_and_leave_lesions_out():
    from bids_mdpp.synth.anatomy import load_template
    from bids_mdpp.synth.ratios import measurement_masks, region_statistics
    from bids_mdpp.synth.regions import template_regions

    template = load_template(0.5)
    regions = template_regions(template)
    tissues = {"GM": template.gm > 0.5, "WM": template.wm > 0.5, "CSF": template.csf > 0.5}
    t1 = template.wm + 0.7 * template.gm + 0.1 * template.csf
    lesion = np.zeros(t1.shape, bool)
    lesion[tuple(np.argwhere(regions.caps > 0)[0])] = True  # one lesion voxel in a cap
    masks = measurement_masks(regions, tissues, t1, lesion)
    assert set(masks) == {"WM", "GM_cortex", "GM_deep", "GM_cingulate", "GM_insula", "CSF_lateral",
                          "caps", "bands", "septum", "choroid", "CSF_inflow", "lesion"}
    assert masks["caps"].any() and not (masks["caps"] & ndimage.binary_dilation(lesion)).any()
    assert (regions.to_lateral_mm[masks["caps"]] <= 3.0).all()
    assert not (masks["GM_cortex"] & (masks["GM_cingulate"] | masks["GM_insula"])).any()
    flair = t1.copy()
    flair[masks["caps"]] = 1.3
    stats = region_statistics({"FLAIR": flair}, masks)["FLAIR"]
    assert stats["WM"]["p50"] == pytest.approx(1.0) and stats["caps"]["p50"] == pytest.approx(1.3, rel=0.05)
    assert stats["lesion"]["n"] == 1
