"""benchmarks/adapt_hemispheres.py without adaptation: halves, regions, scores and the card."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from benchmark_scripts import load_script

#: FSL's MNI152 1 mm grid: x runs right to left along the first axis, x = 0 at i = 90.
MNI_AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def bench():
    return load_script("adapt_hemispheres")


def test_world_x_and_the_sides_follow_the_affine(bench):
    x = bench.world_x((182, 2, 2), MNI_AFFINE)
    assert x[90, 0, 0] == 0 and x[0, 1, 1] == 90 and x[181, 0, 0] == -91
    right = bench.side_of(x, "right", 4.0)
    left = bench.side_of(x, "left", 4.0)
    assert right[:87].all() and not right[87:].any()  # x ≥ 4 mm: i ≤ 86
    assert left[94:].all() and not left[:94].any()
    assert not (right | left)[87:94].any()  # the band around the midline is in neither
    ras = np.diag([2.0, 1.0, 1.0, 1.0])
    ras[0, 3] = -10
    assert bench.side_of(bench.world_x((10, 1, 1), ras), "right", 0).nonzero()[0].tolist() == [5, 6, 7, 8, 9]


def test_a_half_dataset_keeps_one_side_of_the_images_and_no_mask(bench, tmp_path):
    data = tmp_path / "data"
    anat = data / "sub-26" / "anat"
    anat.mkdir(parents=True)
    (data / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    (data / "derivatives" / "manual").mkdir(parents=True)
    (data / "derivatives" / "manual" / "mask.nii.gz").write_text("not copied")
    values = np.ones((182, 3, 3), dtype=np.int16)
    nib.save(nib.Nifti1Image(values, MNI_AFFINE), str(anat / "sub-26_T1w.nii.gz"))
    (anat / "sub-26_T1w.json").write_text("{}")
    out = bench.write_half_dataset(data, "26", tmp_path / "half", "left", 4.0)
    kept = np.asarray(nib.load(str(out / "sub-26" / "anat" / "sub-26_T1w.nii.gz")).dataobj)
    assert kept.dtype == np.int16 and kept[94:].all() and not kept[:94].any()
    assert (out / "sub-26" / "anat" / "sub-26_T1w.json").exists()
    assert (out / "dataset_description.json").exists() and not (out / "derivatives").exists()
    with pytest.raises(SystemExit, match="sub-99"):
        bench.write_half_dataset(data, "99", tmp_path / "none", "left", 4.0)


def test_a_mirrored_half_is_a_whole_brain_made_of_the_kept_side_only(bench, tmp_path):
    data = tmp_path / "data"
    anat = data / "sub-26" / "anat"
    anat.mkdir(parents=True)
    (data / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    values = np.zeros((182, 2, 2), dtype=np.int16)
    values[:, ...] = np.arange(182, dtype=np.int16)[:, None, None]  # value = voxel index i
    values[150] = 999  # a "lesion" on the left (x = -60): it must not appear in the right copy
    nib.save(nib.Nifti1Image(values, MNI_AFFINE), str(anat / "sub-26_T1w.nii.gz"))
    out = bench.write_half_dataset(data, "26", tmp_path / "half", "right", 4.0, "mirror")
    kept = np.asarray(nib.load(str(out / "sub-26" / "anat" / "sub-26_T1w.nii.gz")).dataobj)
    assert kept.dtype == np.int16
    assert np.array_equal(kept[:87], values[:87])  # the right side (x ≥ 4) as it was
    # x' = 8 − x: voxel i (x = 90 − i) reads voxel 172 − i, always on the right side
    i = np.arange(87, 173)
    assert np.array_equal(kept[i, 0, 0], 172 - i)
    assert not (kept[173:] != 0).any()  # mirrors beyond the image: 0
    assert 999 not in kept
    left = bench.write_half_dataset(data, "26", tmp_path / "left", "left", 4.0, "mirror")
    kept = np.asarray(nib.load(str(left / "sub-26" / "anat" / "sub-26_T1w.nii.gz")).dataobj)
    # x = 52 (i = 38) reads x' = −8 − 52 = −60, the lesion
    assert np.array_equal(kept[94:], values[94:]) and kept[38, 0, 0] == 999
    with pytest.raises(SystemExit, match="3-D"):
        bench.mirrored(np.zeros((4, 4, 4, 2)), MNI_AFFINE, "left", 4.0)


def test_region_scores_count_only_the_region(bench):
    label = np.zeros((20, 20, 20), bool)
    label[2:6, 2:6, 2:6] = True  # 64 voxels, on the "left" half
    label[14:16, 14:16, 14:16] = True  # 8 voxels on the other half
    probability = np.zeros(label.shape, np.float32)
    probability[2:6, 2:6, 2:4] = 0.9  # half of the first lesion
    probability[2:4, 15:19, 15:19] = 0.8  # 32 voxels far from every lesion
    probability[14:16, 14:16, 14:16] = 0.9
    region = np.zeros(label.shape, bool)
    region[:10] = True
    far = bench.far_from_lesions(label)
    assert not far[1:7, 1:7, 1:7].any() and far[2:4, 15:19, 15:19].all()
    scores = bench.region_scores(probability, label, far, region, 0.5, voxel_mm3=2.0)
    assert scores["dsc"] == pytest.approx(2 * 32 / (64 + 64), abs=1e-4)
    assert scores["false_positive_away_mm3"] == 64.0
    empty = label * False
    assert bench.region_scores(probability * 0, empty, bench.far_from_lesions(empty), region, 0.5,
                               1.0)["dsc"] is None


def test_fold_means_and_the_card_view_hold_the_subsets_without_flair(bench):
    def row(base, adapted):
        return {"base": {"dsc": base, "false_positive_away_mm3": 10.0},
                "adapted": {"dsc": adapted, "false_positive_away_mm3": 20.0}}
    folds = {"right": {"subsets": {"T2w": row(0.1, 0.3), "FLAIR": row(0.6, 0.6)}},
             "left": {"subsets": {"T2w": row(0.0, 0.1), "FLAIR": row(0.4, 0.4)}}}
    assert bench.fold_summary(folds["right"]["subsets"]) == {
        "without_flair": {"subsets": 1, "base": 0.1, "adapted": 0.3, "change": 0.2},
        "with_flair": {"subsets": 1, "base": 0.6, "adapted": 0.6, "change": 0.0}}
    mean = bench.mean_over_folds(folds)
    assert mean["T2w"]["adapted"] == {"dsc": 0.2, "false_positive_away_mm3": 20.0}
    assert mean["FLAIR"]["base"]["dsc"] == 0.5
    result = {"data": "d", "labels": "l", "command_line": "c", "created": "t", "folds": folds,
              "mean": mean}
    view = bench.card_view(result)
    assert view["kind"] == "real" and list(view["subsets"]) == ["T2w"]
    assert view["subsets"]["T2w"]["dsc"] == 0.2 and view["subsets"]["T2w"]["sessions"] == 2

    from bids_mdpp.model import ModelCard
    from test_model import make_card

    card = make_card(contrasts=("T2w", "FLAIR"), metrics={"views": {"held-out": view}})
    assert view["intensity_model"] == "off"  # a result that does not say: the networks alone
    assert ModelCard.from_dict(card.to_dict()).real_scan_dsc(["T2w"]) == 0.2
    # measured with the intensity model: read only by runs that use it
    combined = bench.card_view({**result, "intensity_model": "combine"})
    card = make_card(contrasts=("T2w", "FLAIR"), metrics={"views": {"held-out": combined}})
    assert ModelCard.from_dict(card.to_dict()).real_scan_dsc(["T2w"]) is None
    assert ModelCard.from_dict(card.to_dict()).real_scan_dsc(
        ["T2w"], intensity_model="combine") == 0.2


def test_anchor_weights_equal_to_the_base_are_recognised(bench, tmp_path):
    from bids_mdpp.model import load_model, save_model
    from bids_mdpp.nn import build_network
    from test_model import make_card

    card = make_card()
    torch.manual_seed(0)
    base_network, other = build_network(card.network), build_network(card.network)
    base = load_model(save_model(tmp_path / "base", base_network, card))
    anchored = load_model(save_model(tmp_path / "a", other, card, anchor=("FLAIR", base_network)))
    elsewhere = load_model(save_model(tmp_path / "b", base_network, card, anchor=("FLAIR", other)))
    assert bench.anchor_is_base(anchored, base)
    assert not bench.anchor_is_base(elsewhere, base)
    assert not bench.anchor_is_base(base, base)
    assert json.loads((tmp_path / "a" / "model_card.json").read_text())["anchor"]["contrast"] == "FLAIR"
