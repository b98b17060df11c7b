"""benchmarks/lesion_painted.py: high-load copies, other patients' lesion masks painted in."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from benchmark_scripts import load_script


@pytest.fixture(scope="module")
def painted():
    return load_script("lesion_painted")


def _patient(seed=0):
    """A 48³ 'brain': white matter (T1w 1.0, FLAIR 1.0, noise 0.02), a CSF slab (T1w 0.2,
    FLAIR 0.3) along one side, and one real lesion of 8³ voxels whose rim (its outer voxel
    layer) is faint (FLAIR 1.3, T1w 0.9) and whose core is bright (FLAIR 2.0, T1w 0.6)."""
    rng = np.random.default_rng(seed)
    shape = (48, 48, 48)
    t1 = np.full(shape, 1.0, np.float32)
    flair = np.full(shape, 1.0, np.float32)
    fluid = np.zeros(shape, bool)
    fluid[:, :, 40:44] = True
    t1[fluid], flair[fluid] = 0.2, 0.3
    label = np.zeros(shape, bool)
    label[6:14, 6:14, 6:14] = True
    core = np.zeros(shape, bool)
    core[7:13, 7:13, 7:13] = True
    t1[label], flair[label] = 0.9, 1.3
    t1[core], flair[core] = 0.6, 2.0
    images = {"T1w": t1 + 0.02 * rng.standard_normal(shape).astype(np.float32),
              "FLAIR": flair + 0.02 * rng.standard_normal(shape).astype(np.float32)}
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    return images, brain, label, fluid, core


def test_a_painted_lesion_takes_the_real_lesions_rim_and_core(painted):
    images, brain, label, fluid, _ = _patient()
    mask = np.zeros_like(label)
    mask[22:32, 22:32, 22:32] = True                       # in white matter, far from the lesion
    mask[20:30, 20:30, 38:46] = True                       # reaches into the CSF slab
    mask[10:12, 10:12, 10:12] = True                       # inside the patient's own lesion
    out, region = painted.paint(images, brain, label, mask, (1.0, 1.0, 1.0), seed=0)
    assert region[22:32, 22:32, 22:32].all()
    assert not (region & fluid).any() and not (region & label).any() and not (region & ~brain).any()
    for name in images:                                    # nothing outside the region moves
        assert np.array_equal(out[name][~region], images[name][~region])
    block = np.zeros_like(label)
    block[22:32, 22:32, 22:32] = True
    rim = block.copy()
    rim[23:31, 23:31, 23:31] = False
    deep = np.zeros_like(label)
    deep[24:30, 24:30, 24:30] = True
    assert abs(out["FLAIR"][rim].mean() - 1.3) < 0.06       # the real lesion's faint rim
    assert abs(out["FLAIR"][deep].mean() - 2.0) < 0.06      # and its bright core
    assert abs(out["T1w"][deep].mean() - 0.6) < 0.06        # dark on T1w where bright on FLAIR
    # Where the region meets CSF, CSF is no edge: the voxels beside the slab are deep, not rim.
    beside_csf = np.zeros_like(label)
    beside_csf[23:27, 23:27, 39] = True
    assert region[beside_csf].all() and out["FLAIR"][beside_csf].mean() > 1.8


def test_neighbouring_painted_voxels_draw_alike(painted):
    """The strength drawn varies smoothly: neighbours correlate, where a speckle would not."""
    images, brain, label, _, _ = _patient(seed=1)
    rng = np.random.default_rng(2)
    grade = rng.uniform(1.3, 2.0, size=int(label.sum())).astype(np.float32)
    images["FLAIR"][label] = grade                          # a lesion of many strengths
    mask = np.zeros_like(label)
    mask[18:36, 18:36, 18:36] = True
    out, region = painted.paint(images, brain, label, mask, (1.0, 1.0, 1.0), seed=0)
    flair = out["FLAIR"][19:35, 19:35, 19:35]               # inside the painted rim
    inner = region[19:35, 19:35, 19:35]
    assert inner.all()
    values = flair[1:-1, 1:-1, 1:-1]
    neighbours = flair[2:, 1:-1, 1:-1]
    assert np.corrcoef(values.ravel(), neighbours.ravel())[0, 1] > 0.5


def test_nothing_to_paint_is_an_error(painted):
    images, brain, label, fluid, _ = _patient()
    with pytest.raises(ValueError, match="no voxel in this patient's brain"):
        painted.paint(images, brain, label, fluid, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="no reference lesion"):
        painted.paint(images, brain, np.zeros_like(label), label, (1.0, 1.0, 1.0))


def _mask_file(path, reference, box):
    image = nib.load(str(reference))
    mask = np.zeros(image.shape, np.uint8)
    mask[box] = 1
    nib.save(nib.Nifti1Image(mask, image.affine), str(path))
    return path


def test_a_dataset_of_high_load_copies(painted, tmp_path):
    from test_train_support import write_bids_dataset

    from bids_mdpp.bids import discover, find_reference_mask

    bids, labels = write_bids_dataset(tmp_path / "src", {"07": ("T1w", "FLAIR")})
    source_mask_path = labels / "sub-07" / "anat" / "sub-07_label-lesion_mask.nii.gz"
    source_mask = np.asarray(nib.load(str(source_mask_path)).dataobj) > 0
    first = _mask_file(tmp_path / "a.nii.gz", source_mask_path, np.s_[14:22, 14:22, 14:22])
    second = _mask_file(tmp_path / "b.nii.gz", source_mask_path, np.s_[18:26, 12:20, 16:24])
    out = tmp_path / "painted"
    painted.main(["--data", str(bids), "--labels", str(labels), "--out", str(out),
                  "--masks", str(first), str(second)])
    found = {s.subject: s for s in discover(out)}
    assert sorted(found) == ["07high1", "07high2"]
    assert sorted(found["07high1"].files) == ["FLAIR", "T1w"]
    reference = np.asarray(nib.load(str(find_reference_mask(
        out / "derivatives" / "manual", "07high1", None))).dataobj) > 0
    assert (reference >= source_mask).all() and reference.sum() > source_mask.sum()
    flair = nib.load(str(found["07high1"].files["FLAIR"])).get_fdata()
    original = nib.load(str(bids / "sub-07" / "anat" / "sub-07_FLAIR.nii.gz")).get_fdata()
    new = reference & ~source_mask
    assert flair[new].mean() > original[new].mean()         # the painted lesions stand out
    assert np.array_equal(flair[~new], original[~new])
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == painted.GENERATOR
    rows = (out / "participants.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["participant_id", "source", "mask", "mask_mm3", "painted_mm3",
                                   "reference_mm3"]
    assert rows[1].split("\t")[:3] == ["sub-07high1", "sub-07", "a.nii.gz"]
    assert load_script("model_views").dataset_kind(out) == "lesion-painted"
    # the shipped lesion masks for the prior, none of them painted here: all 27
    assert len(list((out / painted.LESION_ATLAS_DIR).glob("*.nii.gz"))) == 27


def test_the_prior_of_a_painted_copy_leaves_the_painted_masks_out(painted, tmp_path, monkeypatch):
    from bids_mdpp import atlas_priors

    shipped = atlas_priors.lesion_atlas_paths()
    painted_name = shipped[10].name
    written = painted.write_atlas_without(tmp_path / "atlas", [painted_name, "other.nii.gz"])
    assert len(written) == 26 and painted_name not in {p.name for p in written}
    monkeypatch.setenv(atlas_priors.LESION_ATLAS_ENV, str(tmp_path / "atlas"))
    assert [p.name for p in atlas_priors.prior_lesion_masks()] == \
        [p.name for p in shipped if p.name != painted_name]
    model_views = load_script("model_views")
    assert model_views.lesion_atlas() == str(tmp_path / "atlas")
    monkeypatch.delenv(atlas_priors.LESION_ATLAS_ENV)
    assert model_views.lesion_atlas() == "shipped"


def test_bad_masks_are_named(painted, tmp_path, capsys):
    from test_train_support import write_bids_dataset

    bids, labels = write_bids_dataset(tmp_path / "src", {"07": ("T1w", "FLAIR")})
    with pytest.raises(SystemExit):
        painted.main(["--data", str(bids), "--labels", str(labels), "--out", str(tmp_path / "o"),
                      "--masks", str(tmp_path / "absent.nii.gz")])
    assert "absent.nii.gz: no such mask" in capsys.readouterr().err
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), np.eye(4)), str(small))
    with pytest.raises(SystemExit, match="small.nii.gz: not on the grid of the reference mask"):
        painted.main(["--data", str(bids), "--labels", str(labels), "--out", str(tmp_path / "o2"),
                      "--masks", str(small)])
    reference = labels / "sub-07" / "anat" / "sub-07_label-lesion_mask.nii.gz"
    outside = _mask_file(tmp_path / "outside.nii.gz", reference, np.s_[0:1, 0:1, 0:1])
    with pytest.raises(SystemExit, match="outside.nii.gz: the mask has no voxel"):
        painted.main(["--data", str(bids), "--labels", str(labels), "--out", str(tmp_path / "o3"),
                      "--masks", str(outside)])
