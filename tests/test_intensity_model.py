"""The per-session intensity model (Gaussian mixture with atlas priors) and its priors."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_mdpp import atlas_priors
from bids_mdpp.atlas_priors import AtlasPriors, carry_priors, lesion_atlas_paths, template_maps
from bids_mdpp import intensity_model
from bids_mdpp.intensity_model import (MIN_SHIFT_SD, beyond_bound, class_posteriors, class_prior,
                                       combine, describe, fit_mixture, floored_contrasts,
                                       grey_floor, held_contrasts, lesion_bound,
                                       lesion_posterior, masked_contrasts,
                                       modelled_contrasts, spread_floored, widened)

SHAPE = (36, 36, 36)
#: Normalised intensities (white-matter peak −0.5) per tissue: CSF, GM, WM.
MEANS = {"T1w": (-0.85, -0.62, -0.5), "FLAIR": (-0.85, -0.42, -0.5), "T2w": (-0.1, -0.38, -0.5),
         "ceT1w": (-0.85, -0.62, -0.5)}
NOISE_SD = 0.02


def phantom(contrasts, lesion_shift: dict[str, float] | None = None, seed: int = 0):
    """A ball of WM inside a GM shell, with a CSF core; a WM blob shifted by ``lesion_shift``
    (normalised units per contrast).  Returns volumes, brain, lesion mask, priors."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE) - np.array(SHAPE)[:, None, None, None] / 2 + 0.5
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    brain = r < 17
    csf, gm = r < 4, (r >= 14) & brain
    wm = brain & ~csf & ~gm
    blob = np.sqrt((x - 8) ** 2 + y ** 2 + z ** 2) < 3.5
    labels = np.where(csf, 0, np.where(gm, 1, 2))
    volumes = {}
    for c in contrasts:
        image = np.asarray(MEANS[c])[labels] + rng.normal(0, NOISE_SD, SHAPE)
        if lesion_shift:
            image[blob] += lesion_shift.get(c, 0.0)
        volumes[c] = np.where(brain, image, -1.0).astype(np.float32)
    soft = np.stack([csf, gm, wm]).astype(np.float32) * 0.96 + 0.04 / 3
    frequency = np.where(wm, 0.02, 0.0).astype(np.float32)
    return volumes, brain, blob, AtlasPriors(tissue=soft, lesion_frequency=frequency)


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("contrasts, shift, min_dice", [
    (("FLAIR",), {"FLAIR": 0.25}, 0.8),
    # on T1w alone a lesion is as dark as grey matter: only the priors tell them apart
    (("T1w",), {"T1w": -0.08}, 0.4),
    (("T1w", "FLAIR", "T2w"), {"T1w": -0.12, "FLAIR": 0.25, "T2w": 0.3}, 0.8),
])
def test_a_white_matter_lesion_is_found_with_any_contrasts(contrasts, shift, min_dice):
    volumes, brain, blob, priors = phantom(contrasts, shift)
    posterior = lesion_posterior(volumes, brain, priors)
    assert posterior.shape == SHAPE and posterior.dtype == np.float32
    assert posterior[~brain].max() == 0.0 and 0.0 <= posterior.min() and posterior.max() <= 1.0
    found = posterior >= 0.5
    assert dice(found, blob) > min_dice
    assert (found & ~blob).sum() < 0.1 * blob.sum()


def test_lesions_must_lie_on_their_side_of_white_matter():
    # a FLAIR-dark spot in white matter is not a lesion: the lesion class stays brighter
    volumes, brain, blob, priors = phantom(("FLAIR",), {"FLAIR": -0.25})
    assert (lesion_posterior(volumes, brain, priors) >= 0.5).sum() == 0
    # and the lesion class never settles on white matter itself when nothing is brighter
    volumes, brain, _, priors = phantom(("FLAIR",))
    assert (lesion_posterior(volumes, brain, priors) >= 0.5).sum() < 0.002 * brain.sum()


def test_on_ce_t1w_lesions_are_dark_as_on_t1w():
    # a dark white-matter lesion is found on ce-T1w alone ...
    volumes, brain, blob, priors = phantom(("ceT1w",), {"ceT1w": -0.08})
    found = lesion_posterior(volumes, brain, priors) >= 0.5
    assert dice(found, blob) > 0.45  # a lesion class free to cross white matter: 0.32
    # ... and a bright spot (an enhancing vessel, say) is not taken for one (what is called
    # elsewhere is white matter's darkest noise, at the lesion class's bound)
    volumes, brain, blob, priors = phantom(("ceT1w",), {"ceT1w": 0.25})
    found = lesion_posterior(volumes, brain, priors) >= 0.5
    assert found[blob].sum() == 0 and found.sum() < 0.002 * brain.sum()


def _fit(volumes, brain, priors, contrasts, iterations=10):
    x = np.stack([volumes[c][brain] for c in contrasts], axis=1).astype(np.float64)
    prior = class_prior(priors.tissue[:, brain].astype(np.float64),
                        priors.lesion_frequency[brain].astype(np.float64))
    return x, prior, fit_mixture(x, prior, contrasts, iterations=iterations)


