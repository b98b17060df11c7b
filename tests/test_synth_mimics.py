"""Hard negatives: where each bright normal structure lies, how bright, and never a lesion (2 mm)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from bids_mdpp.synth.anatomy import AnatomyParams, load_template
from bids_mdpp.synth.contrasts import draw_contrast_params, paint
from bids_mdpp.synth.lesions import Ellipsoid, LesionParams
from bids_mdpp.synth.mimics import RANGES, MimicIntensity, MimicParams, build_mimics, draw_mimic_params
from bids_mdpp.synth.regions import HORN_ZONE_MM, template_regions
from bids_mdpp.synth.scene import SceneParams, build_scene

SCALE = 0.5
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "synth_vs_real.json"
NO_LESIONS = LesionParams((), (), 1.0, 0.0, (), 0, 0.0, 0, 0.5, load_class="free")
PVS = (Ellipsoid("basal_ganglia", 0.5, (1.2, 1.2, 5.0), (0.0, 0.0, 0.0)),
       Ellipsoid("semiovale", 0.3, (1.2, 1.2, 5.0), (0.0, 0.0, 0.0)))
BRIGHT = MimicIntensity(wm_like=(0.8, 0.8, 0.8), cingulate=1.15, insula=1.2, choroid=1.3,
                        inflow=1.0, rim=0.2)
EVERYTHING = MimicParams(cap_mm=(6.0, 6.0), band_mm=2.0, septum=1.0, inflow_cover=0.6,
                         choroid_cover=0.5, pvs=PVS, seed=3,
                         intensities={c: BRIGHT for c in ("T1w", "T2w", "FLAIR", "PDw", "ceT1w")})


@pytest.fixture(scope="module")
def template():
    return load_template(SCALE)


@pytest.fixture(scope="module")
def regions(template):
    return template_regions(template)


@pytest.fixture(scope="module")
def maps(template):
    return build_mimics(template, EVERYTHING)


def _canvas(template, patch) -> np.ndarray:
    out = np.zeros(template.grid.shape, np.float32)
    out[patch.box] = patch.values
    return out


def _world(template, mask) -> np.ndarray:
    return np.argwhere(mask) @ template.grid.affine[:3, :3].T + template.grid.affine[:3, 3]


def test_every_structure_is_drawn(maps):
    for name, patch in maps.patches().items():
        assert patch is not None and patch.values.max() > 0.5, name


def test_caps_sit_at_the_frontal_and_occipital_horns_next_to_the_ventricles(template, regions, maps):
    caps = _canvas(template, maps.wm_like[0]) > 0.5
    assert not (caps & regions.lateral).any()
    assert regions.to_lateral_mm[caps].max() <= 6.0 * 1.35 * 2 + 2.0
    y = _world(template, caps)[:, 1]
    front, back = regions.horn_y_mm
    assert front - back > 60  # the lateral ventricles span the brain front to back
    assert (y >= front - HORN_ZONE_MM).any() and (y <= back + HORN_ZONE_MM).any()
    assert np.all((y >= front - HORN_ZONE_MM) | (y <= back + HORN_ZONE_MM))


def test_the_band_lines_the_lateral_ventricles_and_the_septum_is_on_the_midline(template, regions,
                                                                                 maps):
    band = _canvas(template, maps.wm_like[1]) > 0.25
    assert band.any() and regions.to_lateral_mm[band].max() <= 2.0 * 1.7 + 2.0
    septum = _canvas(template, maps.wm_like[2]) > 0.5
    points = _world(template, septum)
    assert len(points) > 0 and np.abs(points[:, 0]).max() <= 2.0
    assert regions.to_lateral_mm[septum].max() <= 4.0


def test_cingulate_is_medial_and_insula_lateral(template, maps):
    cingulate = _world(template, _canvas(template, maps.cingulate) > 0.5)
    insula = _world(template, _canvas(template, maps.insula) > 0.5)
    assert np.abs(cingulate[:, 0]).max() <= 16.0
    assert np.abs(insula[:, 0]).min() >= 29.0 and np.abs(insula[:, 0]).max() <= 46.0
    assert template.gm[_canvas(template, maps.insula) > 0.5].mean() > 0.5


def test_inflow_choroid_and_perivascular_spaces_are_where_they_belong(template, regions, maps):
    inflow = _canvas(template, maps.inflow) > 0.2
    assert inflow.any() and not (inflow & regions.lateral).any()
    assert template.csf[inflow].min() > 0.2
    assert _world(template, inflow)[:, 2].max() <= 14.0  # third ventricle and below
    choroid = _canvas(template, maps.choroid) > 0.2
    y = _world(template, choroid & regions.lateral)[:, 1]
    assert len(y) > 0 and y.min() >= -52.0 and y.max() <= -16.0  # the atria
    pvs = _world(template, _canvas(template, maps.pvs) > 0.5)
    assert len(pvs) > 0 and (pvs[:, 2] < 10).any() and (pvs[:, 2] > 15).any()


def _scene(mimics):
    anatomy = AnatomyParams((1.0, 1.0, 1.0), 0.0, 0, 0.0)
    return build_scene(SceneParams(anatomy, NO_LESIONS, None, 1, 2, mimics), SCALE,
                       with_vessels=False)


@pytest.mark.parametrize("contrast", ["FLAIR", "T2w"])
def test_hard_negatives_are_hyperintense_within_the_drawn_range(template, maps, contrast):
    params = draw_contrast_params(contrast, np.random.default_rng(0))
    plain = paint(params, _scene(None))
    mimics = dataclasses.replace(EVERYTHING, intensities={contrast: dataclasses.replace(
        BRIGHT, wm_like=(0.5, 0.5, 0.5))})
    painted = paint(params, _scene(mimics))
    wm = np.median(plain[template.wm > 0.9])
    caps = _canvas(template, maps.wm_like[0]) > 0.9
    assert np.median(painted[caps]) > np.median(plain[caps]) + 0.1
    target = 1.0 + 0.5 * (params.lesion - 1.0)
    assert np.median(painted[caps]) / wm == pytest.approx(target, rel=0.1)
    assert np.median(painted[caps]) / wm < params.lesion
    outside = np.ones(template.grid.shape, bool)
    for patch in _scene(mimics).mimics.patches().values():
        outside &= _canvas(template, patch) == 0
    outside &= template.gm * template.csf == 0  # the cortical rim
    assert np.array_equal(painted[outside], plain[outside])


def test_the_drawn_intensities_respect_the_ranges_and_the_seed():
    a = draw_mimic_params(np.random.default_rng([5, 1, 2]))
    assert a == draw_mimic_params(np.random.default_rng([5, 1, 2]))
    assert a != draw_mimic_params(np.random.default_rng([5, 2, 2]))
    draws = [draw_mimic_params(np.random.default_rng(i)) for i in range(200)]
    for contrast, ranges in RANGES.items():
        for name in ("cingulate", "insula", "choroid"):
            values = [getattr(d.intensities[contrast], name) for d in draws]
            assert ranges[name][0] <= min(values) and max(values) <= ranges[name][1]
    assert 0.05 < np.mean([d.cap_mm == (0.0, 0.0) for d in draws]) < 0.3
    assert all(d.intensities["T2w"].inflow == 0 for d in draws)
    assert np.mean([d.intensities["FLAIR"].inflow > 0 for d in draws]) > 0.4


@pytest.mark.skipif(not RESULTS.is_file(), reason="benchmarks/results/synth_vs_real.json not written")
def test_the_ranges_bracket_the_real_measurements():
    """The medians measured on real scans (WM = 1) fall inside what the generator draws."""
    real = json.loads(RESULTS.read_text())["sessions"]
    for session in real:
        for contrast in ("FLAIR", "T2w", "T1w"):
            stats = session["statistics"].get(contrast)
            if stats is None:
                continue
            cortex = stats["GM_cortex"]["p50"]
            for region in ("cingulate", "insula"):
                factor = stats[f"GM_{region}"]["p50"] / cortex
                lo, hi = RANGES[contrast][region]
                assert lo - 0.02 <= factor <= hi + 0.02, (session["session"], contrast, region)
            if stats["choroid"]["n"] >= 100:
                lo, hi = RANGES[contrast]["choroid"]
                assert lo <= stats["choroid"]["p50"] <= hi, (session["session"], contrast)
            if "lesion" in stats and contrast != "T1w":
                share = (stats["caps"]["p50"] - 1.0) / (stats["lesion"]["p50"] - 1.0)
                lo, hi = RANGES[contrast]["wm_like"]
                assert share <= hi and stats["caps"]["p90"] >= 1.0 + lo * (stats["lesion"]["p50"] - 1)
