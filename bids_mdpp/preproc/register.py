"""Rigid (6-dof) co-registration of one contrast to the reference contrast (SimpleITK).

Mattes mutual information (Mattes et al. 2003), regular-step gradient descent, a 3-level
pyramid (shrink 4/2/1, smoothing 2/1/0 mm), 2 % random sampling of the reference's voxels (at least 10 000 per level)
and image gradients computed at the samples only, started from a moments (centre of mass
and principal axes) initialiser.

Transform convention (the one of ITK and of the MSLUB database's ``reference-xfm`` files):
the transform maps a point of the *fixed* (reference) space to the corresponding point of
the *moving* space, in physical LPS millimetres.  That is the transform that resamples the
moving image onto the reference grid, and it is stored as
``from-<moving>_to-<reference>_mode-image_xfm.txt`` (ITK text, matrix + centre + translation).
"""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bids_mdpp.errors import InputDataError
from bids_mdpp.imageio import atomic_path
from bids_mdpp.preproc.sitkio import nib_to_sitk

#: Pyramid: shrink factors and Gaussian smoothing sigmas (mm) per level.
SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_MM = (2.0, 1.0, 0.0)
#: Fraction of the reference's foreground voxels sampled by the metric at each level.
SAMPLING_FRACTION = 0.02
#: ... but at least this many samples at every pyramid level (coarse levels, small images).
MIN_SAMPLES = 10_000
HISTOGRAM_BINS = 32
#: A solution this far from the initialiser (degrees, mm) is a failed registration: contrasts
#: of one session are never this far apart after centring.
MAX_ROTATION_DEG = 30.0
MAX_TRANSLATION_MM = 40.0


def xfm_filename(moving: str, reference: str) -> str:
    """``from-<moving>_to-<reference>_mode-image_xfm.txt``."""
    return f"from-{moving}_to-{reference}_mode-image_xfm.txt"


def sampling_fractions(fixed: sitk.Image) -> list[float]:
    """Metric sampling fraction per pyramid level: 2 %, raised to give ``MIN_SAMPLES``."""
    voxels = float(np.prod(fixed.GetSize()))
    return [min(1.0, max(SAMPLING_FRACTION, MIN_SAMPLES * factor ** 3 / voxels))
            for factor in SHRINK_FACTORS]


def register_rigid(fixed: nib.spatialimages.SpatialImage, moving: nib.spatialimages.SpatialImage, *,
                   fixed_name: os.PathLike | str = "reference", moving_name: os.PathLike | str = "moving",
                   seed: int = 1) -> sitk.Euler3DTransform:
    """Rigid transform mapping points of ``fixed`` to points of ``moving`` (LPS, mm).

    ``fixed_name``/``moving_name`` (file names) appear in the error raised when the
    optimisation fails or ends at an implausible solution (:class:`InputDataError` naming
    the moving file).  Deterministic for a given ``seed``.
    """
    fixed_image, moving_image = nib_to_sitk(fixed), nib_to_sitk(moving)
    initial = sitk.CenteredTransformInitializer(
        fixed_image, moving_image, sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentagePerLevel(sampling_fractions(fixed_image), seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetMetricUseFixedImageGradientFilter(False)  # sparse sampling: gradients on the fly
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=200, relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    method.SetSmoothingSigmasPerLevel(list(SMOOTHING_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    try:
        result = method.Execute(fixed_image, moving_image)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise InputDataError(
            moving_name, f"rigid registration to {fixed_name} failed ({reason})") from exc
    final = sitk.Euler3DTransform()
    final.SetFixedParameters(initial.GetFixedParameters())
    final.SetParameters(_euler_parameters(result))
    _check_plausible(initial, final, fixed_name, moving_name)
    return final


def _euler_parameters(result: sitk.Transform) -> tuple[float, ...]:
    """Parameters of the (only) Euler transform held by a registration result."""
    while result.GetName() == "CompositeTransform":
        result = sitk.CompositeTransform(result).GetNthTransform(0)
    return sitk.Euler3DTransform(result).GetParameters()


def _check_plausible(initial: sitk.Euler3DTransform, final: sitk.Euler3DTransform,
                     fixed_name, moving_name) -> None:
    rotation = np.degrees(np.abs(np.asarray(final.GetParameters()[:3])))
    shift = np.linalg.norm(np.subtract(final.GetTranslation(), initial.GetTranslation()))
    if rotation.max() > MAX_ROTATION_DEG or shift > MAX_TRANSLATION_MM:
        raise InputDataError(
            moving_name,
            f"rigid registration to {fixed_name} diverged (rotation {rotation.max():.0f}°, "
            f"translation {shift:.0f} mm from the centred start); check that both images show "
            f"the same head")


def affine_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4×4 matrix (LPS, mm) of a linear transform, read off four transformed points."""
    origin = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        matrix[:3, axis] = np.asarray(transform.TransformPoint(tuple(unit))) - origin
    matrix[:3, 3] = origin
    return matrix


def mean_displacement(first: sitk.Transform, second: sitk.Transform, points_lps: np.ndarray) -> float:
    """Mean distance (mm) between where two linear transforms send ``points_lps`` (N, 3)."""
    points = np.c_[points_lps, np.ones(len(points_lps))]
    difference = points @ (affine_matrix(first) - affine_matrix(second)).T
    return float(np.linalg.norm(difference[:, :3], axis=1).mean())


def write_transform(transform: sitk.Transform, dest: os.PathLike | str) -> Path:
    """Write a linear transform as ITK text (matrix, translation, centre), atomically."""
    matrix = affine_matrix(transform)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(tuple(matrix[:3, :3].ravel()))
    if hasattr(transform, "GetCenter"):  # keep the centre of rotation, as ITK writes it
        affine.SetCenter(transform.GetCenter())
        affine.SetTranslation(transform.GetTranslation())
    else:
        affine.SetTranslation(tuple(matrix[:3, 3]))
    with atomic_path(dest) as tmp:
        sitk.WriteTransform(affine, str(tmp))
    return Path(dest)


def read_transform(path: os.PathLike | str) -> sitk.Transform:
    """Read an ITK transform file (raises :class:`InputDataError` naming it)."""
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise InputDataError(path, "not a readable ITK transform file") from exc
