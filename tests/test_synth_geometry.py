"""Grids, resampling conventions and random fields of the synthetic-data engine."""
from __future__ import annotations

import numpy as np
import pytest

from bids_mdpp.synth.fields import monomial_powers, polynomial_field, smooth_field, tube_network
from bids_mdpp.synth.geometry import (
    Grid,
    affine_transform,
    bounding_box,
    chain,
    from_sitk,
    grid_of,
    make_grid,
    nifti_image,
    resample,
    rigid_matrix,
    to_sitk,
)


@pytest.fixture
def oblique_grid() -> Grid:
    directions = rigid_matrix((10, -20, 30), (0, 0, 0))[:3, :3] @ np.diag([-1, 1, 1])
    return make_grid(directions, (0.8, 1.5, 3.0), (20, 24, 16), (5.0, -3.0, 12.0))


def test_sitk_round_trip_keeps_array_and_geometry(oblique_grid):
    data = np.random.default_rng(0).random(oblique_grid.shape, dtype=np.float32)
    image = to_sitk(data, oblique_grid)
    assert np.array_equal(from_sitk(image), data)
    assert np.allclose(grid_of(image).affine, oblique_grid.affine)
    # a voxel's physical point (LPS) is the RAS affine's point with x and y negated
    ras = oblique_grid.affine @ [3, 5, 7, 1]
    assert np.allclose(image.TransformIndexToPhysicalPoint((7, 5, 3)), ras[:3] * [-1, -1, 1])


def test_resample_follows_the_output_to_input_convention():
    grid = make_grid(np.eye(3), (1, 1, 1), (12, 12, 12), (0, 0, 0))
    data = np.zeros(grid.shape, np.float32)
    data[6, 6, 6] = 1
    # output point p samples the input at p + (2, 0, 0) mm: the dot appears 2 voxels lower in x
    moved = resample(to_sitk(data, grid), grid, affine_transform(rigid_matrix((0, 0, 0), (2, 0, 0))))
    assert tuple(np.argwhere(moved > 0.5)[0]) == (4, 6, 6)


def test_chain_applies_its_arguments_in_order():
    shift = affine_transform(rigid_matrix((0, 0, 0), (10, 0, 0)))
    turn = affine_transform(rigid_matrix((0, 0, 90), (0, 0, 0)))
    point_lps = np.array(chain(shift, turn).TransformPoint((-1.0, 0.0, 0.0)))  # RAS (1, 0, 0)
    # shift first: RAS (11, 0, 0); then 90° about z: RAS (0, 11, 0) = LPS (0, -11, 0)
    assert np.allclose(point_lps, (0.0, -11.0, 0.0))


def test_crop_and_bounding_box_agree():
    grid = make_grid(np.eye(3), (2, 2, 2), (10, 10, 10), (0, 0, 0))
    mask = np.zeros(grid.shape, bool)
    mask[2:4, 5, 6:9] = True
    box = bounding_box(mask)
    assert box == (slice(2, 4), slice(5, 6), slice(6, 9))
    sub = grid.crop(box)
    assert sub.shape == (2, 1, 3)
    assert np.allclose(sub.affine @ [0, 0, 0, 1], grid.affine @ [2, 5, 6, 1])
    assert bounding_box(np.zeros((3, 3, 3), bool)) is None


def test_nifti_image_has_scanner_codes_and_mm(oblique_grid):
    img = nifti_image(np.zeros(oblique_grid.shape, np.uint8), oblique_grid)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert img.header.get_xyzt_units()[0] == "mm"
    assert np.allclose(img.affine, oblique_grid.affine)


@pytest.mark.parametrize("sigma", [1.0, 6.0])
def test_smooth_field_is_standardised_smooth_and_seeded(sigma):
    grid = make_grid(np.eye(3), (1, 1, 1), (40, 40, 40), (0, 0, 0))
    field = smooth_field(grid, sigma, seed=3)
    assert field.shape == grid.shape and field.dtype == np.float32
    assert abs(field.mean()) < 0.05 and abs(field.std() - 1) < 0.05
    assert np.array_equal(field, smooth_field(grid, sigma, seed=3))
    assert not np.allclose(field, smooth_field(grid, sigma, seed=4))
    neighbours = np.corrcoef(field[:-1].ravel(), field[1:].ravel())[0, 1]
    assert neighbours > (0.4 if sigma == 1.0 else 0.9)


def test_tube_network_is_sparse_and_bounded():
    grid = make_grid(np.eye(3), (1, 1, 1), (40, 40, 40), (0, 0, 0))
    tubes = tube_network(grid, 2.5, seed=1, width=0.12)
    assert tubes.min() >= 0 and tubes.max() <= 1
    assert 0.001 < (tubes > 0.5).mean() < 0.1


def test_polynomial_field_is_the_polynomial():
    grid = make_grid(np.eye(3), (1, 1, 1), (30, 30, 30), (0, 0, 0))
    powers = monomial_powers()
    assert len(powers) == 19 and (1, 0, 0) in powers
    assert np.allclose(polynomial_field(grid, [0.0] * 19, (0, 0, 0), 100.0), 0)
    coefficients = [0.5 if p == (1, 0, 0) else 0.0 for p in powers]
    field = polynomial_field(grid, coefficients, (0, 0, 0), 100.0)
    x = grid.affine[0, 0] * np.arange(30) + grid.affine[0, 3]
    assert np.allclose(field[:, 10, 10], 0.5 * x / 100.0, atol=1e-3)
