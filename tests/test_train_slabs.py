"""The slab cache and the Dataset of augmented 2.5D crops."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_train_support import normalised_subject

from bids_mdpp.errors import NoInputError
from bids_mdpp.training.slabs import (
    AugmentationSettings,
    SlabDataset,
    make_sample,
    open_subject_cache,
    take_slab,
    write_subject_cache,
)

CONTRASTS = ("T1w", "FLAIR", "T2w", "PDw")


@pytest.fixture
def caches(tmp_path):
    """Two cached subjects: one with T1w+FLAIR+T2w, one with FLAIR only."""
    out = []
    for seed, contrasts in ((1, ("T1w", "FLAIR", "T2w")), (2, ("FLAIR",))):
        volumes, label, brain = normalised_subject(seed, contrasts)
        out.append(write_subject_cache(
            tmp_path / f"sub-{seed}", key=f"sub-{seed}", subject=str(seed), volumes=volumes,
            label=label, brain=brain, contrasts=CONTRASTS, fingerprint=f"fp{seed}"))
    return out


def test_cache_round_trip_memory_maps_and_lesion_slices(caches, tmp_path):
    cache = caches[0]
    images = cache.images()
    assert isinstance(images, np.memmap) and images.shape == (4, 40, 40, 40)
    assert images.dtype == np.float16
    assert cache.available == (True, True, True, False)
    assert not np.any(images[3])  # PDw absent → zeros
    volumes, label, _ = normalised_subject(1, ("T1w", "FLAIR", "T2w"))
    np.testing.assert_allclose(images[1], volumes["FLAIR"], atol=2e-3)
    assert set(cache.volumes()) == {"T1w", "FLAIR", "T2w"}
    for axis in range(3):
        counts = label.sum(axis=tuple(a for a in range(3) if a != axis))
        assert list(cache.lesion_slices[axis]) == list(np.flatnonzero(counts >= 2))
    reopened = open_subject_cache(tmp_path / "sub-1", "fp1")
    assert reopened == cache
    assert open_subject_cache(tmp_path / "sub-1", "other inputs") is None
    assert open_subject_cache(tmp_path / "nowhere") is None
    (tmp_path / "sub-1" / "label.npy").unlink()
    assert open_subject_cache(tmp_path / "sub-1", "fp1") is None


def test_take_slab_stacks_neighbours_contrast_major_with_replicated_edges():
    images = np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 4, 5, 6)
    slab = take_slab(images, 1, 0)
    assert slab.shape == (2, 3, 4, 6)
    np.testing.assert_array_equal(slab[1, 0], images[1, :, 0, :])  # edge replicated
    np.testing.assert_array_equal(slab[1, 2], images[1, :, 1, :])
    slab = take_slab(images, 2, 5)
    np.testing.assert_array_equal(slab[0, 0], images[0, :, :, 4])
    np.testing.assert_array_equal(slab[0, 2], images[0, :, :, 5])


def test_samples_have_the_documented_content(caches):
    dataset = SlabDataset(caches, seed=3, settings=AugmentationSettings(crop=48))
    assert len(dataset) == sum(len(s) for c in caches for s in c.lesion_slices)
    for item in range(0, len(dataset), 7):
        sample = dataset[item]
        image, label = sample["image"], sample["label"]
        assert image.shape == (12, 48, 48) and image.dtype == torch.float32
        assert label.shape == (1, 48, 48) and set(label.unique().tolist()) <= {0.0, 1.0}
        available, drop = sample["available"], sample["drop"]
        assert torch.all(drop <= available) and drop.sum() >= 1
        for k in range(4):
            if not available[k]:
                assert torch.all(image[3 * k:3 * k + 3] == 0)
            else:  # the 40-voxel slice is padded with the background value to 48
                assert image[3 * k:3 * k + 3].min() >= -1.2
                assert torch.all(image[3 * k + 1, 0, :] == -1)


def test_a_lesion_centred_crop_contains_the_lesion(caches):
    settings = AugmentationSettings(crop=16, uniform_crop_p=0.0, intensity_p=0.0)
    dataset = SlabDataset(caches, seed=0, settings=settings)
    assert all(dataset[i]["label"].sum() >= 1 for i in range(len(dataset)))


def test_samples_are_deterministic_per_seed_epoch_and_item(caches):
    a = SlabDataset(caches, seed=5, settings=AugmentationSettings(crop=32))
    b = SlabDataset(caches, seed=5, settings=AugmentationSettings(crop=32))
    for key in ("image", "drop", "label"):
        assert torch.equal(a[4][key], b[4][key])
    before = a.params(4)
    a.set_epoch(1)
    assert a.params(4) != before
    c = SlabDataset(caches, seed=6, settings=AugmentationSettings(crop=32))
    assert c.params(4) != before


def test_drop_out_draws_every_non_empty_subset_and_can_be_off(caches):
    dataset = SlabDataset(caches[:1], seed=0, settings=AugmentationSettings(crop=32))
    codes = set()
    for epoch in range(30):
        dataset.set_epoch(epoch)
        codes.update(dataset.params(i).drop for i in range(len(dataset)))
    assert codes == {(a, b, c, 0) for a in (0, 1) for b in (0, 1) for c in (0, 1)} - {(0, 0, 0, 0)}
    fixed = SlabDataset(caches[:1], seed=0, moddrop=False)
    assert {fixed.params(i).drop for i in range(len(fixed))} == {(1, 1, 1, 0)}


def test_single_contrast_p_makes_single_contrast_codes_that_share(caches):
    dataset = SlabDataset(caches[:1], seed=0, settings=AugmentationSettings(crop=32),
                          single_contrast_p=1.0)
    codes = [dataset.params(i).drop for i in range(len(dataset))]
    assert all(sum(code) == 1 and code[3] == 0 for code in codes)
    assert {code.index(1) for code in codes} == {0, 1, 2}


def plain_params(caches):
    """A 40-voxel crop of the first sample with every augmentation switched off."""
    dataset = SlabDataset(caches[:1], seed=0, settings=AugmentationSettings(crop=40))
    params = dataclasses.replace(dataset.params(0), origin=(0, 0), flips=(False, False),
                                 transpose=False, gamma=(1.0,) * 4, scale=(1.0,) * 4,
                                 noise_sigma=(0.0,) * 4)
    return dataset, params


def test_flips_and_transpose_move_image_and_label_together(caches):
    dataset, params = plain_params(caches)
    images, label = dataset.arrays(0)
    available = caches[0].available
    plain, plain_label = make_sample(images, label, params, available, 40)
    flipped, flipped_label = make_sample(
        images, label, dataclasses.replace(params, flips=(True, False), transpose=True),
        available, 40)
    np.testing.assert_array_equal(flipped, np.flip(plain, axis=1).swapaxes(1, 2))
    np.testing.assert_array_equal(flipped_label, np.flip(plain_label, axis=1).swapaxes(1, 2))


def test_intensity_augmentation_keeps_background_and_white_matter_peak(caches):
    dataset, base = plain_params(caches)
    images, label = dataset.arrays(0)
    plain, _ = make_sample(images, label, base, caches[0].available, 40)
    gamma = dataclasses.replace(base, gamma=(1.3, 1.0, 1.0, 1.0))
    changed, _ = make_sample(images, label, gamma, caches[0].available, 40)
    background = plain[:3] == -1
    np.testing.assert_array_equal(changed[:3][background], -1)
    near_peak = np.abs(plain[:3] + 0.5) < 1e-3
    np.testing.assert_allclose(changed[:3][near_peak], -0.5, atol=2e-3)
    assert not np.allclose(changed[:3], plain[:3])
    np.testing.assert_array_equal(changed[3:], plain[3:])  # other contrasts untouched


def test_no_lesion_slice_is_an_error_naming_the_sessions(tmp_path):
    volumes, label, brain = normalised_subject(0, ("FLAIR",))
    empty = write_subject_cache(tmp_path / "e", key="sub-e", subject="e", volumes=volumes,
                                label=np.zeros_like(label), brain=brain, contrasts=("FLAIR",))
    with pytest.raises(NoInputError, match="sub-e"):
        SlabDataset([empty])


def test_dataset_pickles_without_its_memory_maps(caches):
    import pickle

    dataset = SlabDataset(caches, seed=1, settings=AugmentationSettings(crop=32))
    first = dataset[0]
    assert dataset._arrays
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._arrays == {}
    assert torch.equal(clone[0]["image"], first["image"])


@pytest.fixture
def with_lesion_free(caches, tmp_path):
    """The two subjects of ``caches`` and a lesion-free one."""
    volumes, label, brain = normalised_subject(7, ("FLAIR",))
    free = write_subject_cache(tmp_path / "free", key="sub-free", subject="free", volumes=volumes,
                               label=np.zeros_like(label), brain=brain, contrasts=CONTRASTS)
    return [*caches, free]


def test_negative_slices_take_the_share_asked_and_come_from_brain_without_lesions(with_lesion_free):
    plain = SlabDataset(with_lesion_free, seed=0, settings=AugmentationSettings(crop=24))
    assert len(plain) == plain.n_lesion_slices, "off by default: lesion slices only"
    dataset = SlabDataset(with_lesion_free, seed=0, settings=AugmentationSettings(crop=24),
                          negative_slice_p=0.25)
    n = dataset.n_lesion_slices
    assert n == plain.n_lesion_slices and len(dataset) == n + round(n / 3)
    drawn = [dataset.params(i) for i in range(n, len(dataset))]
    assert {p.subject for p in drawn} == {0, 1, 2}, "every session, the lesion-free one too"
    for params in drawn:
        cache = dataset.subjects[params.subject]
        assert params.index not in cache.lesion_slices[params.axis]
        assert np.take(cache.brain(), params.index, axis=params.axis).sum() >= 100
    # a negative crop lies on brain, and its label holds no lesion of a lesion-free session
    free_item = next(i for i in range(n, len(dataset)) if dataset.params(i).subject == 2)
    sample = dataset[free_item]
    assert not sample["label"].any() and (sample["image"][3:6] > -1).any()
    # drawn anew each epoch, deterministically
    again = SlabDataset(with_lesion_free, seed=0, settings=AugmentationSettings(crop=24),
                        negative_slice_p=0.25)
    assert again.params(n) == dataset.params(n)
    dataset.set_epoch(1)
    assert [dataset.params(i) for i in range(n, len(dataset))] != drawn


def test_negative_slice_p_must_leave_room_for_lesions(caches):
    with pytest.raises(ValueError, match=r"negative_slice_p must lie in \[0, 1\)"):
        SlabDataset(caches, negative_slice_p=1.0)


def test_domain_randomisation_changes_present_contrasts_only_and_no_other_draw(caches):
    from bids_mdpp.training.randomise import RandomisationSettings

    plain = SlabDataset(caches, seed=4, settings=AugmentationSettings(crop=32))
    settings = AugmentationSettings(crop=32, randomisation=RandomisationSettings(p=1.0))
    randomised = SlabDataset(caches, seed=4, settings=settings)
    changed = 0
    for item in range(0, len(plain), max(1, len(plain) // 12)):
        p, r = plain.params(item), randomised.params(item)
        assert dataclasses.replace(r, randomised=(), randomise_seed=0) == p  # same crop, code…
        assert p.randomised == ()
        assert r.randomised == plain.available[p.subject]  # p = 1: every present contrast
        a, b = plain[item], randomised[item]
        assert torch.equal(a["label"], b["label"]) and torch.equal(a["drop"], b["drop"])
        image_a, image_b = a["image"].view(4, 3, 32, 32), b["image"].view(4, 3, 32, 32)
        for k, present in enumerate(plain.available[p.subject]):
            if not present:
                assert not image_b[k].any()
            else:
                background = image_a[k] <= -1 + 1e-3
                assert torch.equal(image_a[k][background], image_b[k][background])
                changed += not torch.allclose(image_a[k], image_b[k])
        assert torch.equal(b["image"], randomised[item]["image"])  # deterministic
    assert changed > 0
