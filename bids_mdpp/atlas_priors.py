"""Anatomical priors on the model grid: tissue classes and where MS lesions occur.

Two atlases ship offline and are carried onto a session's model grid by one affine (12-dof)
fit of the template's brain to the session's brain-only reference image
(:func:`bids_mdpp.preproc.templatefit.fit_brain_to_template`):

- tissue: the grey- and white-matter probability maps of the MNI152 2009a symmetric template
  bundled with nilearn (Fonov et al. 2011); cerebrospinal fluid is what of the brain mask is
  neither;
- lesions: the fraction of 27 MSLUB patients (Lesjak et al. 2018) with a consensus lesion at
  each voxel of the FSL MNI152 1 mm grid (``bids_mdpp/data/lesion-atlas``; the two MNI152
  templates are taken as one space: they differ by a few millimetres at most, well within
  the smoothing below).

The lesion masks can be replaced by another set on the same grid (a cohort's own, or the
shipped ones less a patient being scored) by naming their folder in the environment variable
:data:`LESION_ATLAS_ENV` (:func:`prior_lesion_masks`).

The maps are smoothed in template space (Gaussian, :data:`TISSUE_SIGMA_MM` and
:data:`LESION_SIGMA_MM`) before resampling, so that an affine fit's residual misalignment is
spread rather than cut.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

#: Gaussian sigma (mm) applied to the tissue maps in template space.
TISSUE_SIGMA_MM = 1.0
#: Gaussian sigma (mm) applied to the lesion frequency map in template space.
LESION_SIGMA_MM = 2.0
#: Floor added to each tissue map before they are normalised to sum to one (no class is
#: ever impossible where the affine fit is off).
TISSUE_FLOOR = 0.02


#: Environment variable naming a folder of lesion masks (NIfTI, one patient each, all on one
#: MNI152 1 mm grid) whose frequency is the lesion prior instead of the shipped masks'.
LESION_ATLAS_ENV = "BIDS_MDPP_LESION_ATLAS"


def lesion_atlas_paths() -> list[Path]:
    """The shipped MSLUB consensus lesion masks, sorted (27 files, FSL MNI152 1 mm grid)."""
    folder = Path(str(resources.files("bids_mdpp") / "data" / "lesion-atlas"))
    return sorted(folder.glob("mslub-*_label-lesion_mask.nii.gz"))


def lesion_atlas_folder() -> str:
    """The folder :data:`LESION_ATLAS_ENV` names, or ``""`` when it is not set (the shipped
    masks)."""
    return os.environ.get(LESION_ATLAS_ENV, "").strip()


def prior_lesion_masks() -> list[Path]:
    """The lesion masks the lesion prior is made from: the NIfTI files (``*.nii``,
    ``*.nii.gz``) of the folder :data:`LESION_ATLAS_ENV` names, sorted, when it is set, else the
    shipped ones (:func:`lesion_atlas_paths`).  Raises
    :class:`~bids_mdpp.errors.InputDataError` naming the folder when it holds none or is not a
    folder."""
    from bids_mdpp.errors import InputDataError

    folder = lesion_atlas_folder()
    if not folder:
        return lesion_atlas_paths()
    if not Path(folder).is_dir():
        raise InputDataError(folder, f"not a folder (named by {LESION_ATLAS_ENV})")
    paths = sorted(p for p in Path(folder).iterdir()
                   if p.name.endswith((".nii", ".nii.gz")) and p.is_file())
    if not paths:
        raise InputDataError(folder, f"no lesion mask (*.nii, *.nii.gz) in this folder (named "
                                     f"by {LESION_ATLAS_ENV})")
    return paths


def lesion_prior_source() -> str:
    """Where the lesion prior comes from, in words (for the sidecars and the methods text)."""
    paths = prior_lesion_masks()
    if lesion_atlas_folder():
        return f"{len(paths)} lesion masks of {paths[0].parent}"
    return f"{len(paths)} MSLUB patients"


@dataclass(frozen=True)
class AtlasPriors:
    """Priors on a model grid, each of the grid's shape (float32).

    ``tissue`` has shape ``(3, *grid)``: CSF, grey matter, white matter, summing to one at
    every voxel.  ``lesion_frequency`` is the smoothed fraction of atlas patients with a
    lesion there (0–1; its maximum is about 0.5, in the periventricular white matter).
    """

    tissue: np.ndarray
    lesion_frequency: np.ndarray


#: Version of the cached template-space maps (:func:`template_maps`); raise it when the way
#: they are computed changes in a way the constants above do not capture.
CACHE_VERSION = 1


def template_maps(cache_dir: Path | None = None) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """``(tissue, lesion frequency)`` in template space: a 4-D image (CSF, GM, WM; smoothed,
    normalised) on nilearn's MNI152 2009a 1 mm grid and the smoothed lesion frequency on the
    FSL MNI152 1 mm grid.

    Computing them (reading nilearn's maps and the 27 lesion masks, smoothing) takes a few
    seconds; the result is kept in memory and written once, uncompressed, into ``cache_dir``
    (default :func:`bids_mdpp.templates.default_cache_dir`) under a name that changes with
    the smoothing, the floor, nilearn's version and the lesion masks (:func:`cache_key`), so
    that later processes read it back in a fraction of a second.
    """
    from bids_mdpp.templates import default_cache_dir

    return _template_maps_in(Path(cache_dir) if cache_dir is not None else default_cache_dir(),
                             cache_key())


@functools.lru_cache(maxsize=2)
def _template_maps_in(folder: Path, key: str) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    path = folder / f"atlas-priors_{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as saved:
                return (nib.Nifti1Image(saved["tissue"], saved["tissue_affine"]),
                        nib.Nifti1Image(saved["lesion_frequency"], saved["lesion_affine"]))
        except (OSError, KeyError, ValueError):  # truncated or foreign: compute it afresh
            pass
    tissue, frequency = compute_template_maps()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(partial, "wb") as handle:
            np.savez(handle, tissue=np.asarray(tissue.dataobj), tissue_affine=tissue.affine,
                     lesion_frequency=np.asarray(frequency.dataobj),
                     lesion_affine=frequency.affine)
        os.replace(partial, path)
    except OSError:  # a read-only cache is no reason to fail: the maps are in memory
        pass
    return tissue, frequency


def cache_key() -> str:
    """Short hash of what the template-space maps depend on: :data:`CACHE_VERSION`, the
    smoothing and floor constants, nilearn's version, and the lesion masks' names, sizes and
    folder (:data:`LESION_ATLAS_ENV`; empty for the shipped ones)."""
    import hashlib
    import json
    from importlib.metadata import version

    what = {"version": CACHE_VERSION, "tissue_sigma_mm": TISSUE_SIGMA_MM,
            "lesion_sigma_mm": LESION_SIGMA_MM, "tissue_floor": TISSUE_FLOOR,
            "nilearn": version("nilearn"),
            "lesions": [(p.name, p.stat().st_size) for p in prior_lesion_masks()],
            "lesion_folder": lesion_atlas_folder()}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def compute_template_maps() -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """:func:`template_maps` computed from nilearn's maps and the lesion masks
    (:func:`prior_lesion_masks`); raises :class:`~bids_mdpp.errors.InputDataError` naming a
    mask that is not on the first one's grid."""
    from nilearn import datasets

    from bids_mdpp.errors import InputDataError

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    zooms = np.asarray(gm_img.header.get_zooms()[:3], dtype=float)
    gm = np.clip(gm_img.get_fdata(dtype=np.float32), 0, 1)
    wm = np.clip(datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32), 0, 1)
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32) > 0
    csf = np.clip(brain - gm - wm, 0, 1)
    tissue = np.stack([ndimage.gaussian_filter(t + TISSUE_FLOOR, TISSUE_SIGMA_MM / zooms)
                       for t in (csf, gm, wm)], axis=-1)
    tissue /= tissue.sum(-1, keepdims=True)

    paths = prior_lesion_masks()
    first = nib.load(str(paths[0]))
    total = np.zeros(first.shape[:3], np.float32)
    for path in paths:
        mask = nib.load(str(path))
        if mask.shape[:3] != first.shape[:3] or not np.allclose(mask.affine, first.affine,
                                                                atol=1e-3):
            raise InputDataError(path, f"not on the grid of {paths[0].name} (every lesion "
                                       f"mask of the prior must share one grid)")
        total += np.asarray(mask.dataobj, np.float32).reshape(first.shape[:3]) > 0
    lesion_zooms = np.asarray(first.header.get_zooms()[:3], dtype=float)
    frequency = ndimage.gaussian_filter(total / len(paths), LESION_SIGMA_MM / lesion_zooms)
    return (nib.Nifti1Image(tissue.astype(np.float32), gm_img.affine),
            nib.Nifti1Image(frequency.astype(np.float32), first.affine))


