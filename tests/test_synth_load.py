"""Lesion-load classes: lesion-free, low (≤ 1 ml), typical and confluent high (≥ 50 ml)."""
from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from bids_mdpp.synth.load import (
    DEFAULT_LOAD_MIX,
    HIGH_MIN_MM3,
    LOAD_CLASSES,
    LOW_MAX_MM3,
    apply_load_class,
    draw_load_class,
    format_load_mix,
    parse_load_mix,
)
from bids_mdpp.synth.regions import template_regions
from bids_mdpp.synth.subject import SynthOptions, draw_subject, render_session

SEED = 5


def _options(load_class: str, **kw) -> SynthOptions:
    kw.setdefault("scale", 0.5)
    return SynthOptions(load_mix={load_class: 1.0}, contrasts=("FLAIR", "T1w"), complete=True,
                        **kw)


def _mask_mm3(rendered) -> float:
    mask = np.asanyarray(rendered.mask.dataobj)
    return float(mask.sum()) * float(np.prod(rendered.mask.header.get_zooms()[:3]))


def test_parse_and_format_the_load_mix():
    assert parse_load_mix(format_load_mix(DEFAULT_LOAD_MIX)) == DEFAULT_LOAD_MIX
    assert parse_load_mix(" high = 1 ") == {"free": 0.0, "low": 0.0, "typical": 0.0, "high": 1.0}
    assert parse_load_mix("free=0.25,low=0.25,typical=0.5")["high"] == 0.0


@pytest.mark.parametrize("text, message", [
    ("heavy=1", "unknown load class 'heavy'"),
    ("high", "not CLASS=SHARE"),
    ("high=lots", "not a number: 'lots'"),
    ("high=1.5", "between 0 and 1"),
    ("high=0.5,high=0.5", "given twice"),
    ("high=0.5,low=0.2", "add up to 1, they add up to 0.7"),
])
def test_a_bad_load_mix_is_refused_with_a_clear_message(text, message):
    with pytest.raises(ValueError, match=message):
        parse_load_mix(text)


def test_classes_are_drawn_in_their_proportions_on_their_own_stream():
    rng = np.random.default_rng(0)
    counts = Counter(draw_load_class(rng, DEFAULT_LOAD_MIX) for _ in range(4000))
    for name in LOAD_CLASSES:
        assert counts[name] / 4000 == pytest.approx(DEFAULT_LOAD_MIX[name], abs=0.03)
    specs = [draw_subject(i, SEED, SynthOptions()) for i in range(200)]
    drawn = Counter(s.sessions[0].scene.lesions.load_class for s in specs)
    assert set(drawn) == set(LOAD_CLASSES)
    # everything but the lesions is what a generator without classes draws
    plain = SynthOptions(load_mix={"typical": 1.0}, hard_negatives=False)
    for index, spec in enumerate(specs[:20]):
        other = draw_subject(index, SEED, plain)
        first, second = spec.sessions[0], other.sessions[0]
        assert first.contrast_params == second.contrast_params
        assert first.acquisitions == second.acquisitions
        assert first.scene.anatomy == second.scene.anatomy
        if first.scene.lesions.load_class == "typical":
            assert first.scene.lesions == second.scene.lesions
        assert second.scene.mimics is None and first.scene.mimics is not None


def test_unknown_class_is_refused():
    spec = draw_subject(0, SEED, SynthOptions())
    with pytest.raises(ValueError, match="unknown load class 'mild'"):
        apply_load_class(spec.sessions[0].scene.lesions, "mild", np.random.default_rng(0),
                         (1.0, 1.0, 1.0))


def test_lesion_free_subjects_have_empty_masks_in_every_session():
    options = _options("free", scale=0.3, sessions_fraction=1.0)
    spec = draw_subject(1, SEED, options)
    assert len(spec.sessions) == 2
    for session in spec.sessions:
        assert session.scene.lesions.ellipsoids == () and session.scene.lesions.atlas == ()
        rendered = render_session(spec, session)
        assert _mask_mm3(rendered) == 0 and rendered.scene.lesions.n_lesions == 0


def test_low_load_subjects_hold_a_few_lesions_and_at_most_one_ml():
    for index in range(4):
        spec = draw_subject(index, SEED, _options("low"))
        rendered = render_session(spec, spec.sessions[0])
        lesions = rendered.scene.lesions
        canvas_mm3 = lesions.volume_mm3 * float(np.prod(spec.sessions[0].scene.anatomy.head_scale))
        assert 0 < lesions.n_lesions and 0 < canvas_mm3 <= LOW_MAX_MM3
        assert _mask_mm3(rendered) <= LOW_MAX_MM3


def test_high_load_subjects_have_confluent_periventricular_lesions_of_50_ml_or_more():
    for index in range(2):
        spec = draw_subject(index, SEED, _options("high"))
        rendered = render_session(spec, spec.sessions[0])
        assert _mask_mm3(rendered) >= HIGH_MIN_MM3
        lesions = rendered.scene.lesions
        near = template_regions(rendered.scene.template).to_lateral_mm <= 4.0
        # confluent: most of the white matter around the ventricles is lesion
        around = near & (rendered.scene.template.wm > 0.5)
        assert (lesions.fraction[around] > 0.5).mean() > 0.5


def test_the_same_seed_draws_the_same_load_and_a_capped_follow_up_stays_low():
    options = _options("low", sessions_fraction=1.0)
    spec = draw_subject(2, SEED, options)
    assert spec == draw_subject(2, SEED, options)
    first, second = (render_session(spec, s) for s in spec.sessions)
    assert second.scene.lesions.volume_mm3 <= spec.sessions[1].scene.lesions.max_volume_mm3
    assert np.array_equal(np.asanyarray(first.mask.dataobj),
                          np.asanyarray(render_session(spec, spec.sessions[0]).mask.dataobj))


def test_hard_negatives_never_enter_the_lesion_mask():
    spec = draw_subject(3, SEED, _options("typical"))
    without = dataclasses.replace(spec, sessions=tuple(
        dataclasses.replace(s, scene=dataclasses.replace(s.scene, mimics=None))
        for s in spec.sessions))
    with_mimics, plain = (render_session(s, s.sessions[0]) for s in (spec, without))
    assert np.array_equal(np.asanyarray(with_mimics.mask.dataobj), np.asanyarray(plain.mask.dataobj))
    flair = [np.asanyarray(r.images["FLAIR"].dataobj) for r in (with_mimics, plain)]
    assert not np.array_equal(*flair)