def test_the_fit_holds_the_lesion_class_beside_white_matter_and_posteriors_sum_to_one():
    volumes, brain, blob, priors = phantom(("T1w", "FLAIR"), {"T1w": -0.12, "FLAIR": 0.25})
    x, prior, fit = _fit(volumes, brain, priors, ("T1w", "FLAIR"))
    assert prior.shape == (4, brain.sum()) and np.allclose(prior.sum(0), 1.0)
    assert fit.means.shape == (4, 2) and fit.covariances.shape == (4, 2, 2)
    wm_sd = np.sqrt(np.diag(fit.covariances[2]))
    shift = (fit.means[3] - fit.means[2]) / wm_sd
    assert shift[1] >= MIN_SHIFT_SD - 1e-9
    # the lesion class found the blob's intensities
    assert np.allclose(fit.means[3], [-0.62, -0.25], atol=0.03)
    posterior = class_posteriors(x, prior, fit)
    assert posterior.shape == (4, brain.sum()) and np.allclose(posterior.sum(0), 1.0)
    # with nothing lesion-like at all, the class is held at its bound in every held contrast
    for contrasts, side in ((("FLAIR",), 1.0), (("T1w",), -1.0), (("T1w", "ceT1w"), -1.0)):
        volumes, brain, _, priors = phantom(contrasts)
        _, _, fit = _fit(volumes, brain, priors, contrasts)
        shift = side * (fit.means[3] - fit.means[2]) / np.sqrt(np.diag(fit.covariances[2]))
        assert (shift >= MIN_SHIFT_SD - 1e-9).all(), contrasts


def test_a_voxel_lesion_like_only_outside_the_masked_contrasts_is_not_lesion(monkeypatch):
    # a FLAIR + T2w lesion, and a blob brighter on T2w but barely (one noise SD) on FLAIR
    # (partial volume with CSF, a perivascular space): the lesion Gaussian reaches it, the mask
    # on FLAIR keeps only the voxels that noise lifts past the bound
    volumes, brain, blob, priors = phantom(("FLAIR", "T2w"), {"FLAIR": 0.25, "T2w": 0.3})
    z, y, x = np.indices(SHAPE) - np.array(SHAPE)[:, None, None, None] / 2 + 0.5
    other = np.sqrt((x + 8) ** 2 + y ** 2 + z ** 2) < 3.5
    volumes["T2w"][other] += 0.45
    volumes["FLAIR"][other] += NOISE_SD
    posterior = lesion_posterior(volumes, brain, priors)
    assert dice(posterior >= 0.5, blob) > 0.9
    assert (posterior[other] >= 0.5).sum() < 0.15 * other.sum()
    monkeypatch.setattr(intensity_model, "masked_contrasts", lambda contrasts: ())
    unmasked = lesion_posterior(volumes, brain, priors)
    assert (unmasked[other] >= 0.5).mean() > 0.9          # what the mask is for
    # every voxel short of the bound on FLAIR has posterior 0
    contrasts = ("FLAIR", "T2w")
    xs, prior, fit = _fit(volumes, brain, priors, contrasts, iterations=25)
    bound = lesion_bound(fit, contrasts)
    monkeypatch.undo()
    posterior = lesion_posterior(volumes, brain, priors)[brain]
    assert posterior[xs[:, 0] < bound[0]].max() == 0.0


def test_the_mask_reads_the_contrasts_that_imaged_each_voxel():
    contrasts = ("FLAIR", "T2w")
    fit = intensity_model.MixtureFit(means=np.zeros((4, 2)) + [[0, 0], [0, 0], [-0.5, -0.5], [0, 0]],
                                     covariances=np.stack([np.eye(2) * 0.01] * 4))
    # bound: -0.5 + 2 x 0.1 = -0.3 in both
    x = np.array([[-0.2, -0.2], [-0.4, -0.2], [-0.2, -0.4], [-1.0, -0.2], [-1.0, -1.0]])
    assert beyond_bound(x, fit, contrasts).tolist() == [True, False, False, True, True]
    assert masked_contrasts(("T1w", "FLAIR", "T2w", "ceT1w")) == ("FLAIR", "T2w")
    assert masked_contrasts(("ceT1w", "PDw")) == ("PDw",)
    # on T1-weighted images alone nothing is masked: many lesions are not darker than the bound
    assert masked_contrasts(("T1w", "ceT1w")) == () and masked_contrasts(("T1w",)) == ()
    assert beyond_bound(np.array([[-0.8], [-0.5], [-0.2]]), fit, ("T1w",)).all()


