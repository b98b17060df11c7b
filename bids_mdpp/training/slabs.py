"""The training data pipeline: a slab cache on disk and a Dataset of augmented 2.5D crops.

**Cache.**  One folder per subject/session holds memory-mapped ``.npy`` arrays on the model
grid: ``images.npy`` (K, X, Y, Z) float16 in the model's contrast order (a contrast the
session lacks is all zeros), ``label.npy`` and ``brain.npy`` (X, Y, Z) uint8, and
``cache.json`` (which contrasts exist, the slices of each axis with ≥ 2 lesion voxels, and a
fingerprint of the inputs so that a cache is reused only while they are unchanged).  Any
2.5D slab of any orientation is read from them without loading the volume.

**Samples.**  Each item of :class:`SlabDataset` is one slice with ≥ 2 lesion voxels (all
three axes) or, with ``negative_slice_p`` > 0, that share of the items is a *negative* slice:
a slice with brain (at least :data:`MIN_BRAIN_VOXELS`) and fewer lesion voxels, drawn anew for
each epoch from every session, lesion-free sessions included, and cropped around a random brain
voxel.  Without them the network never sees normal anatomy far from a lesion (the bright
hard negatives of the synthetic engine, a lesion-free brain).  As in TorchIO, every random choice is first drawn into a
:class:`SampleParams` from a generator seeded by (seed, epoch, item), then applied by
:func:`make_sample` deterministically, so a sample does not depend on the worker that made
it, and a resumed run sees the same samples.  The draws: a crop (default 128 × 128) placed
at random around a random lesion voxel of the slice (uniformly with p = 0.1); flips p = 0.3
per in-plane axis; an in-plane transpose p = 0.5; per present contrast with p = 0.5 a light
intensity change on the non-background voxels (gamma around the white-matter peak, a scale,
Gaussian noise); the ModDrop code (:func:`bids_mdpp.nn.moddrop.draw_drop`); and, with
``AugmentationSettings.randomisation.p`` > 0, per present contrast with that chance a domain
randomisation (contrast, resolution, bias; :mod:`bids_mdpp.training.randomise`) applied
before the light intensity change.  A slice
smaller than the crop is padded with the background value −1 (zero is kept for "contrast
missing", as the network reads it).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bids_mdpp.errors import NoInputError
from bids_mdpp.training.randomise import RandomisationSettings, randomise_contrast

CACHE_VERSION = 1
#: Normalised background intensity (see :class:`bids_mdpp.session.PreprocResult`).
BACKGROUND = -1.0
#: Normalised white-matter peak: the fixed point of the gamma augmentation.
WM_PEAK = -0.5
#: A slice is a training sample when it holds at least this many lesion voxels.
MIN_LESION_VOXELS = 2
#: A slice is a candidate negative sample when it holds at least this many brain voxels.
MIN_BRAIN_VOXELS = 100


@dataclass(frozen=True)
class SubjectCache:
    """The cached arrays of one subject/session (opened lazily, memory-mapped)."""

    directory: Path
    key: str
    subject: str
    contrasts: tuple[str, ...]
    available: tuple[bool, ...]
    shape: tuple[int, int, int]
    lesion_slices: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    fingerprint: str = ""

    def images(self) -> np.ndarray:
        """(K, X, Y, Z) float16 memory map, the model's contrast order."""
        return np.load(self.directory / "images.npy", mmap_mode="r")

    def label(self) -> np.ndarray:
        """(X, Y, Z) uint8 memory map of the reference lesion mask."""
        return np.load(self.directory / "label.npy", mmap_mode="r")

    def brain(self) -> np.ndarray:
        """(X, Y, Z) uint8 memory map of the brain mask."""
        return np.load(self.directory / "brain.npy", mmap_mode="r")

    def volumes(self) -> dict[str, np.ndarray]:
        """The present contrasts as (X, Y, Z) float32 arrays, for whole-volume validation."""
        images = self.images()
        return {c: np.asarray(images[k], dtype=np.float32)
                for k, c in enumerate(self.contrasts) if self.available[k]}


