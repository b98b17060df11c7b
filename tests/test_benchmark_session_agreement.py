"""benchmarks/session_agreement.py without networks: moving a mask between sessions, agreement."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from benchmark_scripts import load_script

@pytest.fixture(scope="module")
def sessions_benchmark():
    return load_script("session_agreement")


def test_mask_moves_onto_the_first_grid_with_the_transform(sessions_benchmark):
    # session 2's grid is shifted 5 mm to the right (RAS x) and has 2 mm voxels along z
    fixed = nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4))
    second_affine = np.diag([1.0, 1.0, 2.0, 1.0])
    second_affine[0, 3] = 5.0
    mask = np.zeros((20, 20, 10), np.uint8)
    mask[3:6, 4:8, 2:4] = 1                  # world x 8–10 mm, y 4–7, z 3–7 (2 mm voxels at 4, 6)
    moving = nib.Nifti1Image(mask, second_affine)
    identity = sitk.Euler3DTransform()
    moved = sessions_benchmark.mask_on_fixed_grid(moving, fixed, identity)
    expected = np.zeros((20, 20, 20), bool)
    expected[8:11, 4:8, 3:7] = True          # z = 3…6 fall in the voxels at 4 and 6 mm (halves round up)
    assert np.array_equal(moved, expected)
    # the head moved 2 mm to the patient's left (+x RAS = −x LPS) between sessions: the transform
    # maps fixed points to moving points
    shift = sitk.TranslationTransform(3, (-2.0, 0.0, 0.0))
    assert np.array_equal(sessions_benchmark.mask_on_fixed_grid(moving, fixed, shift),
                          np.roll(expected, -2, axis=0))


def test_agreement_by_hand(sessions_benchmark):
    first = np.zeros((4, 4, 4), bool)
    first[0, :, 0] = True                                  # 4 voxels
    second = np.zeros_like(first)
    second[0, :2, 0] = True                                # 2 of them
    result = sessions_benchmark.agreement(first, second, {"TotalLesionVolume": 400.0, "LesionCount": 3},
                                          {"TotalLesionVolume": 200.0, "LesionCount": 2})
    assert result == {"volume_mm3": [400.0, 200.0], "lesion_count": [3, 2],
                      "relative_volume_difference": pytest.approx(200 / 300, abs=1e-4),
                      "dsc_between_sessions": pytest.approx(4 / 6, abs=1e-4)}
    empty = sessions_benchmark.agreement(np.zeros(3, bool), np.zeros(3, bool),
                                         {"TotalLesionVolume": 0, "LesionCount": 0},
                                         {"TotalLesionVolume": 0, "LesionCount": 0})
    assert empty["dsc_between_sessions"] == 1.0 and empty["relative_volume_difference"] == 0.0


def test_session_outputs_and_raw_paths(sessions_benchmark, tmp_path):
    anat = tmp_path / "sub-01" / "ses-2" / "anat"
    anat.mkdir(parents=True)
    (anat / "sub-01_ses-2_space-orig_label-lesion_mask.nii.gz").write_bytes(b"")
    (anat / "sub-01_ses-2_space-orig_label-lesion_mask.json").write_text(json.dumps({"LesionCount": 1}))
    mask, sidecar = sessions_benchmark.session_outputs(tmp_path, "01", "2")
    assert mask.name.endswith("_mask.nii.gz") and sidecar == {"LesionCount": 1}
    with pytest.raises(sessions_benchmark.real_scans.BenchmarkError, match="found 0"):
        sessions_benchmark.session_outputs(tmp_path, "01", "1")
    data = Path("/data")
    assert sessions_benchmark.raw_path(data, "bids:raw:sub-01/ses-1/anat/x_FLAIR.nii.gz") == \
        data / "sub-01/ses-1/anat/x_FLAIR.nii.gz"
    with pytest.raises(sessions_benchmark.real_scans.BenchmarkError, match="SpatialReference"):
        sessions_benchmark.raw_path(data, "sub-01/x.nii.gz")
