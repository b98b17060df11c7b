"""Contrast physics, measured on generated images with the known tissue maps (at 2 mm)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bids_mdpp.contrasts import CONTRASTS
from bids_mdpp.synth.acquisition import draw_acquisition_params, draw_head_position, plan_acquisition, render_image
from bids_mdpp.synth.anatomy import draw_anatomy_params
from bids_mdpp.synth.contrasts import draw_contrast_params, paint
from bids_mdpp.synth.lesions import Ellipsoid, LesionParams
from bids_mdpp.synth.scene import SceneParams, build_scene

SCALE = 0.5
N_DRAWS = 3  # intensity draws per contrast measured on images


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(5)
    lesions = LesionParams(
        atlas=(3, 11), mirror=(False, True), keep_fraction=1.0, growth_mm=0.6,
        ellipsoids=(Ellipsoid("periventricular", 0.5, (5.0, 5.0, 7.0), (0.0, 30.0, 0.0)),),
        component_seed=3, black_hole_fraction=0.3, n_enhancing=4, ring_fraction=0.5,
    )
    params = SceneParams(draw_anatomy_params(rng), lesions, None, texture_seed=1, vessel_seed=2)
    return build_scene(params, SCALE, with_vessels=True)


@pytest.fixture(scope="module")
def measured(scene):
    """Per contrast, a list of tissue medians relative to WM, one per intensity draw."""
    rng = np.random.default_rng(11)
    position = draw_head_position(rng, clean=True)
    acquisition_params = dataclasses.replace(
        draw_acquisition_params(rng, clean=True, field_strength_t=3.0),
        slice_thickness_mm=0.5, noise=0.005, bias=(0.0,) * 19,
    )
    acquisition = plan_acquisition(scene, position, acquisition_params, has_head=False)
    template, lesions = scene.template, scene.lesions
    sample = lambda canvas: acquisition.sample(canvas, template)  # noqa: E731
    lesion, enhancing, vessels = sample(lesions.fraction), sample(lesions.enhancing), sample(scene.vessels)
    healthy = (lesion < 0.01) & (vessels < 0.05)
    masks = {
        "WM": (sample(template.wm) > 0.95) & healthy,
        "GM": (sample(template.gm) > 0.75) & healthy,
        "CSF": (sample(template.ventricles) > 0.95) & (sample(template.csf) > 0.95) & healthy,
        "lesion": (lesion > 0.9) & (enhancing < 0.05),
        "enhancing": enhancing > 0.6,
    }
    assert all(m.sum() >= 5 for m in masks.values()), {k: int(m.sum()) for k, m in masks.items()}
    out = {c: [] for c in CONTRASTS}
    for contrast in CONTRASTS:
        for _ in range(N_DRAWS):
            params = draw_contrast_params(contrast, rng)
            img = render_image(paint(params, scene), acquisition, acquisition_params, template, stripped=True)
            data = np.asanyarray(img.dataobj)
            medians = {k: float(np.median(data[m])) for k, m in masks.items()}
            out[contrast].append({k: v / medians["WM"] for k, v in medians.items()})
    return out


def test_t1w_wm_gm_csf_and_lesions_like_gm_or_darker(measured):
    for r in measured["T1w"]:
        assert 1.0 > r["GM"] > r["CSF"]
        assert r["lesion"] < 1.0 and r["lesion"] < 1.2 * r["GM"]


def test_t2w_csf_lesion_gm_wm(measured):
    for r in measured["T2w"]:
        assert r["CSF"] > r["lesion"] > r["GM"] > 1.0


def test_flair_lesion_gm_wm_and_suppressed_csf(measured):
    for r in measured["FLAIR"]:
        assert r["lesion"] > r["GM"] > 1.0
        assert r["CSF"] < 0.5


def test_pdw_csf_like_lesion_above_gm_above_wm(measured):
    for r in measured["PDw"]:
        assert r["lesion"] == pytest.approx(r["CSF"], rel=0.2)
        assert r["lesion"] >= 0.97 * r["GM"] and r["GM"] > 1.0


def test_cet1w_is_t1_like_with_enhancing_lesions(measured):
    for r in measured["ceT1w"]:
        assert 1.0 > r["GM"] > r["CSF"]
        assert r["enhancing"] > 1.05 > r["lesion"]
    for r in measured["T1w"]:  # without gadolinium the same lesions do not light up
        assert r["enhancing"] < 1.0


def test_cet1w_shows_bright_vessels(scene):
    rng = np.random.default_rng(0)
    params = draw_contrast_params("ceT1w", rng)
    image = paint(params, scene)
    vessels = scene.vessels > 0.8
    assert vessels.sum() > 10
    assert np.median(image[vessels]) > 1.1
    plain = paint(dataclasses.replace(params, vessel=0.0), scene)
    assert np.median(plain[vessels]) < np.median(image[vessels])


@pytest.mark.parametrize("contrast", CONTRASTS)
def test_drawn_intensities_always_respect_the_ordering(contrast):
    rng = np.random.default_rng(1)
    for _ in range(500):
        p = draw_contrast_params(contrast, rng)
        if contrast in ("T1w", "ceT1w"):
            assert 1.0 > p.gm > p.csf > 0 and p.lesion <= 0.95 and p.lesion <= 1.2 * p.gm
            assert 0.4 <= p.black_hole_depth <= 0.9
        elif contrast == "T2w":
            assert p.csf > p.lesion > p.gm > 1.0
        elif contrast == "FLAIR":
            assert p.lesion > p.gm > 1.0 > 3 * p.csf
        else:
            assert p.csf > p.gm > 1.0 and p.lesion >= p.gm and abs(p.lesion / p.csf - 1) < 0.11
        assert (p.enhancement > 1.0) == (contrast == "ceT1w") and (p.vessel > 1.0) == (contrast == "ceT1w")
        assert len(p.head) == 7 and p.head[0] == p.csf


def test_unknown_contrast_is_refused():
    with pytest.raises(ValueError, match="unknown contrast 'DWI'"):
        draw_contrast_params("DWI", np.random.default_rng(0))


def test_painting_is_deterministic_and_non_negative(scene):
    params = draw_contrast_params("FLAIR", np.random.default_rng(3))
    a, b = paint(params, scene), paint(params, scene)
    assert np.array_equal(a, b) and a.min() >= 0
