"""Outputs in template spaces (``--output-spaces``): the lesion maps carried onto a template.

A space is a template whose T1w image and brain mask (1 mm) are in TemplateFlow's home
(``TEMPLATEFLOW_HOME``, filled beforehand: nothing is downloaded); ``MNI152NLin2009aSym``
is also always available from the copy that ships with nilearn.  The brain-only reference
image of preprocessing (on the model grid, in the reference contrast's world space) is
registered to the template's brain with an affine (12-dof) transform
(:func:`bids_mdpp.preproc.templatefit.fit_brain_to_template`); the probability map is
resampled with it (linear) and thresholded as in native space.  Written per space::

    <key>_space-<space>_label-lesion_probseg.nii.gz (+ .json)   float32 0–1
    <key>_space-<space>_label-lesion_mask.nii.gz (+ .json)      uint8 0/1
    <key>_from-<reference>_to-<space>_mode-image_xfm.txt       ITK affine (LPS, mm)

The transform is affine, not a non-linear warp: anatomy is matched up to brain size, position
and shear, which suits atlas look-ups and group maps of lesion frequency but not voxel-exact
morphometry.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_mdpp.errors import UsageError

LOGGER = logging.getLogger("bids_mdpp.spaces")

#: Spaces available without TemplateFlow (a copy of the template ships with nilearn).
BUNDLED_SPACES = ("MNI152NLin2009aSym",)


def template_files(space: str) -> tuple[Path, Path]:
    """``(T1w, brain mask)`` of ``space`` at 1 mm, from TemplateFlow's home or nilearn.

    Raises :class:`UsageError` naming the files to provide when the space is unavailable.
    """
    from bids_mdpp.templates import nilearn_files, templateflow_files, templateflow_home

    if not space.replace("+", "").isalnum():
        raise UsageError(f"--output-spaces {space!r}: a template name has letters and digits only")
    found = templateflow_files(space, 1)
    if found is not None:
        return found
    if space in BUNDLED_SPACES:
        return nilearn_files(1)
    raise UsageError(
        f"--output-spaces {space}: the template is not in TEMPLATEFLOW_HOME "
        f"({templateflow_home()}); put tpl-{space}/tpl-{space}_res-01_T1w.nii.gz and "
        f"tpl-{space}_res-01_desc-brain_mask.nii.gz there (e.g. with templateflow.api.get on a "
        f"machine with network access), or use {', '.join(BUNDLED_SPACES)}, which ships with "
        "nilearn")


def check_spaces(spaces: Iterable[str]) -> tuple[str, ...]:
    """The requested spaces, each checked to be available (duplicates removed, order kept)."""
    spaces = tuple(dict.fromkeys(spaces))
    for space in spaces:
        template_files(space)
    return spaces


def write_space_outputs(output_dir: os.PathLike | str, inputs, preproc, probability: np.ndarray,
                        space: str, *, threshold: float, min_lesion_mm3: float,
                        native_mask: Path, common: Mapping) -> dict[str, Path]:
    """Fit the template, then write the space's probseg, mask, sidecars and transform.

    Parameters
    ----------
    probability
        Lesion probability on the model grid, shape of ``preproc.brain_mask``, in [0, 1].
    native_mask
        The native-space mask just written (the ``Sources`` of the template-space files).
    common
        Sidecar keys shared with the native outputs (model, contrasts, code).

    Returns the written paths keyed ``mask``, ``probseg``, ``xfm`` (and their ``_json``).
    """
    import SimpleITK as sitk

    from bids_mdpp.imageio import atomic_path, save_image, write_json
    from bids_mdpp.lesions import DEFAULT_CONNECTIVITY, lesion_table
    from bids_mdpp.outputs import bids_uri, space_paths
    from bids_mdpp.preproc.sitkio import nib_to_sitk, sitk_to_nib
    from bids_mdpp.preproc.templatefit import fit_brain_to_template
    from bids_mdpp.templates import template_source

    t1, brain_mask = template_files(space)
    grid = nib.load(str(preproc.brain_mask))
    reference = nib.load(str(preproc.images[preproc.reference]))
    transform = fit_brain_to_template(reference, grid, t1, brain_mask,
                                      name=preproc.images[preproc.reference])
    template = sitk.ReadImage(str(t1), sitk.sitkFloat32)
    moving = nib_to_sitk(nib.Nifti1Image(np.asarray(probability, np.float32), grid.affine))
    warped = sitk.Resample(moving, template, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    prob_img = sitk_to_nib(warped)
    prob = np.clip(np.asarray(prob_img.dataobj, dtype=np.float32), 0.0, 1.0)
    table = lesion_table(prob >= threshold, prob_img.affine, min_size_mm3=min_lesion_mm3,
                         connectivity=DEFAULT_CONNECTIVITY)
    paths = space_paths(output_dir, inputs, preproc.reference, space)

    source = template_source(t1)
    about = {
        "Sources": [bids_uri(native_mask, inputs.subject, dataset="")],
        "Template": space,
        "TemplateSource": "TemplateFlow" if source == "TemplateFlow" else "nilearn (bundled)",
        "Registration": "affine (12 degrees of freedom), Mattes mutual information, SimpleITK; "
                        f"transform: {paths['xfm'].name}",
        **{k: v for k, v in common.items() if k not in ("Sources", "SpatialReference")},
    }
    save_image(_on_grid(prob, prob_img, space), paths["probseg"])
    write_json({"Description": f"Lesion probability (0-1) resampled into {space} (linear).",
                **about}, paths["probseg_json"])
    save_image(_on_grid(table.mask.astype(np.uint8), prob_img, space), paths["mask"])
    write_json({"Type": "Lesion",
                "Description": f"Binary lesion mask in {space}: resampled probability >= "
                               "Threshold, lesions smaller than MinimumLesionSize removed.",
                **about, "Threshold": float(threshold), "MinimumLesionSize": float(min_lesion_mm3),
                "LesionCount": table.count,
                "TotalLesionVolume": round(table.total_volume_mm3, 3)}, paths["mask_json"])
    with atomic_path(paths["xfm"]) as tmp:
        sitk.WriteTransform(transform, str(tmp))
    LOGGER.info("%s: %s lesion mask written (%d lesions, %.0f mm³)", inputs.key, space,
                table.count, table.total_volume_mm3)
    return paths


def _on_grid(data: np.ndarray, like: nib.Nifti1Image, space: str) -> nib.Nifti1Image:
    """``data`` on the template's grid, qform and sform set (code 4 for MNI152 spaces, else 2)."""
    code = 4 if space.startswith("MNI152") else 2
    img = nib.Nifti1Image(data, like.affine)
    img.set_qform(like.affine, code=code)
    img.set_sform(like.affine, code=code)
    img.header.set_xyzt_units("mm")
    return img
