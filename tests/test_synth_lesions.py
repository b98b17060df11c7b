"""Lesions from the shipped atlas: where they are, how many, how they enhance (at 2 mm)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_mdpp.synth.anatomy import load_template
from bids_mdpp.synth.lesions import (
    SITES,
    Ellipsoid,
    LesionParams,
    atlas_paths,
    draw_lesion_params,
    lesion_sites,
    make_lesions,
)

SCALE = 0.5


@pytest.fixture(scope="module")
def template():
    return load_template(SCALE)


@pytest.fixture(scope="module")
def drawn(template):
    """Twelve subjects' lesions, drawn and made once for the module."""
    rng = np.random.default_rng(7)
    params = [draw_lesion_params(rng) for _ in range(12)]
    return [(p, make_lesions(template, p)) for p in params]


def _plain(**changes) -> LesionParams:
    base = LesionParams(atlas=(3,), mirror=(False,), keep_fraction=1.0, growth_mm=0.0,
                        ellipsoids=(), component_seed=1, black_hole_fraction=0.0,
                        n_enhancing=0, ring_fraction=0.5)
    return dataclasses.replace(base, **changes)


def test_the_atlas_ships_with_its_licence_and_citation():
    paths = atlas_paths()
    assert len(paths) == 27
    folder = paths[0].parent
    assert "CC-BY" in (folder / "LICENSE").read_text() or "Creative" in (folder / "LICENSE").read_text()
    readme = (folder / "README").read_text()
    assert "Lesjak" in readme and "10.1007/s12021-017-9348-7" in readme
    img = nib.load(paths[0])
    assert img.shape == (182, 218, 182)


def test_lesions_lie_mostly_in_white_matter(template, drawn):
    for _, lesions in drawn:
        inside = lesions.fraction > 0.5
        assert inside.any()
        assert (template.wm[inside] > 0.5).mean() > 0.8
        assert (template.brain[inside] > 0.5).all()


def test_count_and_load_vary_widely(drawn):
    volumes = [lesions.volume_mm3 for _, lesions in drawn]
    counts = [lesions.n_lesions for _, lesions in drawn]
    assert max(volumes) > 10 * min(volumes)
    assert max(counts) > 4 * min(counts)


def test_enhancing_lesions_are_a_minority(drawn):
    enhancing = sum(lesions.n_enhancing for _, lesions in drawn)
    total = sum(lesions.n_lesions for _, lesions in drawn)
    assert 0 < enhancing < 0.25 * total
    assert any(lesions.n_enhancing == 0 for _, lesions in drawn)
    for _, lesions in drawn:
        assert lesions.n_enhancing <= max(1, lesions.n_lesions // 3)
        assert np.all(lesions.enhancing <= lesions.fraction + 1e-6)


def test_ring_enhancement_spares_the_core(template):
    # keep_fraction 0 keeps only the largest lesion, which has a core at 2 mm
    lesions = make_lesions(template, _plain(keep_fraction=0.0, growth_mm=0.8, n_enhancing=1,
                                            ring_fraction=1.0))
    assert lesions.n_lesions == lesions.n_enhancing == lesions.n_ring == 1
    core = (lesions.fraction > 0.99) & (lesions.enhancing == 0)
    rim = lesions.enhancing > 0.5
    assert core.any() and rim.any()


def test_black_holes_follow_their_fraction(template):
    none = make_lesions(template, _plain(black_hole_fraction=0.0))
    every = make_lesions(template, _plain(black_hole_fraction=1.0))
    assert none.n_black_holes == 0 and not none.black_hole.any()
    assert every.n_black_holes > 0 and every.black_hole.max() > 0.5


def test_mirroring_flips_left_and_right(template):
    plain = make_lesions(template, _plain())
    mirrored = make_lesions(template, _plain(mirror=(True,)))
    x_mm = template.grid.affine[0, 0] * np.arange(template.grid.shape[0]) + template.grid.affine[0, 3]
    centre = lambda f: float((f.sum(axis=(1, 2)) * x_mm).sum() / f.sum())  # noqa: E731
    assert centre(mirrored.fraction) == pytest.approx(-centre(plain.fraction), abs=3.0)


def test_growth_keep_fraction_and_ellipsoids_change_the_load(template):
    base = make_lesions(template, _plain())
    grown = make_lesions(template, _plain(growth_mm=0.8))
    shrunk = make_lesions(template, _plain(growth_mm=-0.4))
    assert shrunk.volume_mm3 < base.volume_mm3 < grown.volume_mm3
    few = make_lesions(template, _plain(keep_fraction=0.0))
    assert 0 < few.volume_mm3 < base.volume_mm3  # the largest component always stays
    ball = Ellipsoid("deep", 0.5, (6.0, 6.0, 6.0), (0.0, 0.0, 0.0))
    more = make_lesions(template, _plain(ellipsoids=(ball,)))
    assert more.volume_mm3 > base.volume_mm3 and len(more.ellipsoid_centres_mm) == 1


def test_lesion_sites_match_their_names(template):
    sites = lesion_sites(template)
    assert set(sites) == set(SITES)
    assert all(len(points) > 20 for points in sites.values())
    assert np.all(sites["infratentorial"][:, 2] < -22)
    vent = np.argwhere(template.ventricles > 0.5) @ template.grid.affine[:3, :3].T + template.grid.affine[:3, 3]
    periventricular = sites["periventricular"][::50]
    nearest = np.sqrt(((periventricular[:, None, :] - vent[None, :, :]) ** 2).sum(-1)).min(axis=1)
    assert nearest.max() <= 8.0 + 2.0


def test_making_lesions_is_deterministic(template, drawn):
    params, lesions = drawn[0]
    again = make_lesions(template, params)
    for name in ("fraction", "severity", "black_hole", "enhancing"):
        assert np.array_equal(getattr(again, name), getattr(lesions, name))


def test_a_missing_atlas_file_is_named(template, monkeypatch, tmp_path):
    from bids_mdpp.errors import InputDataError
    from bids_mdpp.synth import lesions as module

    broken = tmp_path / "mslub-99_space-MNI152NLin6Asym_label-lesion_mask.nii.gz"
    broken.write_bytes(b"")
    monkeypatch.setattr(module, "atlas_paths", lambda: [Path(broken)])
    module._atlas_on_canvas.cache_clear()
    try:
        with pytest.raises(InputDataError, match="mslub-99.*empty"):
            make_lesions(template, _plain(atlas=(0,)))
    finally:
        module._atlas_on_canvas.cache_clear()