def write_subject_cache(
    directory: Path,
    *,
    key: str,
    subject: str,
    volumes: Mapping[str, np.ndarray],
    label: np.ndarray,
    brain: np.ndarray,
    contrasts: Sequence[str],
    fingerprint: str = "",
    dtype: type = np.float16,
) -> SubjectCache:
    """Write one subject's cache (each file atomically; ``cache.json`` last)."""
    from bids_mdpp.imageio import atomic_path, write_json

    shape = tuple(int(n) for n in label.shape)
    stack = np.zeros((len(contrasts), *shape), dtype=dtype)
    for k, contrast in enumerate(contrasts):
        if contrast in volumes:
            if volumes[contrast].shape != shape:
                raise ValueError(f"{key}: {contrast} has shape {volumes[contrast].shape}, "
                                 f"the lesion mask {shape}")
            stack[k] = volumes[contrast]
    label = (np.asarray(label) > 0).astype(np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in (("images", stack), ("label", label),
                        ("brain", (np.asarray(brain) > 0).astype(np.uint8))):
        with atomic_path(directory / f"{name}.npy") as tmp:
            np.save(tmp, array)
    slices = tuple(
        tuple(int(i) for i in np.flatnonzero(
            label.sum(axis=tuple(a for a in range(3) if a != axis)) >= MIN_LESION_VOXELS))
        for axis in range(3)
    )
    meta = {
        "version": CACHE_VERSION, "key": key, "subject": subject, "contrasts": list(contrasts),
        "available": [c in volumes for c in contrasts], "shape": list(shape),
        "lesion_slices": [list(s) for s in slices], "fingerprint": fingerprint,
    }
    write_json(meta, directory / "cache.json")
    return _from_meta(directory, meta)


def open_subject_cache(directory: Path, fingerprint: str | None = None) -> SubjectCache | None:
    """The cache in ``directory``, or None when absent, incomplete or (given ``fingerprint``)
    made from other inputs."""
    try:
        meta = json.loads((directory / "cache.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("version") != CACHE_VERSION:
        return None
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        return None
    if not all((directory / f"{n}.npy").is_file() for n in ("images", "label", "brain")):
        return None
    return _from_meta(directory, meta)


def _from_meta(directory: Path, meta: dict) -> SubjectCache:
    return SubjectCache(
        directory=directory, key=meta["key"], subject=meta["subject"],
        contrasts=tuple(meta["contrasts"]), available=tuple(bool(a) for a in meta["available"]),
        shape=tuple(meta["shape"]), lesion_slices=tuple(tuple(s) for s in meta["lesion_slices"]),
        fingerprint=meta.get("fingerprint", ""),
    )


@dataclass(frozen=True)
class AugmentationSettings:
    """Probabilities and ranges of the random sample draws (intensities in normalised units)."""

    crop: int = 128
    uniform_crop_p: float = 0.1
    flip_p: float = 0.3
    transpose_p: float = 0.5
    intensity_p: float = 0.5
    log_gamma_range: float = 0.25
    scale_range: float = 0.1
    noise_max: float = 0.03
    #: On-the-fly domain randomisation (:mod:`bids_mdpp.training.randomise`); off by default.
    randomisation: RandomisationSettings = RandomisationSettings()


@dataclass(frozen=True)
class SampleParams:
    """Every random choice of one sample (TorchIO style: drawn first, then applied).

    ``origin`` is the crop's corner in the slice padded to at least the crop size; ``gamma``,
    ``scale`` and ``noise_sigma`` hold one value per model contrast (1, 1, 0: unchanged);
    ``drop`` is the ModDrop code (1 = kept); ``randomised`` says which contrasts are
    re-imaged by :func:`~bids_mdpp.training.randomise.randomise_contrast` from
    ``randomise_seed`` (empty: none).
    """

    subject: int
    axis: int
    index: int
    origin: tuple[int, int]
    flips: tuple[bool, bool]
    transpose: bool
    gamma: tuple[float, ...]
    scale: tuple[float, ...]
    noise_sigma: tuple[float, ...]
    noise_seed: int
    drop: tuple[int, ...]
    randomised: tuple[bool, ...] = ()
    randomise_seed: int = 0


def plane_shape(shape: Sequence[int], axis: int) -> tuple[int, int]:
    """In-plane shape (H, W) of slices along ``axis`` of a (X, Y, Z) volume."""
    return tuple(int(n) for i, n in enumerate(shape) if i != axis)


def take_slab(images: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slices [i−1, i, i+1] along ``axis`` (edges replicated): (K, X, Y, Z) → (K, 3, H, W)."""
    idx = np.clip([index - 1, index, index + 1], 0, images.shape[axis + 1] - 1)
    slab = np.take(images, idx, axis=axis + 1)
    return np.moveaxis(slab, axis + 1, 1).astype(np.float32)


def draw_params(
    rng: np.random.Generator,
    *,
    subject: int,
    axis: int,
    index: int,
    label_plane: np.ndarray,
    available: Sequence[bool],
    settings: AugmentationSettings,
    moddrop: bool,
    single_contrast_p: float = 0.0,
    brain_plane: np.ndarray | None = None,
) -> SampleParams:
    """Draw one sample's parameters; ``label_plane`` (H, W) is the slice's lesion mask.

    The crop is centred near a random lesion voxel, or with ``brain_plane`` (H, W) given (a
    negative sample) near a random brain voxel; uniformly with ``settings.uniform_crop_p`` or
    when there is no such voxel.
    ``single_contrast_p``: see :func:`bids_mdpp.nn.moddrop.draw_drop` (``single_p``)."""
    crop = settings.crop
    height, width = label_plane.shape
    padded = (max(height, crop), max(width, crop))
    centres = np.argwhere((label_plane if brain_plane is None else brain_plane) > 0)
    if rng.random() < settings.uniform_crop_p or len(centres) == 0:
        origin = tuple(int(rng.integers(0, p - crop + 1)) for p in padded)
    else:
        voxel = centres[rng.integers(len(centres))]
        before = ((padded[0] - height) // 2, (padded[1] - width) // 2)
        origin = tuple(
            int(np.clip(voxel[d] + before[d] - rng.integers(0, crop), 0, padded[d] - crop))
            for d in range(2)
        )
    flips = (bool(rng.random() < settings.flip_p), bool(rng.random() < settings.flip_p))
    transpose = bool(rng.random() < settings.transpose_p)
    k = len(available)
    changed = (rng.random(k) < settings.intensity_p) & np.asarray(available, dtype=bool)
    gamma = np.where(changed, np.exp(rng.uniform(-1, 1, k) * settings.log_gamma_range), 1.0)
    scale = np.where(changed, 1 + rng.uniform(-1, 1, k) * settings.scale_range, 1.0)
    sigma = np.where(changed, rng.uniform(0, settings.noise_max, k), 0.0)
    noise_seed = int(rng.integers(2**31))
    if moddrop:
        from bids_mdpp.nn.moddrop import draw_drop

        drop = tuple(int(b) for b in draw_drop([bool(a) for a in available], rng,
                                               single_p=single_contrast_p))
    else:
        drop = tuple(int(bool(a)) for a in available)
    randomised, randomise_seed = (), 0
    if settings.randomisation.p > 0:  # drawn last: the draws above stay as without it
        randomised = tuple(bool(r) for r in (rng.random(k) < settings.randomisation.p)
                           & np.asarray(available, dtype=bool))
        randomise_seed = int(rng.integers(2**31))
    return SampleParams(
        subject=subject, axis=axis, index=index, origin=origin, flips=flips, transpose=transpose,
        gamma=tuple(float(g) for g in gamma), scale=tuple(float(s) for s in scale),
        noise_sigma=tuple(float(s) for s in sigma), noise_seed=noise_seed, drop=drop,
        randomised=randomised, randomise_seed=randomise_seed,
    )


def make_sample(
    images: np.ndarray, label: np.ndarray, params: SampleParams, available: Sequence[bool],
    crop: int, channels: Sequence[int] | None = None,
    randomisation: RandomisationSettings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``params``: (K', X, Y, Z) images and (X, Y, Z) label → the input (K·3, C, C)
    float32 (contrast-major, absent contrasts zero) and the label (1, C, C) float32.

    ``channels`` picks the K model contrasts among the K' cached ones (default: all);
    ``randomisation`` gives the ranges for the contrasts ``params.randomised`` names."""
    slab = take_slab(images, params.axis, params.index)
    if channels is not None:
        slab = slab[list(channels)]
    plane = np.take(label, params.index, axis=params.axis).astype(np.float32)
    height, width = plane.shape
    pad = [(max(crop - n, 0) // 2, max(crop - n, 0) - max(crop - n, 0) // 2)
           for n in (height, width)]
    slab = np.pad(slab, [(0, 0), (0, 0), *pad], constant_values=BACKGROUND)
    plane = np.pad(plane, pad, constant_values=0)
    (r, c) = params.origin
    slab = slab[:, :, r:r + crop, c:c + crop]
    plane = plane[r:r + crop, c:c + crop]
    for dim, flip in enumerate(params.flips):
        if flip:
            slab = np.flip(slab, axis=2 + dim)
            plane = np.flip(plane, axis=dim)
    if params.transpose:
        slab = slab.swapaxes(2, 3)
        plane = plane.T
    slab = np.ascontiguousarray(slab)
    noise_rng = np.random.default_rng(params.noise_seed)
    for k, present in enumerate(available):
        if not present:
            slab[k] = 0.0
            continue
        if params.randomised and params.randomised[k]:
            foreground = slab[k] > BACKGROUND + 1e-3
            level = randomise_contrast(np.maximum(slab[k] - BACKGROUND, 0.0), foreground,
                                       params.randomise_seed + k,
                                       randomisation or RandomisationSettings(),
                                       WM_PEAK - BACKGROUND)
            slab[k] = np.where(foreground, level + BACKGROUND, slab[k])
        if params.gamma[k] == 1.0 and params.scale[k] == 1.0 and params.noise_sigma[k] == 0.0:
            continue
        foreground = slab[k] > BACKGROUND + 1e-3
        level = np.maximum(slab[k] - BACKGROUND, 0.0)
        peak = WM_PEAK - BACKGROUND
        level = params.scale[k] * peak * (level / peak) ** params.gamma[k]
        level += noise_rng.normal(0.0, params.noise_sigma[k], level.shape)
        slab[k] = np.where(foreground, level + BACKGROUND, slab[k])
    return slab.reshape(-1, crop, crop), plane[None].copy()


class SlabDataset(torch.utils.data.Dataset):
    """Augmented 2.5D crops of every slice with ≥ 2 lesion voxels, from all three axes, and
    with ``negative_slice_p`` that share of negative slices (see the module docstring).

    ``contrasts`` are the model's, in its order (default: the caches'); every cache must hold
    them.  Item ``i`` of epoch ``e`` is a dict of tensors: ``image`` (K·3, C, C) float32, the
    subject's full input (contrast-major, [i−1, i, i+1] per contrast, absent contrasts 0);
    ``available`` (K,) float32, the contrasts the subject has; ``drop`` (K,) float32, the
    ModDrop code drawn for this sample (equal to ``available`` with ``moddrop=False``; a
    single available contrast with probability ``single_contrast_p``); and
    ``label`` (1, C, C) float32.  Deterministic for (seed, epoch, i): call
    :meth:`set_epoch` before iterating an epoch.
    """

    def __init__(
        self,
        subjects: Sequence[SubjectCache],
        *,
        contrasts: Sequence[str] | None = None,
        seed: int = 0,
        settings: AugmentationSettings = AugmentationSettings(),
        moddrop: bool = True,
        single_contrast_p: float = 0.0,
        negative_slice_p: float = 0.0,
    ):
        if not 0.0 <= negative_slice_p < 1.0:
            raise ValueError(f"negative_slice_p must lie in [0, 1), got {negative_slice_p}")
        self.subjects = list(subjects)
        self.seed = int(seed)
        self.settings = settings
        self.moddrop = moddrop
        self.single_contrast_p = float(single_contrast_p)
        self.epoch = 0
        self.contrasts = tuple(contrasts or (self.subjects[0].contrasts if self.subjects else ()))
        self.channels = []
        for cache in self.subjects:
            missing = [c for c in self.contrasts if c not in cache.contrasts]
            if missing:
                raise ValueError(f"{cache.key}: the slab cache lacks {', '.join(missing)}")
            self.channels.append(tuple(cache.contrasts.index(c) for c in self.contrasts))
        self.available = [tuple(cache.available[k] for k in channels)
                          for cache, channels in zip(self.subjects, self.channels)]
        rows = [(s, axis, index) for s, cache in enumerate(self.subjects)
                for axis in range(3) for index in cache.lesion_slices[axis]]
        if not rows:
            raise NoInputError(
                f"no training slice holds {MIN_LESION_VOXELS} or more lesion voxels: the "
                f"reference masks of {', '.join(c.key for c in self.subjects) or 'no session'} "
                "are empty or nearly so"
            )
        #: Items below this index are lesion slices, the others negative slices.
        self.n_lesion_slices = len(rows)
        self.negative_pool = self._negative_pool() if negative_slice_p > 0 else np.zeros((0, 3), np.int64)
        n_negative = (int(round(len(rows) * negative_slice_p / (1.0 - negative_slice_p)))
                      if len(self.negative_pool) else 0)
        self.items = np.asarray(rows + [(-1, -1, -1)] * n_negative, dtype=np.int64)
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _negative_pool(self) -> np.ndarray:
        """(subject, axis, index) of every slice with brain and below the lesion-slice count."""
        pool = []
        for s, cache in enumerate(self.subjects):
            brain = cache.brain()
            for axis in range(3):
                counts = brain.sum(axis=tuple(a for a in range(3) if a != axis))
                lesion = set(cache.lesion_slices[axis])
                pool += [(s, axis, int(i)) for i in np.flatnonzero(counts >= MIN_BRAIN_VOXELS)
                         if int(i) not in lesion]
        return np.asarray(pool, dtype=np.int64).reshape(-1, 3)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # memory maps are reopened in each worker
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def arrays(self, subject: int) -> tuple[np.ndarray, np.ndarray]:
        if subject not in self._arrays:
            cache = self.subjects[subject]
            self._arrays[subject] = (cache.images(), cache.label())
        return self._arrays[subject]

    def params(self, item: int) -> SampleParams:
        """The random draws of ``item`` in the current epoch."""
        rng = np.random.default_rng((self.seed, self.epoch, int(item)))
        negative = item >= self.n_lesion_slices
        row = self.negative_pool[rng.integers(len(self.negative_pool))] if negative else self.items[item]
        subject, axis, index = (int(v) for v in row)
        _, label = self.arrays(subject)
        brain_plane = np.take(self.subjects[subject].brain(), index, axis=axis) if negative else None
        return draw_params(
            rng, subject=subject, axis=axis, index=index,
            label_plane=np.take(label, index, axis=axis),
            available=self.available[subject], settings=self.settings,
            moddrop=self.moddrop, single_contrast_p=self.single_contrast_p,
            brain_plane=brain_plane,
        )

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        params = self.params(item)
        images, label = self.arrays(params.subject)
        available = self.available[params.subject]
        image, target = make_sample(images, label, params, available, self.settings.crop,
                                    self.channels[params.subject], self.settings.randomisation)
        return {
            "image": torch.from_numpy(image),
            "available": torch.tensor(available, dtype=torch.float32),
            "drop": torch.tensor(params.drop, dtype=torch.float32),
            "label": torch.from_numpy(target),
        }
