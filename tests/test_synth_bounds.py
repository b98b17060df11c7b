"""Intensity bounds: lesions kept above a floor and normal tissue below a ceiling, per contrast."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bids_mdpp.synth.anatomy import AnatomyParams
from bids_mdpp.synth.bounds import bound_contrast, bound_mimics, check_bounds, parse_bounds
from bids_mdpp.synth.contrasts import draw_contrast_params, paint
from bids_mdpp.synth.lesions import Ellipsoid, LesionParams
from bids_mdpp.synth.mimics import MimicIntensity, MimicParams
from bids_mdpp.synth.scene import SceneParams, build_scene
from bids_mdpp.synth.subject import SynthOptions, draw_subject

SCALE = 0.5
FLOOR, CEILING = {"FLAIR": 1.5}, {"FLAIR": 1.2}


def test_parse_bounds_reads_contrast_levels_with_aliases():
    assert parse_bounds("FLAIR=1.3, t2w = 1.6", "floor") == {"FLAIR": 1.3, "T2w": 1.6}
    assert parse_bounds("", "floor") == {}


@pytest.mark.parametrize("text, message", [
    ("FLAIR", "'FLAIR' is not CONTRAST=VALUE"),
    ("DWI=1.3", "unknown contrast"),
    ("T1w=1.3", "lesions are darker than white matter on T1w"),
    ("ce-T1w=1.3", "darker than white matter on ceT1w"),
    ("FLAIR=1.3,flair=1.4", "FLAIR is given twice"),
    ("FLAIR=high", "floor of FLAIR is not a number: 'high'"),
    ("FLAIR=0.9", "floor of FLAIR must be above white matter (1), got 0.9"),
])
def test_parse_bounds_names_the_problem(text, message):
    with pytest.raises(ValueError) as error:
        parse_bounds(text, "floor")
    assert message in str(error.value)


def test_a_ceiling_must_lie_below_the_floor():
    check_bounds({"FLAIR": 1.5}, {"FLAIR": 1.2, "T2w": 2.0})
    with pytest.raises(ValueError, match=r"ceiling of FLAIR \(1.5\) must be below its lesion floor"):
        check_bounds({"FLAIR": 1.5}, {"FLAIR": 1.5})


def test_bound_contrast_raises_faint_lesions_and_lowers_bright_grey_matter():
    params = dataclasses.replace(draw_contrast_params("FLAIR", np.random.default_rng(0)),
                                 gm=1.3, lesion=1.45)
    bounded = bound_contrast(params, 1.5, 1.2)
    assert (bounded.lesion, bounded.gm) == (1.5, 1.2)
    assert dataclasses.replace(bounded, lesion=params.lesion, gm=params.gm) == params
    bright = dataclasses.replace(params, gm=1.15, lesion=1.8)
    assert bound_contrast(bright, 1.5, 1.2) is bright
    assert bound_contrast(params, None, None) is params


def test_bound_mimics_holds_every_hard_negative_at_the_ceiling():
    params = dataclasses.replace(draw_contrast_params("FLAIR", np.random.default_rng(0)),
                                 gm=1.1, lesion=1.6)
    bright = MimicIntensity(wm_like=(0.2, 0.6, 0.9), cingulate=1.15, insula=1.2, choroid=1.5,
                            inflow=0.8, rim=0.3)
    bounded = bound_mimics(bright, params, 1.2)
    targets = [1.0 + s * (params.lesion - 1.0) for s in bounded.wm_like]
    assert max(targets) == pytest.approx(1.2, abs=1e-3)
    assert bounded.wm_like[0] == 0.2  # already below: unchanged
    assert params.gm * bounded.cingulate <= 1.2 + 1e-3 and params.gm * bounded.insula <= 1.2 + 1e-3
    assert bounded.choroid == 1.2
    assert (bounded.inflow, bounded.rim) == (bright.inflow, bright.rim)
    assert bound_mimics(bright, params, None) is bright


def test_bounds_change_only_the_bounded_contrast_intensities_of_a_subject():
    plain = SynthOptions(scale=SCALE)
    bounded = dataclasses.replace(plain, lesion_floor=FLOOR, normal_ceiling=CEILING)
    raised = 0
    for index in range(6):
        a, b = draw_subject(index, 3, plain), draw_subject(index, 3, bounded)
        assert a.kind == b.kind and len(a.sessions) == len(b.sessions)
        for sa, sb in zip(a.sessions, b.sessions):
            assert sa.contrasts == sb.contrasts and sa.acquisitions == sb.acquisitions
            assert sa.position == sb.position
            assert sa.scene.lesions == sb.scene.lesions and sa.scene.anatomy == sb.scene.anatomy
            assert dataclasses.replace(sa.scene.mimics, intensities={}) == \
                dataclasses.replace(sb.scene.mimics, intensities={})
            for contrast, params in sb.contrast_params.items():
                if contrast != "FLAIR":
                    assert params == sa.contrast_params[contrast]
                    assert sb.scene.mimics.intensities[contrast] == \
                        sa.scene.mimics.intensities[contrast]
                    continue
                assert params.lesion >= 1.5 and params.gm <= 1.2
                raised += params.lesion > sa.contrast_params[contrast].lesion
    assert raised > 0


def test_a_bounded_flair_keeps_lesions_above_and_normal_tissue_below():
    rng = np.random.default_rng(4)
    params = bound_contrast(dataclasses.replace(draw_contrast_params("FLAIR", rng), gm=1.3,
                                                lesion=1.35, lesion_spread=0.1), 1.5, 1.2)
    intensity = bound_mimics(MimicIntensity(wm_like=(0.9, 0.9, 0.9), cingulate=1.15, insula=1.2,
                                            choroid=1.5, inflow=0.0, rim=0.0), params, 1.2)
    mimics = MimicParams(cap_mm=(6.0, 6.0), band_mm=2.0, septum=1.0, inflow_cover=0.0,
                         choroid_cover=0.5, pvs=(), seed=3, intensities={"FLAIR": intensity})
    lesions = LesionParams(atlas=(), mirror=(), keep_fraction=1.0, growth_mm=0.0,
                           ellipsoids=(Ellipsoid("deep", 0.5, (6.0, 6.0, 6.0), (0.0, 0.0, 0.0)),),
                           component_seed=0, black_hole_fraction=0.0, n_enhancing=0,
                           ring_fraction=0.5)
    scene = build_scene(SceneParams(AnatomyParams((1.0, 1.0, 1.0), 0.0, 0, 0.0), lesions, None,
                                    1, 2, mimics), SCALE, with_vessels=False)
    image = paint(params, scene)
    wm = np.median(image[scene.template.wm > 0.9])
    core = scene.lesions.fraction > 0.99
    normal = (scene.lesions.fraction == 0) & (scene.template.brain > 0.5)
    assert core.sum() > 20
    # the faintest lesion tissue (severity 0) is lesion · (1 − spread / 2); 0.03 for texture
    assert np.median(image[core]) / wm >= 1.5 * (1.0 - params.lesion_spread / 2.0) - 0.03
    assert np.percentile(image[normal], 99.5) / wm <= 1.2 * 1.08  # texture on top of the ceiling