def test_without_flair_a_voxel_as_dark_as_csf_on_t1w_is_not_lesion(monkeypatch):
    # T1w + T2w: a lesion (T2w-bright, a little darker than white matter on T1w), and a blob of
    # CSF's partial volume beside a ventricle (as bright on T2w, but between grey matter and
    # CSF on T1w); the lesion Gaussian stretches over both unless the floor stops it
    contrasts = ("T1w", "T2w")
    volumes, brain, blob, priors = phantom(contrasts, {"T1w": -0.12, "T2w": 0.3})
    z, y, x = np.indices(SHAPE) - np.array(SHAPE)[:, None, None, None] / 2 + 0.5
    other = np.sqrt((x + 8) ** 2 + y ** 2 + z ** 2) < 3.5
    volumes["T2w"][other] += 0.45
    volumes["T1w"][other] -= 0.25
    posterior = lesion_posterior(volumes, brain, priors)
    assert dice(posterior >= 0.5, blob) > 0.95
    assert (posterior[other] >= 0.5).sum() == 0
    # every voxel darker than the floor on T1w has posterior 0
    xs, _, fit = _fit(volumes, brain, priors, contrasts, iterations=25)
    assert posterior[brain][xs[:, 0] < grey_floor(fit)[0]].max() == 0.0
    monkeypatch.setattr(intensity_model, "floored_contrasts", lambda contrasts: ())
    unfloored = lesion_posterior(volumes, brain, priors)
    assert (unfloored[other] >= 0.5).mean() > 0.9         # what the floor is for
    assert dice(unfloored >= 0.5, blob) < 0.8


def test_the_floor_applies_to_t1_weighted_contrasts_beside_t2w_or_pdw_without_flair():
    assert floored_contrasts(("T1w", "T2w", "ceT1w")) == ("T1w", "ceT1w")
    assert floored_contrasts(("ceT1w", "PDw")) == ("ceT1w",)
    # FLAIR tells CSF apart itself; T1-weighted images alone have nothing to tell it by
    assert floored_contrasts(("T1w", "FLAIR", "T2w")) == ()
    assert floored_contrasts(("T1w", "ceT1w")) == () and floored_contrasts(("T2w",)) == ()
    # grey matter at -0.6 (SD 0.05): the floor is -0.7 on T1w; T2w is masked as before
    fit = intensity_model.MixtureFit(
        means=np.array([[-0.9, 0.0], [-0.6, -0.35], [-0.5, -0.5], [-0.6, -0.1]]),
        covariances=np.stack([np.diag([0.0025, 0.01])] * 4))
    assert np.allclose(grey_floor(fit), [-0.7, -0.55])
    x = np.array([[-0.65, -0.2], [-0.75, -0.2], [-1.0, -0.2], [-0.65, -0.45]])
    # inside / as dark as CSF / T1w did not image it / short of the T2w bound (-0.3)
    assert beyond_bound(x, fit, ("T1w", "T2w")).tolist() == [True, False, True, False]
    t1_only = intensity_model.MixtureFit(means=fit.means[:, :1],
                                         covariances=fit.covariances[:, :1, :1])
    assert beyond_bound(x[:, :1], t1_only, ("T1w",)).all()


def test_t1_weighted_contrasts_are_held_dark_only_without_a_bright_lesion_contrast():
    assert held_contrasts(("T1w", "FLAIR", "T2w", "ceT1w")) == ("FLAIR", "T2w")
    assert held_contrasts(("ceT1w", "PDw")) == ("PDw",)
    assert held_contrasts(("T1w", "ceT1w")) == ("T1w", "ceT1w")
    # a lesion bright on FLAIR and a little brighter than white matter on ce-T1w (not a black
    # hole; mildly enhancing) is found: held dark on ce-T1w as well, the lesion class missed it
    # (Dice 0.06), and started dark there it missed one 5 noise SDs brighter (Dice 0.0)
    for ce_shift in (0.04, 0.1):
        volumes, brain, blob, priors = phantom(("FLAIR", "ceT1w"),
                                               {"FLAIR": 0.25, "ceT1w": ce_shift})
        assert dice(lesion_posterior(volumes, brain, priors) >= 0.5, blob) > 0.8
        _, _, fit = _fit(volumes, brain, priors, ("FLAIR", "ceT1w"))
        assert abs(fit.means[3, 1] - (fit.means[2, 1] + ce_shift)) < 0.02  # on the blob


def _wide_grey_phantom(contrast: str, grey_mean: float, grey_sd: float, seed: int):
    """One contrast alone, as on a real patient: grey matter spread widely (``grey_sd`` about
    ``grey_mean``), and the lesion atlas expecting lesions (frequency 0.1) in white matter
    within 6 voxels of the phantom's blob centre.  Returns the image, brain, priors, a random
    generator, the x coordinate and the distance from the blob centre (voxels)."""
    volumes, brain, _, priors = phantom((contrast,))
    z, y, x = np.indices(SHAPE) - np.array(SHAPE)[:, None, None, None] / 2 + 0.5
    distance = np.sqrt((x - 8) ** 2 + y ** 2 + z ** 2)
    near = (distance < 6) & (priors.tissue[2] > 0.5)
    priors = AtlasPriors(tissue=priors.tissue,
                         lesion_frequency=np.where(near, 0.1, priors.lesion_frequency)
                         .astype(np.float32))
    rng = np.random.default_rng(seed)
    image = volumes[contrast].copy()
    grey = (priors.tissue[1] > 0.5) & brain
    image[grey] = grey_mean + rng.normal(0, grey_sd, grey.sum())
    return image, brain, priors, rng, x, distance


