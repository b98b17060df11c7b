"""Affine fit of a brain template to a skull-on image (SimpleITK), and its mask carried over.

The template (T1w; mutual information copes with any contrast) is the fixed image, the
subject the moving one:

1. start: the centres of mass of the template's brain and of the image's bright foreground,
   the template scaled by 0.9;
2. a coarse grid search (4 mm) over scale, pitch and vertical shift, because the mutual
   information of a brain-only template with a head has local optima at the wrong scale;
3. a similarity then an affine stage (Mattes MI, regular-step gradient descent, 4/2 mm).

The metric sees the template's brain dilated by 4 mm and, on the subject, only the head
eroded by 8 mm (no air-against-scalp edge to pull the template's brain outwards); the
subject's intensities are clipped at their 99th percentile (bright fat would squeeze the
brain into a few histogram bins).
"""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bids_mdpp.errors import InputDataError
from bids_mdpp.preproc.bias import foreground_mask
from bids_mdpp.preproc.sitkio import nib_to_sitk, with_data

#: The metric looks at the template's brain dilated by this (mm) ...
TEMPLATE_MASK_DILATION_MM = 4.0
#: ... and at the subject's head eroded by this (mm).
SCALP_MM = 8.0
#: The subject's intensities are clipped at this percentile of its positive voxels.
WINDOW_PERCENTILE = 99.0
#: Starting scale (template → image); adult brains are 0.75–1.05 times the MNI152 brain.
INITIAL_SCALE = 0.9
#: The search grid: steps either side and step length for (versor x, y, z, translation x,
#: y, z (mm), scale): pitch ±5° and ±10°, vertical shift ±8 and ±16 mm, scale 0.75–1.05.
SEARCH = ((2, 0.0436), (0, 0.0), (0, 0.0), (0, 0.0), (0, 0.0), (2, 8.0), (3, 0.05))
#: Fraction of the template's (masked) voxels sampled by the metric.
SAMPLING_FRACTION = 0.1
#: A fit that scales the template by less / more than this (per axis) has failed.
SCALE_RANGE = (0.6, 1.6)


def fit_template(img: nib.spatialimages.SpatialImage, template_t1: os.PathLike | str,
                 template_mask: os.PathLike | str, *, name: os.PathLike | str = "image",
                 seed: int = 1) -> sitk.AffineTransform:
    """Affine transform mapping points of ``img`` to the template (LPS, mm).

    See the module docstring.  Raises :class:`InputDataError` naming ``name`` when the
    optimisation fails or scales the template implausibly.  Deterministic for a ``seed``.
    """
    template = sitk.ReadImage(str(template_t1), sitk.sitkFloat32)
    brain = sitk.Cast(sitk.ReadImage(str(template_mask)) > 0, sitk.sitkUInt8)
    subject = _windowed(nib_to_sitk(img))
    radius = [int(round(TEMPLATE_MASK_DILATION_MM / s)) for s in template.GetSpacing()]
    masks = (sitk.BinaryDilate(brain, radius), _inner_head(subject))
    similarity = sitk.CenteredTransformInitializer(
        brain, foreground_mask(subject), sitk.Similarity3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS)
    similarity.SetScale(INITIAL_SCALE)
    try:
        _search(template, subject, masks, similarity, seed=seed)
    except RuntimeError as exc:
        raise InputDataError(name, f"registration of the brain template failed "
                                   f"({_reason(exc)})") from exc
    affine = _similarity_then_affine(template, subject, masks, similarity, seed=seed, name=name,
                                     what="registration of the brain template",
                                     hint="; is this a head image?")
    return affine.GetInverse()


def _reason(exc: RuntimeError) -> str:
    return str(exc).strip().splitlines()[-1]


def _similarity_then_affine(template, subject, masks, similarity: sitk.Similarity3DTransform, *,
                            seed: int, name, what: str, hint: str = "") -> sitk.AffineTransform:
    """Optimise ``similarity`` (4/2 mm), then an affine transform started from it (2/1 mm).

    Raises :class:`InputDataError` naming ``name`` when ITK fails or the scale leaves
    :data:`SCALE_RANGE` (``what`` and ``hint`` word the message).
    """
    try:
        _optimise(template, subject, masks, similarity, smoothing_mm=(4.0, 2.0), seed=seed)
        affine = sitk.AffineTransform(3)
        affine.SetCenter(similarity.GetCenter())
        affine.SetMatrix(similarity.GetMatrix())
        affine.SetTranslation(similarity.GetTranslation())
        _optimise(template, subject, masks, affine, smoothing_mm=(2.0, 1.0), seed=seed)
    except RuntimeError as exc:
        raise InputDataError(name, f"{what} failed ({_reason(exc)})") from exc
    scale = abs(np.linalg.det(np.reshape(affine.GetMatrix(), (3, 3)))) ** (1 / 3)
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        raise InputDataError(name, f"{what} diverged (scale {scale:.2f}){hint}")
    return affine