def priors_on_grid(reference: nib.spatialimages.SpatialImage,
                   brain_mask: nib.spatialimages.SpatialImage, *,
                   name: str | Path = "image", cache_dir: Path | None = None) -> AtlasPriors:
    """Fit the template to ``reference`` (brain-only, on the model grid) and carry the atlases.

    ``brain_mask`` is the session's brain mask on the same grid.  Raises
    :class:`~bids_mdpp.errors.InputDataError` naming ``name`` when the fit fails.  nilearn's
    template and the template-space maps are written once into ``cache_dir`` (default:
    :func:`bids_mdpp.templates.default_cache_dir`).
    """
    from bids_mdpp.preproc.templatefit import fit_brain_to_template
    from bids_mdpp.templates import nilearn_files

    t1, mask = nilearn_files(1, cache_dir)
    to_subject = fit_brain_to_template(reference, brain_mask, t1, mask, name=name)
    return carry_priors(brain_mask, to_subject.GetInverse(), cache_dir=cache_dir)


def session_priors(images: Mapping[str, str | Path], brain_mask: str | Path, *,
                   cache_dir: Path | None = None) -> AtlasPriors:
    """The priors of one preprocessed session on its model grid.

    ``images`` maps contrast → brain-only image on the model grid (the preprocessing's
    outputs); the template is fitted to the registration reference among them
    (:func:`bids_mdpp.contrasts.choose_reference`), ``brain_mask`` is the session's mask on the
    same grid.  Raises :class:`~bids_mdpp.errors.InputDataError` naming the reference image
    when the fit fails.
    """
    from bids_mdpp.contrasts import choose_reference

    reference = Path(images[choose_reference(tuple(images))])
    return priors_on_grid(nib.load(str(reference)), nib.load(str(brain_mask)), name=reference,
                          cache_dir=cache_dir)


