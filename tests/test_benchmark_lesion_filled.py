"""benchmarks/lesion_filled.py: lesion-free and low-load copies of a labelled dataset."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from benchmark_scripts import load_script


@pytest.fixture(scope="module")
def filled():
    return load_script("lesion_filled")


def test_smallest_lesions_are_kept_within_the_budget(filled):
    sizes = np.array([500.0, 40.0, 300.0, 10.0, 700.0])
    assert filled.smallest_within(sizes, 300.0) == [4, 2]          # 10 + 40; + 300 would exceed
    assert filled.smallest_within(sizes, 350.0) == [4, 2, 3]       # 10 + 40 + 300
    assert filled.smallest_within(sizes, 5.0) == []
    labelled, counts = filled.components(np.pad(np.eye(3, dtype=bool)[:, :, None], 2))
    assert labelled.max() == 1 and counts.tolist() == [3]          # diagonal voxels touch (26-conn.)


def _block(seed=0):
    """A 40³ 'brain': white matter (T1w 1.0, FLAIR 1.0) with grey matter (0.7 / 1.2) on one side,
    two bright FLAIR lesions (dark on T1w); noise 0.03."""
    rng = np.random.default_rng(seed)
    shape = (40, 40, 40)
    t1 = np.full(shape, 1.0, np.float32)
    flair = np.full(shape, 1.0, np.float32)
    t1[:, :8], flair[:, :8] = 0.7, 1.2
    label = np.zeros(shape, bool)
    label[18:24, 18:24, 18:24] = True                  # 216 voxels: removed
    label[30:32, 30:32, 30:32] = True                  # 8 voxels: kept
    t1[label], flair[label] = 0.6, 1.8
    images = {"T1w": t1 + 0.03 * rng.standard_normal(shape).astype(np.float32),
              "FLAIR": flair + 0.03 * rng.standard_normal(shape).astype(np.float32)}
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    return images, brain, label


def test_removed_lesions_take_the_surrounding_white_matter(filled):
    images, brain, label = _block()
    keep = np.zeros_like(label)
    keep[30:32, 30:32, 30:32] = True
    out, region = filled.fill(images, brain, label, keep, (1.0, 1.0, 1.0), seed=0)
    removed = label & ~keep
    assert region[removed].all() and not region[keep].any()
    for name in images:
        lesion_values = out[name][removed]
        assert abs(lesion_values.mean() - 1.0) < 0.02, name       # white matter, not lesion
        assert 0.015 < lesion_values.std() < 0.06, name           # noisy like the tissue around it
        assert np.array_equal(out[name][~region], images[name][~region])  # nothing else moves
        assert np.array_equal(out[name][keep], images[name][keep])


def test_a_dataset_of_lesion_free_and_low_load_copies(filled, tmp_path):
    from test_train_support import write_bids_dataset

    from bids_mdpp.bids import discover, find_reference_mask

    bids, labels = write_bids_dataset(tmp_path / "src", {"07": ("T1w", "FLAIR")})
    source_mask = np.asarray(nib.load(str(
        labels / "sub-07" / "anat" / "sub-07_label-lesion_mask.nii.gz")).dataobj) > 0
    _, sizes = filled.components(source_mask)
    budget = float(sizes.min())                       # room for the smallest lesion only
    out = tmp_path / "filled"
    filled.main(["--data", str(bids), "--labels", str(labels), "--out", str(out),
                 "--low-load-mm3", str(budget)])
    found = {s.subject: s for s in discover(out)}
    assert sorted(found) == ["07free", "07low"]
    assert sorted(found["07low"].files) == ["FLAIR", "T1w"]
    masks = {p: np.asarray(nib.load(str(find_reference_mask(
        out / "derivatives" / "manual", p, None))).dataobj) > 0 for p in found}
    assert not masks["07free"].any()
    assert 0 < masks["07low"].sum() <= budget and (masks["07low"] <= source_mask).all()
    flair = nib.load(str(found["07free"].files["FLAIR"])).get_fdata()
    original = nib.load(str(bids / "sub-07" / "anat" / "sub-07_FLAIR.nii.gz")).get_fdata()
    assert flair[source_mask].mean() < original[source_mask].mean()   # lesions no longer stand out
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == filled.GENERATOR
    assert (out / "participants.tsv").read_text().splitlines()[0].startswith("participant_id\t")
    model_views = load_script("model_views")
    assert model_views.dataset_kind(out) == "lesion-filled"


@pytest.mark.parametrize("extra, message", [
    (["--low-load-mm3", "0"], "--low-load-mm3 must be positive"),
    (["--data", "/nonexistent/data"], "no such dataset"),
])
def test_bad_arguments_are_refused(filled, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        filled.main(["--out", str(tmp_path / "out"), *extra])
    assert message in capsys.readouterr().err


def test_an_image_off_its_mask_grid_is_named(filled, tmp_path):
    from test_train_support import write_bids_dataset

    bids, labels = write_bids_dataset(tmp_path / "src", {"07": ("T1w", "FLAIR")})
    path = bids / "sub-07" / "anat" / "sub-07_FLAIR.nii.gz"
    image = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :, :30], image.affine), str(path))
    with pytest.raises(SystemExit, match="sub-07_FLAIR.nii.gz: not on the grid of the reference mask"):
        filled.main(["--data", str(bids), "--labels", str(labels), "--out", str(tmp_path / "out")])
    out = tmp_path / "busy"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(SystemExit):
        filled.main(["--data", str(bids), "--labels", str(labels), "--out", str(out)])
