"""Lesion counting, volumes and centroids on hand-checkable masks."""
from __future__ import annotations

import numpy as np
import pytest

from bids_mdpp.lesions import COLUMNS, label_lesions, lesion_table, voxel_volume_mm3


def empty(shape=(10, 10, 10)) -> np.ndarray:
    return np.zeros(shape, np.uint8)


def test_corner_touching_voxels_are_one_lesion_with_26_connectivity():
    mask = empty()
    mask[2, 2, 2] = mask[3, 3, 3] = 1  # touch by a corner only
    assert lesion_table(mask, np.eye(4)).count == 1
    assert lesion_table(mask, np.eye(4), connectivity=18).count == 2
    assert lesion_table(mask, np.eye(4), connectivity=6).count == 2


def test_edge_touching_voxels_join_under_18_but_not_6():
    mask = empty()
    mask[2, 2, 2] = mask[3, 3, 2] = 1  # share an edge
    assert lesion_table(mask, np.eye(4), connectivity=18).count == 1
    assert lesion_table(mask, np.eye(4), connectivity=6).count == 2


def test_separated_voxels_are_separate_lesions():
    mask = empty()
    mask[1, 1, 1] = mask[1, 1, 3] = 1  # one empty voxel between them
    assert lesion_table(mask, np.eye(4)).count == 2


def test_volume_and_centroid_use_the_affine():
    mask = empty()
    mask[4:6, 2, 7] = 1  # 2 voxels along x
    affine = np.array([[2.0, 0, 0, -10], [0, 3.0, 0, 5], [0, 0, 0.5, 1], [0, 0, 0, 1]])
    table = lesion_table(mask, affine)
    (row,) = table.rows
    assert row["n_voxels"] == 2
    assert row["volume_mm3"] == pytest.approx(2 * 2.0 * 3.0 * 0.5)
    # voxel centre (4.5, 2, 7) → world (2*4.5-10, 3*2+5, 0.5*7+1)
    assert (row["centroid_x_mm"], row["centroid_y_mm"], row["centroid_z_mm"]) == pytest.approx(
        (-1.0, 11.0, 4.5))
    assert table.total_volume_mm3 == pytest.approx(6.0)
    assert tuple(row) == COLUMNS


def test_voxel_volume_of_an_oblique_flipped_affine():
    theta = np.deg2rad(30)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-1.0, 2.0, 3.0])
    assert voxel_volume_mm3(affine) == pytest.approx(6.0)


def test_lesions_are_numbered_largest_first():
    mask = empty((12, 12, 12))
    mask[1, 1, 1] = 1  # 1 voxel, found first by the scan
    mask[6:9, 6:9, 6:9] = 1  # 27 voxels
    mask[1, 8:10, 1] = 1  # 2 voxels
    rows = lesion_table(mask, np.eye(4)).rows
    assert [r["n_voxels"] for r in rows] == [27, 2, 1]
    assert [r["lesion_id"] for r in rows] == [1, 2, 3]
    assert rows[0]["centroid_x_mm"] == pytest.approx(7.0)


def test_minimum_size_removes_small_lesions_from_table_and_mask():
    mask = empty()
    mask[1, 1, 1] = 1  # 8 mm³ with 2 mm voxels
    mask[5:7, 5, 5] = 1  # 16 mm³
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    table = lesion_table(mask, affine, min_size_mm3=10.0)
    assert table.count == 1 and table.total_volume_mm3 == pytest.approx(16.0)
    assert table.mask.sum() == 2 and table.mask[1, 1, 1] == 0 and table.mask.dtype == np.uint8
    # a lesion exactly at the minimum size is kept
    assert lesion_table(mask, affine, min_size_mm3=16.0).count == 1
    # default 0 keeps everything
    assert lesion_table(mask, affine).count == 2


def test_empty_mask_gives_an_empty_table():
    table = lesion_table(empty(), np.eye(4))
    assert table.count == 0 and table.rows == () and table.total_volume_mm3 == 0.0
    assert table.mask.sum() == 0


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="connectivity must be 6, 18 or 26"):
        lesion_table(empty(), np.eye(4), connectivity=8)
    with pytest.raises(ValueError, match="minimum lesion size"):
        lesion_table(empty(), np.eye(4), min_size_mm3=-1)
    with pytest.raises(ValueError, match="expected a 3D mask"):
        label_lesions(np.zeros((4, 4)))
