"""Acquisition grids, head position, bias, Rician noise and output types (at 2 mm)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bids_mdpp.synth.acquisition import (
    ORIENTATIONS,
    AcquisitionParams,
    HeadPosition,
    clean_grid,
    draw_acquisition_params,
    draw_head_position,
    plan_acquisition,
    render_image,
)
from bids_mdpp.synth.anatomy import AnatomyParams
from bids_mdpp.synth.contrasts import draw_contrast_params, paint
from bids_mdpp.synth.head import draw_head_params
from bids_mdpp.synth.lesions import LesionParams
from bids_mdpp.synth.scene import SceneParams, build_scene

SCALE = 0.5
STILL = HeadPosition((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))


@pytest.fixture(scope="module")
def scene():
    lesions = LesionParams((4,), (False,), 1.0, 0.0, (), 1, 0.0, 0, 0.5)
    params = SceneParams(AnatomyParams((1.0, 1.0, 1.0), 0.0, 0, 0.0), lesions,
                         draw_head_params(np.random.default_rng(0)), texture_seed=3, vessel_seed=4)
    return build_scene(params, SCALE, with_vessels=False)


def _raw(**changes) -> AcquisitionParams:
    params = draw_acquisition_params(np.random.default_rng(2), clean=False, field_strength_t=3.0)
    base = dataclasses.replace(params, orientation="axial", flip_in_plane=(False, False),
                               tilt_deg=(0.0, 0.0), motion_deg=(0.0, 0.0, 0.0),
                               motion_mm=(0.0, 0.0, 0.0), coverage_mm=(5.0, 5.0),
                               bias=(0.0,) * 19, noise=0.02, zero_background=False)
    return dataclasses.replace(base, **changes)


def _brain_fraction_covered(scene, acquisition) -> float:
    seen = acquisition.sample(scene.template.brain, scene.template).sum() * np.prod(acquisition.grid.zooms)
    return float(seen / (scene.template.brain.sum() * np.prod(scene.template.grid.zooms)))


def test_drawn_raw_acquisitions_are_clinical_2d():
    rng = np.random.default_rng(0)
    drawn = [draw_acquisition_params(rng, clean=False, field_strength_t=1.5) for _ in range(300)]
    assert {p.orientation for p in drawn} == set(ORIENTATIONS)
    assert all(3.0 <= p.slice_thickness_mm <= 5.0 and 0.45 <= p.in_plane_mm <= 1.2 for p in drawn)
    assert all(200 <= p.fov_mm[0] <= 240 and p.fov_mm[1] <= p.fov_mm[0] for p in drawn)
    assert 0.5 < np.mean([p.orientation == "axial" for p in drawn]) < 0.7


@pytest.mark.parametrize("orientation, normal_axis", [("axial", 2), ("coronal", 1), ("sagittal", 0)])
def test_raw_grid_follows_orientation_thickness_and_resolution(scene, orientation, normal_axis):
    params = _raw(orientation=orientation, in_plane_mm=0.5, slice_thickness_mm=4.0, slice_gap_mm=0.5)
    acquisition = plan_acquisition(scene, STILL, params, has_head=True)
    grid = acquisition.grid
    assert np.allclose(grid.zooms, [1.0, 1.0, 9.0])  # every length doubles at scale 0.5
    assert abs(grid.directions[normal_axis, 2]) == pytest.approx(1.0)
    assert grid.shape[0] == round(params.fov_mm[0] / 1.0)
    assert _brain_fraction_covered(scene, acquisition) > 0.97


def test_tilt_and_head_position_move_the_grid(scene):
    tilted = plan_acquisition(scene, STILL, _raw(tilt_deg=(10.0, 0.0)), has_head=True).grid
    angle = np.degrees(np.arccos(abs(tilted.directions[2, 2])))
    assert angle == pytest.approx(10.0, abs=0.1)
    moved = HeadPosition((0.0, 0.0, 0.0), (0.0, 0.0, 20.0))
    still_grid = plan_acquisition(scene, STILL, _raw(), has_head=True).grid
    moved_grid = plan_acquisition(scene, moved, _raw(), has_head=True).grid
    assert (moved_grid.affine[2, 3] - still_grid.affine[2, 3]) == pytest.approx(20.0, abs=0.5)


def test_clean_acquisitions_share_the_mni_box(scene):
    rng = np.random.default_rng(1)
    params = [draw_acquisition_params(rng, clean=True, field_strength_t=3.0) for _ in range(2)]
    position = draw_head_position(rng, clean=True)
    grids = [plan_acquisition(scene, position, p, has_head=False).grid for p in params]
    assert grids[0].shape == grids[1].shape == (91, 109, 91)
    assert np.allclose(grids[0].affine, grids[1].affine)
    assert np.allclose(clean_grid(1.0).affine[:3, 3], [90, -126, -72])
    assert clean_grid(1.0).shape == (182, 218, 182)
    assert all(abs(r) <= 2 for r in position.rotation_deg)


def test_rician_noise_level_and_background(scene):
    params = _raw(noise=0.03, wm_value=500.0)
    acquisition = plan_acquisition(scene, STILL, params, has_head=True)
    image = paint(draw_contrast_params("T1w", np.random.default_rng(0)), scene)
    data = np.asanyarray(render_image(image, acquisition, params, scene.template).dataobj).astype(float)
    clean = acquisition.sample(image, scene.template) * params.wm_value
    air = clean < 1e-6
    sigma = params.noise * params.wm_value
    # Rician background: mean sigma * sqrt(pi / 2) (Rayleigh), never negative
    assert data[air].mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.1)
    wm = acquisition.sample(scene.template.wm, scene.template) > 0.95
    assert np.std(data[wm] - clean[wm]) == pytest.approx(sigma, rel=0.35)
    zeroed = dataclasses.replace(params, zero_background=True)
    data = np.asanyarray(render_image(image, acquisition, zeroed, scene.template).dataobj)
    assert np.all(data[air] == 0)


def test_output_types_and_stripping(scene):
    image = paint(draw_contrast_params("FLAIR", np.random.default_rng(0)), scene)
    raw = _raw()
    acquisition = plan_acquisition(scene, STILL, raw, has_head=True)
    with_head = render_image(image, acquisition, raw, scene.template)
    assert with_head.get_data_dtype() == np.uint16
    stripped = render_image(image, acquisition, raw, scene.template, stripped=True)
    brain = acquisition.sample(scene.template.brain, scene.template)
    outside = brain < 0.01
    assert np.asanyarray(with_head.dataobj)[outside].mean() > 0  # scalp and noise
    head_free = np.asanyarray(stripped.dataobj)
    # the canvas still holds the scalp here, so only the air around it is blank
    assert np.count_nonzero(head_free) < np.count_nonzero(np.asanyarray(with_head.dataobj))
    clean_params = draw_acquisition_params(np.random.default_rng(0), clean=True, field_strength_t=3.0)
    clean_acquisition = plan_acquisition(scene, STILL, clean_params, has_head=False)
    assert render_image(image, clean_acquisition, clean_params, scene.template).get_data_dtype() == np.float32


def test_bias_field_multiplies_smoothly(scene):
    image = paint(draw_contrast_params("T1w", np.random.default_rng(0)), scene)
    flat = _raw(noise=0.0)
    biased = _raw(noise=0.0, bias=(0.3,) + (0.0,) * 18)  # log-bias linear in x
    acquisition = plan_acquisition(scene, STILL, flat, has_head=True)
    a = np.asanyarray(render_image(image, acquisition, flat, scene.template).dataobj).astype(float)
    b = np.asanyarray(render_image(image, acquisition, biased, scene.template).dataobj).astype(float)
    inside = a > 100
    ratio = b[inside] / a[inside]
    assert 0.6 < ratio.min() < 0.95 and 1.05 < ratio.max() < 1.5