def carry_priors(grid: nib.spatialimages.SpatialImage, grid_to_template, *,
                 cache_dir: Path | None = None) -> AtlasPriors:
    """The template-space maps (:func:`template_maps`, cached in ``cache_dir``) resampled
    (linear) onto ``grid`` with ``grid_to_template``, a SimpleITK transform mapping grid
    points to template points (LPS, mm)."""
    import SimpleITK as sitk

    from bids_mdpp.preproc.sitkio import nib_to_sitk

    tissue_img, lesion_img = template_maps(cache_dir)
    target = nib_to_sitk(nib.Nifti1Image(np.zeros(grid.shape[:3], np.float32), grid.affine))

    def carried(img: nib.Nifti1Image, outside: float) -> np.ndarray:
        moving = nib_to_sitk(img)
        out = sitk.Resample(moving, target, grid_to_template, sitk.sitkLinear, outside,
                            sitk.sitkFloat32)
        return sitk.GetArrayFromImage(out).transpose(2, 1, 0)

    tissue_4d = tissue_img.get_fdata(dtype=np.float32)
    # Outside the template's field of view: CSF (the brain's edge, if anything).
    tissue = np.stack([carried(nib.Nifti1Image(tissue_4d[..., k], tissue_img.affine),
                               1.0 if k == 0 else 0.0) for k in range(3)])
    tissue = np.clip(tissue, 0, 1) + 1e-6
    tissue /= tissue.sum(0, keepdims=True)
    frequency = np.clip(carried(lesion_img, 0.0), 0, 1)
    return AtlasPriors(tissue=tissue.astype(np.float32), lesion_frequency=frequency)