def _two_toned_lesion(seed: int = 1):
    """T1w alone: grey matter spread widely (SD 0.08) and a lesion whose half is a little
    darker than white matter (-0.56) and half darker than grey matter (-0.70)."""
    image, brain, priors, rng, x, distance = _wide_grey_phantom("T1w", -0.62, 0.08, seed)
    blob = distance < 3.5
    dark_half = blob & (x > 8)
    image[blob] = -0.56 + rng.normal(0, 0.015, blob.sum())
    image[dark_half] = -0.70 + rng.normal(0, 0.015, dark_half.sum())
    return {"T1w": image}, brain, blob, dark_half, priors


def test_on_one_t1_weighted_image_the_lesion_class_is_never_narrower_than_grey_matter(
        monkeypatch):
    volumes, brain, blob, dark_half, priors = _two_toned_lesion()
    found = lesion_posterior(volumes, brain, priors) >= 0.5
    assert dice(found, blob) > 0.8 and (found & dark_half).sum() > 0.9 * dark_half.sum()
    assert (found & ~blob).sum() < 0.05 * blob.sum()
    _, _, fit = _fit(volumes, brain, priors, ("T1w",), iterations=25)
    sd = np.sqrt(fit.covariances[:, 0, 0])
    assert sd[3] >= sd[1] - 1e-9
    # a class free to narrow settles on the bright half and leaves the dark one to grey matter
    monkeypatch.setattr(intensity_model, "LESION_SPREAD_OF_GREY", 0.0)
    found = lesion_posterior(volumes, brain, priors) >= 0.5
    assert (found & dark_half).sum() < 0.1 * dark_half.sum() and dice(found, blob) < 0.6


def _small_t2w_lesion(seed: int = 1):
    """T2w alone in a brain with few lesion voxels, as on a real low-load brain: grey matter
    spread widely (SD 0.15) and one small lesion (56 voxels) brighter than grey matter and as
    varied (-0.25, SD 0.1)."""
    image, brain, priors, rng, _, distance = _wide_grey_phantom("T2w", -0.36, 0.15, seed)
    blob = distance < 2.5
    image[blob] = -0.25 + rng.normal(0, 0.1, blob.sum())
    return {"T2w": image}, brain, blob, priors


def test_on_t2w_alone_a_few_lesion_voxels_are_found_not_white_matters_bright_tail(monkeypatch):
    volumes, brain, blob, priors = _small_t2w_lesion()
    posterior = lesion_posterior(volumes, brain, priors)
    found = posterior >= 0.5
    # (4 false voxels; 1 before the lesion prior had its floor over white matter)
    assert dice(found, blob) > 0.8 and (found & ~blob).sum() <= 0.1 * blob.sum()
    _, _, fit = _fit(volumes, brain, priors, ("T2w",), iterations=25)
    sd = np.sqrt(fit.covariances[:, 0, 0])
    assert sd[3] >= sd[1] - 1e-9
    # a class free to narrow settles on white matter's bright tail, just beyond the bound,
    # and leaves the lesion to grey matter
    monkeypatch.setattr(intensity_model, "LESION_SPREAD_OF_GREY", 0.0)
    posterior = lesion_posterior(volumes, brain, priors)
    found = posterior >= 0.5
    assert np.median(posterior[blob]) < 0.1 and dice(found, blob) < 0.3
    assert (found & ~blob).sum() > 0.2 * blob.sum()


def test_t1w_with_ce_t1w_alone_is_modelled_from_t1w():
    assert modelled_contrasts(("T1w", "ceT1w")) == ("T1w",)
    assert modelled_contrasts(("ceT1w", "T1w")) == ("T1w",)
    for contrasts in (("T1w",), ("ceT1w",), ("T1w", "FLAIR", "ceT1w"), ("T2w", "ceT1w")):
        assert modelled_contrasts(contrasts) == contrasts
    volumes, brain, blob, priors = phantom(("T1w", "ceT1w"), {"T1w": -0.08, "ceT1w": 0.3})
    both = lesion_posterior(volumes, brain, priors)
    assert np.array_equal(both, lesion_posterior({"T1w": volumes["T1w"]}, brain, priors))
    assert dice(both >= 0.5, blob) > 0.4  # the enhancing ce-T1w plays no part
    with pytest.raises(ValueError, match="PDx"):
        lesion_posterior({**volumes, "PDx": volumes["T1w"]}, brain, priors)


