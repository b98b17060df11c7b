"""Training data: labelled sessions, the subject-wise split, masks on the model grid, caches."""
from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
from test_train_support import normalised_subject, write_bids_dataset

from bids_mdpp.errors import InputDataError, NoInputError, UsageError
from bids_mdpp.session import SessionInputs
from bids_mdpp.training.data import (
    LabelledSession,
    PreparedSession,
    cache_session,
    check_mask,
    find_labelled_sessions,
    mask_to_grid,
    split_subjects,
)

ALL = ("T1w", "FLAIR", "T2w", "PDw", "ceT1w")


def sessions_of(subjects: dict[str, int]) -> list[LabelledSession]:
    """Fake labelled sessions: subject label → number of sessions."""
    out = []
    for subject, n in subjects.items():
        for s in range(n):
            inputs = SessionInputs(subject, f"{s}" if n > 1 else None, {"FLAIR": f"{subject}{s}"})
            out.append(LabelledSession(inputs, f"mask{subject}{s}"))
    return out


def test_split_is_subject_wise_reproducible_and_never_empty():
    sessions = sessions_of({"a": 2, "b": 1, "c": 3, "d": 1, "e": 2})
    train, val = split_subjects(sessions, 0.4, seed=3)
    train_subjects = {s.inputs.subject for s in train}
    val_subjects = {s.inputs.subject for s in val}
    assert len(val_subjects) == 2 and not train_subjects & val_subjects
    assert len(train) + len(val) == len(sessions)  # every session of a subject on one side
    assert split_subjects(sessions, 0.4, seed=3) == (train, val)
    assert {s.inputs.subject for s in split_subjects(sessions, 0.4, seed=4)[1]} != val_subjects \
        or {s.inputs.subject for s in split_subjects(sessions, 0.4, seed=5)[1]} != val_subjects
    assert split_subjects(sessions, 0.0, seed=0)[1] == []
    assert len({s.inputs.subject for s in split_subjects(sessions, 0.01, seed=0)[1]}) == 1
    assert len({s.inputs.subject for s in split_subjects(sessions, 0.99, seed=0)[0]}) == 1
    one = sessions_of({"a": 2})
    assert split_subjects(one, 0.5, seed=0) == (one, [])
    with pytest.raises(UsageError, match="val-fraction"):
        split_subjects(sessions, 1.0, seed=0)


def test_labelled_sessions_skip_unlabelled_and_unusable_ones(tmp_path, caplog):
    bids, labels = write_bids_dataset(
        tmp_path, {"01": ("T1w", "FLAIR"), "02": ("FLAIR",), "03": ("T2w",), "04": ("T1w",)},
        sessions={"01": ["1", "2"]}, masks={"sub-01_ses-1", "sub-02", "sub-03"}, shape=(12, 12, 12))
    with caplog.at_level(logging.WARNING, logger="bids_mdpp"):
        found = find_labelled_sessions(bids, labels, model_contrasts=("T1w", "FLAIR"))
    assert [s.key for s in found] == ["sub-01_ses-1", "sub-02"]
    assert found[0].mask.name == "sub-01_ses-1_label-lesion_mask.nii.gz"
    assert found[1].inputs.contrasts == ("FLAIR",)
    text = caplog.text
    assert "sub-01_ses-2: skipped, no reference lesion mask" in text
    assert "sub-03: skipped, none of T1w, FLAIR" in text
    both = find_labelled_sessions(bids, labels, model_contrasts=("T1w", "FLAIR"), require_all=True)
    assert [s.key for s in both] == ["sub-01_ses-1"]
    only = find_labelled_sessions(bids, labels, model_contrasts=ALL, participant_labels=["02"])
    assert [s.key for s in only] == ["sub-02"]


def test_no_labelled_session_and_missing_labels_folder_are_errors(tmp_path):
    bids, labels = write_bids_dataset(tmp_path, {"01": ("FLAIR",)}, masks=set(), shape=(12, 12, 12))
    with pytest.raises(NoInputError, match="label-lesion_mask") as info:
        find_labelled_sessions(bids, labels, model_contrasts=ALL)
    assert info.value.exit_code == 66
    with pytest.raises(NoInputError, match="does not exist"):
        find_labelled_sessions(bids, tmp_path / "nowhere", model_contrasts=ALL)


