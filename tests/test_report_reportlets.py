"""Report figures: where the slices go, and that each figure is a real PNG."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from test_outputs_fakes import ball, head

from bids_mdpp.reports.reportlets import N_CUTS, cut_coords, lesion_contours, lesion_probability

SHAPE = (32, 32, 32)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # voxel i → 2 i mm


def mask_img(*balls) -> nib.Nifti1Image:
    data = np.zeros(SHAPE, np.uint8)
    for centre, radius in balls:
        data[ball(SHAPE, centre, radius)] = 1
    return nib.Nifti1Image(data, AFFINE)


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_cuts_go_through_the_lesion():
    cuts = cut_coords(mask_img(((5, 20, 10), 1.0)), head(SHAPE, AFFINE))
    # a 1-voxel-radius ball spans voxels 4–6 in x, 19–21 in y, 9–11 in z
    assert min(cuts["x"]) >= 8 and max(cuts["x"]) <= 12
    assert min(cuts["y"]) >= 38 and max(cuts["y"]) <= 42
    assert min(cuts["z"]) >= 18 and max(cuts["z"]) <= 22
    assert all(1 <= len(cuts[a]) <= N_CUTS for a in "xyz")


def test_without_lesions_cuts_spread_over_the_brain():
    cuts = cut_coords(mask_img(), head(SHAPE, AFFINE))
    for axis in "xyz":
        assert len(cuts[axis]) == N_CUTS
        assert 10 < min(cuts[axis]) < max(cuts[axis]) < 54


@pytest.mark.parametrize("balls", [(((10, 12, 14), 2.0),), ()], ids=["lesions", "empty"])
def test_contour_figure_is_a_png(tmp_path, balls):
    dest = tmp_path / "figures" / "lesions.png"
    out = lesion_contours(head(SHAPE, AFFINE), mask_img(*balls), dest, title="T1w")
    assert out == dest
    width, height = png_size(dest)
    assert width > 300 and height > 100
    assert [p.name for p in dest.parent.iterdir()] == ["lesions.png"]


def test_probability_figure_is_a_png(tmp_path):
    mask = mask_img(((10, 12, 14), 2.0))
    prob = nib.Nifti1Image(np.asarray(mask.dataobj, np.float32) * 0.8, AFFINE)
    dest = lesion_probability(head(SHAPE, AFFINE), prob, mask, tmp_path / "p.png", title="p")
    assert png_size(dest)[0] > 300