def test_the_spread_is_floored_on_one_contrast_alone():
    for contrasts in (("T1w",), ("ceT1w",), ("FLAIR",), ("T2w",), ("PDw",)):
        assert spread_floored(contrasts), contrasts
    for contrasts in (("T1w", "ceT1w"), ("T1w", "FLAIR"), ("T2w", "FLAIR"), ("ceT1w", "PDw")):
        assert not spread_floored(contrasts), contrasts
    # beside FLAIR the lesion class may be narrower than grey matter on T1w
    volumes, brain, blob, priors = phantom(("T1w", "FLAIR"), {"T1w": -0.12, "FLAIR": 0.25})
    grey = (priors.tissue[1] > 0.5) & brain
    volumes["T1w"][grey] = -0.62 + np.random.default_rng(2).normal(0, 0.08, grey.sum())
    _, _, fit = _fit(volumes, brain, priors, ("T1w", "FLAIR"))
    assert np.sqrt(fit.covariances[3, 0, 0]) < 0.5 * np.sqrt(fit.covariances[1, 0, 0])
    assert dice(lesion_posterior(volumes, brain, priors) >= 0.5, blob) > 0.8
    # widening raises each SD to its floor and keeps the correlations
    covariance = np.array([[0.0004, 0.0003], [0.0003, 0.0009]])
    wide = widened(covariance, np.array([0.05, 0.01]))
    assert np.allclose(np.sqrt(np.diag(wide)), [0.05, 0.03])
    def correlation(c):
        return c[0, 1] / np.sqrt(c[0, 0] * c[1, 1])

    assert np.isclose(correlation(wide), correlation(covariance)) and np.isclose(correlation(wide), 0.5)


def test_bad_inputs_are_refused_or_give_nothing():
    volumes, brain, _, priors = phantom(("FLAIR",))
    with pytest.raises(ValueError, match="DWI"):
        lesion_posterior({"DWI": volumes["FLAIR"]}, brain, priors)
    with pytest.raises(ValueError, match="none"):
        lesion_posterior({}, brain, priors)
    empty = lesion_posterior(volumes, np.zeros(SHAPE, bool), priors)
    assert empty.shape == SHAPE and not empty.any()


def test_combine_is_the_mean_and_describe_names_the_mode():
    a, b = np.full(SHAPE, 0.2, np.float32), np.full(SHAPE, 0.9, np.float32)
    assert combine(a, b).dtype == np.float32 and np.allclose(combine(a, b), 0.55)
    assert describe("off") == {"Mode": "off"}
    assert describe("combine")["NetworkWeight"] == 0.5
    assert describe("combine")["Combination"] == "mean of the network's probability and the posterior"


def test_combine_weighs_the_network_as_the_card_says():
    a, b = np.full(SHAPE, 0.2, np.float32), np.full(SHAPE, 0.9, np.float32)
    assert np.allclose(combine(a, b, network_weight=0.0), 0.9)  # the posterior alone
    assert np.allclose(combine(a, b, network_weight=1.0), 0.2)
    assert np.allclose(combine(a, b, network_weight=0.25), 0.25 * 0.2 + 0.75 * 0.9)
    assert combine(a, b, network_weight=0.0).dtype == np.float32
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="network_weight must lie between 0 and 1"):
            combine(a, b, network_weight=bad)
    alone = describe("combine", network_weight=0.0)
    assert alone["NetworkWeight"] == 0.0 and alone["Combination"].startswith("the posterior alone")
    assert "0.25 x the network" in describe("combine", network_weight=0.25)["Combination"]
    described = describe("combine")
    assert described["Mode"] == "combine" and "Gaussian mixture" in described["Method"]
    with pytest.raises(ValueError, match="alone"):
        describe("alone")