def write(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def test_mask_maps_onto_the_model_grid_in_world_coordinates(tmp_path):
    native = np.zeros((20, 20, 10), np.uint8)
    native[8:12, 8:12, 4:6] = 1
    affine = np.diag([1.0, 1.0, 2.0, 1.0])  # 2 mm slices
    mask = write(tmp_path / "mask.nii.gz", native, affine)
    grid_affine = np.eye(4)
    grid_affine[:3, 3] = [4, 4, 0]  # a 1 mm grid starting 4 mm further
    grid = write(tmp_path / "grid.nii.gz", np.ones((12, 12, 20), np.uint8), grid_affine)
    label = mask_to_grid(mask, grid)
    assert label.shape == (12, 12, 20) and label.dtype == np.uint8
    expected = np.zeros((12, 12, 20), np.uint8)
    expected[4:8, 4:8, 7:12] = 1  # 2 mm voxels centred at 8 and 10 mm span 7–11 mm
    np.testing.assert_array_equal(label, expected)
    far = np.eye(4)
    far[:3, 3] = 500
    with pytest.raises(InputDataError, match="mask.nii.gz.*reference contrast"):
        mask_to_grid(write(tmp_path / "mask.nii.gz", native, far), grid)


def test_bad_masks_are_errors_naming_the_file(tmp_path):
    check_mask(write(tmp_path / "empty.nii.gz", np.zeros((10, 10, 10), np.uint8)))
    bad = np.zeros((10, 10, 10), np.float32)
    bad[1, 1, 1] = np.nan
    with pytest.raises(InputDataError, match="nan.nii.gz.*NaN"):
        check_mask(write(tmp_path / "nan.nii.gz", bad))
    with pytest.raises(InputDataError, match="4d.nii.gz.*3D"):
        check_mask(write(tmp_path / "4d.nii.gz", np.zeros((10, 10, 10, 2), np.uint8)))
    with pytest.raises(InputDataError, match="neg.nii.gz.*negative"):
        check_mask(write(tmp_path / "neg.nii.gz", -np.ones((10, 10, 10), np.float32)))


def test_the_slab_cache_is_reused_until_an_input_changes(tmp_path, caplog):
    volumes, label, brain = normalised_subject(4, ("T1w", "FLAIR"))
    images = {c: write(tmp_path / f"{c}.nii.gz", v) for c, v in volumes.items()}
    prepared = PreparedSession(
        key="sub-4", subject="4", images=images,
        brain_mask=write(tmp_path / "brain.nii.gz", brain),
        mask_native=write(tmp_path / "mask.nii.gz", label))
    first = cache_session(prepared, tmp_path / "slabs", ("T1w", "FLAIR", "T2w"))
    assert first.available == (True, True, False)
    np.testing.assert_array_equal(first.label(), label)
    stamp = (tmp_path / "slabs" / "sub-4" / "images.npy").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="bids_mdpp"):
        again = cache_session(prepared, tmp_path / "slabs", ("T1w", "FLAIR", "T2w"))
    assert again == first and "reusing the slab cache" in caplog.text
    assert (tmp_path / "slabs" / "sub-4" / "images.npy").stat().st_mtime_ns == stamp
    write(tmp_path / "mask.nii.gz", np.zeros_like(label))  # a corrected reference mask
    changed = cache_session(prepared, tmp_path / "slabs", ("T1w", "FLAIR", "T2w"))
    assert changed.fingerprint != first.fingerprint and not np.any(changed.label())
    other = cache_session(prepared, tmp_path / "slabs", ("FLAIR",))
    assert other.contrasts == ("FLAIR",)


def test_mask_volume_survives_a_grid_offset_by_half_a_voxel(tmp_path):
    native = np.zeros((30, 30, 30), np.uint8)
    grid = np.indices(native.shape)
    native[np.sqrt(((grid - 15) ** 2).sum(0)) < 6] = 1  # a 6 mm ball
    mask = write(tmp_path / "ball.nii.gz", native)
    shifted = np.eye(4)
    shifted[:3, 3] = 0.5
    grid_img = write(tmp_path / "grid.nii.gz", np.ones((29, 29, 29), np.uint8), shifted)
    label = mask_to_grid(mask, grid_img)
    assert abs(int(label.sum()) - int(native.sum())) / native.sum() < 0.1
