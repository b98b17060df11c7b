"""Template anatomy, per-subject deformation and atrophy (at 2 mm to stay fast)."""
from __future__ import annotations

import numpy as np
import pytest

from bids_mdpp.synth.anatomy import (
    AnatomyParams,
    _displacement_grid,
    _ventricle_push,
    draw_anatomy_params,
    load_template,
    subject_transform,
)
from bids_mdpp.synth.geometry import resample, to_sitk
from bids_mdpp.synth.head import LAYERS, HeadParams, head_profile, hull_distance

SCALE = 0.5
IDENTITY = AnatomyParams((1.0, 1.0, 1.0), 0.0, 0, 0.0)


@pytest.fixture(scope="module")
def template():
    return load_template(SCALE)


def _volume_ml(template, array) -> float:
    return float(array.sum()) * float(np.prod(template.grid.zooms)) / 1000.0


def test_template_tissues_partition_the_brain(template):
    assert template.grid.shape == (109, 127, 100)
    assert np.allclose(template.grid.zooms, 2.0)
    assert np.allclose(template.gm + template.wm + template.csf, template.brain, atol=1e-5)
    for tissue in (template.gm, template.wm, template.csf):
        assert tissue.min() >= 0 and tissue.max() <= 1
    assert 1200 < _volume_ml(template, template.brain > 0.5) < 2200
    with pytest.raises(ValueError, match="read-only"):
        template.wm[0, 0, 0] = 1


def test_ventricles_are_deep_midline_csf(template):
    ventricles = template.ventricles > 0.5
    assert 15 < _volume_ml(template, ventricles) < 80
    assert template.csf[ventricles].mean() > 0.5
    x_mm = np.argwhere(ventricles)[:, 0] * template.grid.zooms[0] + template.grid.affine[0, 3]
    assert np.abs(x_mm).max() < 45


def test_template_detail_is_standardised_inside_the_brain(template):
    inside = template.brain > 0.5
    assert abs(template.detail[inside].std() - 1) < 0.05
    assert np.all(template.detail[~inside] == 0)


def test_identity_params_leave_the_template_unchanged(template):
    moved = resample(to_sitk(template.wm, template.grid), template.grid, subject_transform(template, IDENTITY))
    assert np.abs(moved - template.wm).max() < 1e-4


def test_head_scale_changes_the_brain_volume(template):
    bigger = AnatomyParams((1.08, 1.08, 1.08), 0.0, 0, 0.0)
    moved = resample(to_sitk(template.brain, template.grid), template.grid, subject_transform(template, bigger))
    ratio = moved.sum() / template.brain.sum()
    assert ratio == pytest.approx(1.08**3, rel=0.03)


def test_atrophy_enlarges_the_ventricles_without_folding(template):
    source = to_sitk(template.ventricles, template.grid)
    volumes = []
    for enlargement in (0.0, 2.0, 4.0):
        params = AnatomyParams((1.0, 1.0, 1.0), 0.0, 0, enlargement)
        moved = resample(source, template.grid, subject_transform(template, params))
        volumes.append(_volume_ml(template, moved > 0.5))
    assert volumes[0] < volumes[1] < volumes[2]
    assert volumes[2] > 1.4 * volumes[0]
    # the largest drawn push keeps a positive Jacobian: the mapping never folds
    grid = _displacement_grid(template)
    push = 4.0 * _ventricle_push(template)
    jacobian = np.stack([np.stack(np.gradient(push[..., i], *grid.zooms), -1) for i in range(3)], -2)
    assert np.linalg.det(jacobian + np.eye(3)).min() > 0.2


def test_random_deformation_is_smooth_and_seeded(template):
    params = AnatomyParams((1.0, 1.0, 1.0), 3.0, 42, 0.0)
    a = resample(to_sitk(template.wm, template.grid), template.grid, subject_transform(template, params))
    b = resample(to_sitk(template.wm, template.grid), template.grid, subject_transform(template, params))
    assert np.array_equal(a, b)
    assert np.abs(a - template.wm).max() > 0.3  # it moved tissue boundaries
    assert a.sum() == pytest.approx(template.wm.sum(), rel=0.05)  # without creating tissue


def test_drawn_anatomy_stays_in_its_ranges():
    rng = np.random.default_rng(0)
    for _ in range(200):
        params = draw_anatomy_params(rng)
        assert all(0.89 < s < 1.12 for s in params.head_scale)
        assert 1.0 <= params.deformation_mm <= 3.5
        assert 0.0 <= params.ventricle_enlargement_mm <= 4.0


def test_head_layers_surround_the_brain(template):
    distance = hull_distance(template)
    assert distance[template.brain > 0.5].max() <= 0  # the hull holds the whole brain
    assert (distance > 0).any()
    thickness = tuple(float(i + 1) for i in range(len(LAYERS)))
    head = HeadParams(thickness, 0.0, 0)
    values = tuple(10.0 * (i + 1) for i in range(len(LAYERS)))
    bounds = np.concatenate([[0.0], np.cumsum(thickness)])
    middles = (bounds[:-1] + bounds[1:]) / 2
    assert np.allclose(head_profile(middles, head, values), values)
    assert head_profile(np.array([-5.0]), head, values)[0] == values[0]  # CSF inside the hull
    assert head_profile(np.array([bounds[-1] + 2.0]), head, values)[0] == 0  # air beyond the skin