def _inner_head(image: sitk.Image) -> sitk.Image:
    """The head (triangle threshold, filled) eroded by ``SCALP_MM``: no scalp, no air."""
    head = sitk.TriangleThreshold(image, 0, 1)
    head = sitk.RelabelComponent(sitk.ConnectedComponent(head), sortByObjectSize=True) == 1
    head = sitk.BinaryFillhole(head)
    return sitk.BinaryErode(head, [max(1, int(round(SCALP_MM / s))) for s in image.GetSpacing()])


def _windowed(image: sitk.Image) -> sitk.Image:
    """Intensities clipped to the 0.5–99th percentiles of the positive voxels (so that bright
    fat or vessels do not squeeze the brain's contrast into a few histogram bins)."""
    values = sitk.GetArrayViewFromImage(image)
    low, high = np.percentile(values[values > 0], [0.5, WINDOW_PERCENTILE])
    return sitk.IntensityWindowing(image, float(low), float(high), 0.0, 1.0)


def _method(fixed_mask: sitk.Image, moving_mask: sitk.Image | None, *, shrink, smoothing_mm,
            seed: int) -> sitk.ImageRegistrationMethod:
    """Mattes MI on the masks (no moving mask: None), linear interpolation, a pyramid
    (shrink, smoothing in mm)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING_FRACTION, seed)
    method.SetMetricFixedMask(fixed_mask)
    if moving_mask is not None:
        method.SetMetricMovingMask(moving_mask)
    method.SetMetricUseFixedImageGradientFilter(False)
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(smoothing_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _search(fixed, moving, masks, transform: sitk.Similarity3DTransform, *, seed: int) -> None:
    """Exhaustive search on the :data:`SEARCH` grid at 4 mm; keeps the best grid point."""
    steps, lengths = zip(*SEARCH)
    method = _method(*masks, shrink=[4], smoothing_mm=[4.0], seed=seed)
    method.SetOptimizerAsExhaustive(list(steps), stepLength=1.0)
    method.SetOptimizerScales(list(lengths))
    method.SetInitialTransform(transform, inPlace=False)
    best = method.Execute(fixed, moving)
    while best.GetName() == "CompositeTransform":
        best = sitk.CompositeTransform(best).GetNthTransform(0)
    transform.SetParameters(best.GetParameters())


def _optimise(fixed, moving, masks, transform: sitk.Transform, *, smoothing_mm, seed: int) -> None:
    """Regular-step gradient descent at 4 then 2 mm, updating ``transform`` in place."""
    method = _method(*masks, shrink=[4, 2], smoothing_mm=smoothing_mm, seed=seed)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=200, relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)


def warp_template_mask(template_mask: os.PathLike | str, target: nib.spatialimages.SpatialImage,
                       to_template: sitk.Transform) -> nib.Nifti1Image:
    """The template brain mask on ``target``'s grid: fraction of brain per voxel (float32)."""
    brain = sitk.Cast(sitk.ReadImage(str(template_mask)) > 0, sitk.sitkFloat32)
    warped = sitk.Resample(brain, nib_to_sitk(target), to_template, sitk.sitkLinear, 0.0)
    data = sitk.GetArrayFromImage(warped).transpose(2, 1, 0)
    return with_data(target, np.clip(data, 0.0, 1.0).astype(np.float32))


def fit_brain_to_template(brain: nib.spatialimages.SpatialImage,
                          brain_mask: nib.spatialimages.SpatialImage,
                          template_t1: os.PathLike | str, template_mask: os.PathLike | str, *,
                          name: os.PathLike | str = "image", seed: int = 1) -> sitk.AffineTransform:
    """Affine (12-dof) transform mapping template points to points of a brain-only image.

    ``brain`` is a skull-stripped image (any contrast; the model-grid reference image of
    preprocessing) and ``brain_mask`` its mask; the template's T1w is masked by its brain
    mask.  Stages: centres of mass of both masks, a similarity then an affine stage (Mattes
    MI, 4/2 mm).  The result resamples the subject's maps into the template (ITK's
    ``from-<subject>_to-<template>`` convention).  Raises :class:`InputDataError` naming
    ``name`` when the optimisation fails or the scale is implausible.
    """
    template = sitk.ReadImage(str(template_t1), sitk.sitkFloat32)
    template_brain = sitk.Cast(sitk.ReadImage(str(template_mask)) > 0, sitk.sitkUInt8)
    template = sitk.Mask(template, template_brain)
    subject_brain = sitk.Cast(nib_to_sitk(brain_mask) > 0, sitk.sitkUInt8)
    subject = sitk.Mask(nib_to_sitk(brain), subject_brain, outsideValue=float(
        np.min(np.asarray(brain.dataobj))))
    radius = [int(round(TEMPLATE_MASK_DILATION_MM / s)) for s in template.GetSpacing()]
    # No moving mask: the subject's image is brain-only already.
    masks = (sitk.BinaryDilate(template_brain, radius), None)
    similarity = sitk.CenteredTransformInitializer(
        template_brain, subject_brain, sitk.Similarity3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS)
    return _similarity_then_affine(template, subject, masks, similarity, seed=seed, name=name,
                                   what="registration to the template")