def test_the_lesion_atlas_ships_and_the_priors_carry_onto_a_grid(tmp_path):
    import SimpleITK as sitk

    assert len(lesion_atlas_paths()) == 27
    tissue_img, lesion_img = template_maps(tmp_path)
    assert tissue_img.shape[-1] == 3
    assert np.allclose(tissue_img.get_fdata(dtype=np.float32).sum(-1), 1.0, atol=1e-4)
    # a 4 mm grid over the template, identity transform: the maps as they are, coarser
    affine = tissue_img.affine.copy()
    affine[:3, :3] *= 4
    grid = nib.Nifti1Image(np.zeros(tuple(s // 4 for s in tissue_img.shape[:3]), np.uint8), affine)
    priors = carry_priors(grid, sitk.Transform(3, sitk.sitkIdentity), cache_dir=tmp_path)
    assert priors.tissue.shape == (3, *grid.shape) and priors.lesion_frequency.shape == grid.shape
    assert np.allclose(priors.tissue.sum(0), 1.0, atol=1e-5)
    # lesions are most frequent in white matter (periventricular), never above one patient in two
    peak = np.unravel_index(np.argmax(priors.lesion_frequency), grid.shape)
    assert 0.1 < priors.lesion_frequency.max() <= 0.5
    assert priors.tissue[2][peak] > 0.5


def test_a_session_priors_come_from_its_registration_reference(tmp_path, monkeypatch):
    import bids_mdpp.atlas_priors as atlas_priors

    paths = {}
    for name, value in (("T1w", 1.0), ("T2w", 2.0), ("brain", 1)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.full((4, 4, 4), value, np.float32), np.eye(4)),
                 str(paths[name]))
    calls = []

    def fit(reference, brain_mask, *, name, cache_dir):
        calls.append((float(reference.get_fdata()[0, 0, 0]), brain_mask.shape, name, cache_dir))
        return "priors"

    monkeypatch.setattr(atlas_priors, "priors_on_grid", fit)
    images = {"T1w": paths["T1w"], "T2w": paths["T2w"]}
    assert atlas_priors.session_priors(images, paths["brain"], cache_dir=tmp_path) == "priors"
    # T2w comes before T1w in the registration order: its image is the one fitted and named
    assert calls == [(2.0, (4, 4, 4), paths["T2w"], tmp_path)]


def test_fitting_on_every_kth_voxel_gives_the_same_map(monkeypatch):
    import bids_mdpp.intensity_model as intensity_model

    volumes, brain, blob, priors = phantom(("T1w", "FLAIR"), {"T1w": -0.12, "FLAIR": 0.25})
    full = lesion_posterior(volumes, brain, priors) >= 0.5
    monkeypatch.setattr(intensity_model, "MAX_FIT_VOXELS", brain.sum() // 5)
    strided = lesion_posterior(volumes, brain, priors) >= 0.5
    assert dice(full, strided) > 0.95 and dice(strided, blob) > 0.8


def test_the_participant_level_combines_or_falls_back_to_the_network(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import bids_mdpp.atlas_priors as atlas_priors
    from bids_mdpp.errors import InputDataError
    from bids_mdpp.intensity_model import combine_for_session

    volumes, brain, blob, priors = phantom(("FLAIR",), {"FLAIR": 0.25})
    affine = np.eye(4)
    paths = {}
    for name, data in (("FLAIR", volumes["FLAIR"]), ("brain", brain.astype(np.uint8))):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(paths[name]))
    preproc = SimpleNamespace(images={"FLAIR": paths["FLAIR"]}, reference="FLAIR",
                              brain_mask=paths["brain"])
    network = np.where(brain, 0.3, 0.0).astype(np.float32)

    monkeypatch.setattr(atlas_priors, "priors_on_grid", lambda *a, **k: priors)
    combined, entry = combine_for_session(preproc, volumes, brain, network,
                                                  cache_dir=tmp_path)
    assert entry["Mode"] == "combine" and "Skipped" not in entry
    assert entry["Contrasts"] == ["FLAIR"] and "grey-matter" in entry["MinimumLesionSpread"]
    assert entry["LesionPriorScale"] == 1.0 and "lesion load" in entry["LesionPrior"]
    assert dice(combined >= 0.5, blob) > 0.8  # 0.3 from the network, ~1 from the mixture
    alone, entry = combine_for_session(preproc, volumes, brain, network, cache_dir=tmp_path,
                                       network_weight=0.0)
    assert entry["NetworkWeight"] == 0.0
    assert np.allclose(alone, lesion_posterior(volumes, brain, priors))  # no 0.3 floor
    # the network's map may come from a function, called only when the map is needed
    calls = []

    def predict():
        calls.append(1)
        return network

    lazy, _ = combine_for_session(preproc, volumes, brain, predict, cache_dir=tmp_path,
                                  network_weight=0.0)
    assert not calls and np.array_equal(lazy, alone) and lazy.dtype == np.float32
    lazy, _ = combine_for_session(preproc, volumes, brain, predict, cache_dir=tmp_path)
    assert calls == [1] and np.allclose(lazy, combined)

    def failing_fit(*args, name, **kwargs):
        raise InputDataError(name, "registration to the template failed")

    monkeypatch.setattr(atlas_priors, "priors_on_grid", failing_fit)
    kept, entry = combine_for_session(preproc, volumes, brain, network, cache_dir=tmp_path)
    assert kept is network
    # with no weight for the network, it runs after all when the mixture cannot be fitted
    kept, _ = combine_for_session(preproc, volumes, brain, predict, cache_dir=tmp_path,
                                  network_weight=0.0)
    assert kept is network and calls == [1, 1]
    assert entry["Mode"] == "off" and "FLAIR.nii.gz" in entry["Skipped"]
    assert "registration to the template failed" in entry["Skipped"]


def test_voxels_a_contrast_did_not_image_are_scored_with_the_others():
    # T1w stops short of one end of the brain (a 2D acquisition's field of view): there its
    # normalised value is the background, -1, darker than any lesion
    volumes, brain, blob, priors = phantom(("T1w", "FLAIR"), {"T1w": -0.12, "FLAIR": 0.25})
    z = np.indices(SHAPE)[2]
    uncovered = brain & (z < 8)
    volumes["T1w"][uncovered] = -1.0
    posterior = lesion_posterior(volumes, brain, priors)
    assert (posterior[uncovered] >= 0.5).sum() == 0  # not a sea of T1w-dark "lesions"
    assert dice(posterior >= 0.5, blob) > 0.8
    # a lesion there is still found, from FLAIR alone
    volumes, brain, blob, priors = phantom(("T1w", "FLAIR"), {"T1w": -0.12, "FLAIR": 0.25})
    spot = uncovered & (np.sqrt(((np.indices(SHAPE) - np.array([18, 18, 5])[:, None, None, None])
                                 ** 2).sum(0)) < 3) & (priors.lesion_frequency > 0)
    volumes["T1w"][uncovered] = -1.0
    volumes["FLAIR"][spot] += 0.25
    found = lesion_posterior(volumes, brain, priors) >= 0.5
    assert spot.any() and dice(found & uncovered, spot) > 0.8 and dice(found, spot | blob) > 0.8
    # too little imaged by every contrast: refused
    volumes["T1w"][brain] = -1.0
    with pytest.raises(ValueError, match="imaged by every contrast"):
        lesion_posterior(volumes, brain, priors)


def test_an_unknown_intensity_model_mode_is_a_usage_error(tmp_path):
    from bids_mdpp.config import RunConfig
    from bids_mdpp.errors import UsageError

    with pytest.raises(UsageError, match="--intensity-model must be one of combine, off"):
        RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="participant",
                  intensity_model="alone")
    assert RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out",
                     analysis_level="participant").intensity_model == "combine"


def test_the_template_space_maps_are_cached_on_disk_and_recomputed_when_unreadable(tmp_path):
    computed = template_maps(tmp_path)
    cached = tmp_path / f"atlas-priors_{atlas_priors.cache_key()}.npz"
    assert cached.is_file()
    atlas_priors._template_maps_in.cache_clear()  # a new process: read back from disk
    read = template_maps(tmp_path)
    for a, b in zip(computed, read):
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        assert np.allclose(a.affine, b.affine)
    cached.write_bytes(b"truncated")
    atlas_priors._template_maps_in.cache_clear()
    again = template_maps(tmp_path)
    assert np.array_equal(np.asarray(again[1].dataobj), np.asarray(computed[1].dataobj))
    with np.load(cached) as rewritten:
        assert set(rewritten.files) == {"tissue", "tissue_affine", "lesion_frequency",
                                        "lesion_affine"}


def test_the_lesion_prior_can_be_made_from_another_folder_of_masks(tmp_path, monkeypatch):
    from scipy import ndimage

    from bids_mdpp.errors import InputDataError

    masks = tmp_path / "masks"
    masks.mkdir()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    one, two = np.zeros((20, 20, 20), np.uint8), np.zeros((20, 20, 20), np.uint8)
    one[5:10, 5:10, 5:10] = 1
    two[8:12, 8:12, 8:12] = 1
    nib.save(nib.Nifti1Image(one, affine), str(masks / "a.nii.gz"))
    nib.save(nib.Nifti1Image(two, affine), str(masks / "b.nii"))
    (masks / "README").write_text("not a mask")
    default_key = atlas_priors.cache_key()
    monkeypatch.setenv(atlas_priors.LESION_ATLAS_ENV, str(masks))
    assert [p.name for p in atlas_priors.prior_lesion_masks()] == ["a.nii.gz", "b.nii"]
    assert atlas_priors.cache_key() != default_key
    _, frequency = template_maps(tmp_path)
    expected = ndimage.gaussian_filter((one + two) / 2.0, atlas_priors.LESION_SIGMA_MM / 2.0)
    assert np.allclose(frequency.affine, affine)
    assert np.allclose(np.asarray(frequency.dataobj), expected, atol=1e-6)
    assert atlas_priors.lesion_prior_source() == f"2 lesion masks of {masks}"
    assert describe("combine")["LesionMasks"] == f"2 lesion masks of {masks}"
    # the shipped masks again once the variable is unset (not the maps cached for the folder)
    monkeypatch.delenv(atlas_priors.LESION_ATLAS_ENV)
    assert atlas_priors.lesion_prior_source() == "27 MSLUB patients"
    assert template_maps(tmp_path)[1].shape != frequency.shape
    # bad folders and masks are named
    monkeypatch.setenv(atlas_priors.LESION_ATLAS_ENV, str(tmp_path / "absent"))
    with pytest.raises(InputDataError, match=r"absent: not a folder \(named by BIDS_MDPP_LESION_ATLAS\)"):
        atlas_priors.prior_lesion_masks()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(atlas_priors.LESION_ATLAS_ENV, str(empty))
    with pytest.raises(InputDataError, match="no lesion mask"):
        template_maps(tmp_path)
    nib.save(nib.Nifti1Image(one[:10], affine), str(masks / "c.nii.gz"))
    monkeypatch.setenv(atlas_priors.LESION_ATLAS_ENV, str(masks))
    with pytest.raises(InputDataError, match=r"c.nii.gz: not on the grid of a.nii.gz"):
        template_maps(tmp_path)


def test_a_lesion_is_found_where_no_atlas_patient_had_one(monkeypatch):
    """The lesion prior has a floor over white matter: with the atlas frequency zero at a clearly
    bright FLAIR lesion it is found (without the floor the prior leaves it to white matter), and
    a lesion-free brain still gets nothing."""
    tissue = np.stack([np.full(5, 0.1), np.full(5, 0.3), np.full(5, 0.6)])
    prior = class_prior(tissue, np.array([0.0, 0.0, 0.2, 0.6, 0.0]))
    assert np.allclose(prior[3], [0.006, 0.006, 0.206, 0.5, 0.006])  # capped at 0.5
    assert np.allclose(prior.sum(0), 1.0)
    for seed in range(2):
        volumes, brain, blob, priors = phantom(("FLAIR",), {"FLAIR": 0.15}, seed=seed)
        nowhere = AtlasPriors(tissue=priors.tissue,
                              lesion_frequency=np.zeros_like(priors.lesion_frequency))
        found = lesion_posterior(volumes, brain, nowhere) >= 0.5
        assert dice(found, blob) > 0.9 and (found & ~blob).sum() == 0
        volumes, brain, _, _ = phantom(("FLAIR",), seed=seed)
        assert (lesion_posterior(volumes, brain, nowhere) >= 0.5).sum() == 0
    monkeypatch.setattr(intensity_model, "LESION_PRIOR_IN_WHITE_MATTER", 0.0)
    volumes, brain, blob, _ = phantom(("FLAIR",), {"FLAIR": 0.15})
    # without the floor the session's load scales a prior of 1e-4 at most fourfold: part found
    assert 0 < (lesion_posterior(volumes, brain, nowhere) >= 0.5).sum() < 0.6 * blob.sum()
    monkeypatch.setattr(intensity_model, "MAX_LOAD_SCALE", 1.0)
    assert (lesion_posterior(volumes, brain, nowhere) >= 0.5).sum() == 0


def _confluent(shift: float, seed: int = 0):
    """The phantom on FLAIR with a confluent periventricular band of lesion (9 % of the brain,
    far above the atlas's 2 % in white matter), ``shift`` brighter than white matter."""
    volumes, brain, _, priors = phantom(("FLAIR",), seed=seed)
    z, y, x = np.indices(SHAPE) - np.array(SHAPE)[:, None, None, None] / 2 + 0.5
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    band = (r >= 4) & (r < 8)
    volumes["FLAIR"][band] += shift
    return volumes, brain, band, priors


def test_the_lesion_prior_is_scaled_up_by_a_high_lesion_load(monkeypatch):
    """A brain with many more lesions than the atlas's patients: the lesion prior grows with the
    session's own load, and a faint confluent band is found; a brain with one lesion or none
    keeps the atlas's prior."""
    for seed in range(2):
        volumes, brain, band, priors = _confluent(0.08, seed=seed)
        posterior, fit = intensity_model.session_fit(volumes, brain, priors)
        assert fit.lesion_prior_scale == intensity_model.MAX_LOAD_SCALE
        found = posterior >= 0.5
        assert dice(found, band) > 0.9 and (found & ~band).sum() < 0.02 * band.sum()
        assert np.array_equal(posterior, lesion_posterior(volumes, brain, priors))
    for shift in ({"FLAIR": 0.15}, None):
        volumes, brain, _, priors = phantom(("FLAIR",), shift)
        assert intensity_model.session_fit(volumes, brain, priors)[1].lesion_prior_scale == 1.0
    monkeypatch.setattr(intensity_model, "MAX_LOAD_SCALE", 1.0)
    volumes, brain, band, priors = _confluent(0.08)
    assert dice(lesion_posterior(volumes, brain, priors) >= 0.5, band) < 0.7


def test_the_load_scale_is_the_lesion_class_volume_over_the_prior_between_one_and_the_cap():
    prior = np.full(10, 0.02)
    lesion = np.full(10, 0.1)
    anywhere = np.ones(10, bool)
    assert intensity_model.load_scale(lesion, anywhere, prior) == pytest.approx(4.0)
    # only the voxels that can be lesion count
    half = np.arange(10) < 5
    assert intensity_model.load_scale(lesion, half, prior) == pytest.approx(2.5)
    assert intensity_model.load_scale(lesion * 10, anywhere, prior) == intensity_model.MAX_LOAD_SCALE
    assert intensity_model.load_scale(lesion / 10, anywhere, prior) == 1.0  # never down
    # the scaled prior keeps each column a distribution, the lesion row capped
    tissue = np.stack([np.full(3, 0.1), np.full(3, 0.3), np.full(3, 0.6)])
    base = class_prior(tissue, np.array([0.0, 0.1, 0.4]))
    scaled = intensity_model.scaled_prior(base, 3.0)
    assert np.allclose(scaled.sum(0), 1.0)
    assert np.allclose(scaled[3], np.minimum(3 * base[3], intensity_model.MAX_LESION_PRIOR))
    assert np.allclose(scaled[:3] / scaled[:3].sum(0), base[:3] / base[:3].sum(0))
    assert intensity_model.scaled_prior(base, 1.0) is base
