"""Acquisition: put the head in a scanner and image it on a clinical 2D grid.

A *raw* acquisition (like ``mslub-long``) images the head at a random position
(:class:`HeadPosition`, per session) on its own grid (:class:`AcquisitionParams`, per
contrast): axial, coronal or sagittal slices 3–5 mm thick, possibly oblique, in-plane
voxels of 0.45–1.2 mm over a 200–240 mm field of view, a little head motion between
contrasts, a smooth multiplicative bias field, Rician noise and a uint16 output.  A *clean*
acquisition (like ``mslub-cross``) is already what preprocessing makes: every contrast on
the same 1 mm grid (the FSL MNI152 box, 182 × 218 × 182), nearly registered, stripped,
bias-corrected and float32.

:class:`Acquisition` is the geometry of one image; its :meth:`Acquisition.sample` takes any
canvas map to the image grid through the same slice profile, so that images, lesion masks
and (in tests) tissue maps line up exactly.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bids_mdpp.synth.anatomy import Template
from bids_mdpp.synth.fields import monomial_powers, polynomial_field
from bids_mdpp.synth.geometry import (
    Grid,
    affine_transform,
    bounding_box,
    chain,
    make_grid,
    nifti_image,
    resample,
    rigid_matrix,
    smooth,
    to_sitk,
)
from bids_mdpp.synth.scene import Scene

#: How often each slice orientation is drawn for a raw acquisition.
ORIENTATIONS: dict[str, float] = {"axial": 0.6, "coronal": 0.2, "sagittal": 0.2}
#: In-plane axes (u, v) and slice normal (n), RAS, per orientation (DICOM-like L, P, I).
_FRAMES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "axial": ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
    "coronal": ((-1, 0, 0), (0, 0, -1), (0, 1, 0)),
    "sagittal": ((0, -1, 0), (0, 0, -1), (1, 0, 0)),
}
#: The clean grid: FSL MNI152 1 mm (LAS), as in mslub-cross.
CLEAN_SHAPE = (182, 218, 182)
CLEAN_AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
#: Full width at half maximum of a Gaussian = this × sigma (2√(2 ln 2)).
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Margin around the brain kept when the image has a head (mm) or not.
HEAD_MARGIN_MM, BRAIN_MARGIN_MM = 36.0, 4.0
#: Samples per slice thickness when simulating the slice profile.
SAMPLES_PER_SLICE = 2.5
#: Radius (mm) that normalises coordinates in the bias polynomial.
BIAS_RADIUS_MM = 100.0


@dataclass(frozen=True)
class HeadPosition:
    """Where the head lies in the scanner: rotations about x, y, z (degrees), then a shift (mm)."""

    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]

    def matrix(self) -> np.ndarray:
        """Subject space → scanner space, 4 × 4 RAS."""
        return rigid_matrix(self.rotation_deg, self.translation_mm)


def draw_head_position(rng: np.random.Generator, clean: bool) -> HeadPosition:
    """Raw: up to ±8° roll/yaw, ±12° pitch and ±15 mm; clean (registered): ±2°, ±2 mm."""
    if clean:
        rotation, shift = rng.uniform(-2, 2, 3), rng.uniform(-2, 2, 3)
    else:
        rotation = rng.uniform(-1, 1, 3) * [12.0, 8.0, 8.0]
        shift = rng.uniform(-1, 1, 3) * [10.0, 15.0, 15.0]
    return HeadPosition(_round(rotation, 3), _round(shift, 3))


def _round(values, digits: int = 4) -> tuple[float, ...]:
    return tuple(round(float(v), digits) for v in values)


@dataclass(frozen=True)
class AcquisitionParams:
    """How one contrast was acquired (all lengths in mm at ``scale`` 1).

    Attributes
    ----------
    clean : bool
        A clean, preprocessed-like image on the shared 1 mm grid (most fields below unused:
        ``slice_thickness_mm`` is then the blur of the original acquisition along z).
    orientation : str
        ``axial``, ``coronal`` or ``sagittal`` (raw only).
    flip_in_plane : tuple[bool, bool]
        Reverse the first / second in-plane axis (gives other orientation codes).
    tilt_deg : tuple[float, float]
        Oblique tilt of the slices about the two in-plane axes.
    in_plane_mm, slice_thickness_mm, slice_gap_mm : float
        Voxel size in the slice, slice thickness and the gap between slices.
    fov_mm : tuple[float, float]
        In-plane field of view.
    coverage_mm : tuple[float, float]
        Slab extent beyond the brain at each end along the slice normal (negative: cut; an
        axial slab may start up to 10 mm above the bottom of the brain).
    centre_offset_mm : tuple[float, float]
        Shift of the field of view's centre from the brain's, in plane.
    motion_deg, motion_mm : tuple[float, float, float]
        Head motion since the session's head position (rotation, then shift).
    bias : tuple[float, ...]
        Coefficients of the log bias field (:func:`bids_mdpp.synth.fields.polynomial_field`).
    noise : float
        Rician noise sigma relative to the WM intensity.
    noise_seed : int
    wm_value : float
        WM intensity in the output's units.
    zero_background : bool
        The scanner zeroed the air outside the head (no noise there).
    field_strength_t : float
        Magnetic field strength (T), for the sidecar.
    """

    clean: bool
    orientation: str
    flip_in_plane: tuple[bool, bool]
    tilt_deg: tuple[float, float]
    in_plane_mm: float
    slice_thickness_mm: float
    slice_gap_mm: float
    fov_mm: tuple[float, float]
    coverage_mm: tuple[float, float]
    centre_offset_mm: tuple[float, float]
    motion_deg: tuple[float, float, float]
    motion_mm: tuple[float, float, float]
    bias: tuple[float, ...]
    noise: float
    noise_seed: int
    wm_value: float
    zero_background: bool
    field_strength_t: float


def draw_acquisition_params(
    rng: np.random.Generator, clean: bool, field_strength_t: float
) -> AcquisitionParams:
    """Draw one contrast's acquisition (raw: clinical 2D; clean: preprocessed-like)."""
    u = rng.uniform
    n_bias = len(monomial_powers())
    if clean:
        return AcquisitionParams(
            clean=True, orientation="axial", flip_in_plane=(False, False), tilt_deg=(0.0, 0.0),
            in_plane_mm=1.0, slice_thickness_mm=round(float(u(1.0, 3.0)), 3), slice_gap_mm=0.0,
            fov_mm=(182.0, 218.0), coverage_mm=(0.0, 0.0), centre_offset_mm=(0.0, 0.0),
            motion_deg=(0.0, 0.0, 0.0), motion_mm=(0.0, 0.0, 0.0),
            bias=_round(rng.normal(0, 0.02, n_bias)), noise=round(float(u(0.005, 0.02)), 4),
            noise_seed=int(rng.integers(2**31)), wm_value=round(float(u(80, 450)), 2),
            zero_background=True, field_strength_t=field_strength_t,
        )
    fov = u(200, 240)
    strength = u(0.05, 0.35)
    orientation = str(rng.choice(list(ORIENTATIONS), p=list(ORIENTATIONS.values())))
    # axial slabs often start inside the posterior fossa; other slabs cover the whole brain
    below = u(-10, 5) if orientation == "axial" else u(0, 15)
    return AcquisitionParams(
        clean=False,
        orientation=orientation,
        flip_in_plane=(bool(rng.random() < 0.3), bool(rng.random() < 0.3)),
        tilt_deg=_round(rng.uniform(-1, 1, 2) * [12.0, 6.0], 3),
        in_plane_mm=round(float(u(0.45, 1.2)), 4),
        slice_thickness_mm=round(float(u(3.0, 5.0)), 3),
        slice_gap_mm=round(float(u(0.2, 1.0)), 3) if rng.random() < 0.5 else 0.0,
        fov_mm=(round(float(fov), 2), round(float(fov * u(0.8, 1.0)), 2)),
        coverage_mm=(round(float(below), 2), round(float(u(0, 20)), 2)),
        centre_offset_mm=_round(rng.uniform(-8, 8, 2), 2),
        motion_deg=_round(rng.uniform(-2, 2, 3), 3),
        motion_mm=_round(rng.uniform(-2, 2, 3), 3),
        bias=_round(rng.uniform(-1, 1, n_bias) * strength),
        noise=round(float(u(0.01, 0.05)), 4),
        noise_seed=int(rng.integers(2**31)),
        wm_value=round(float(u(200, 900)), 2),
        zero_background=bool(rng.random() < 0.7),
        field_strength_t=field_strength_t,
    )


@dataclass(frozen=True, eq=False)
class Acquisition:
    """The geometry of one image: where canvas maps go and through which slice profile.

    Attributes
    ----------
    grid : Grid
        The image grid (scanner RAS world, mm).
    fine : Grid
        A grid aligned with ``grid``, as fine as the canvas, covering the head.
    blur_mm : tuple[float, float, float]
        Gaussian sigma (mm) along ``fine``'s axes: the slice profile (0 in plane).
    transform : sitk.Transform
        Scanner point → canvas point.
    box : tuple[slice, slice, slice] | None
        When ``fine`` is a block of ``grid``'s own voxels: where (no second resampling).
    """

    grid: Grid
    fine: Grid
    blur_mm: tuple[float, float, float]
    transform: sitk.Transform
    box: tuple[slice, slice, slice] | None = None

    def sample(self, canvas_map: np.ndarray, template: Template) -> np.ndarray:
        """A canvas map as this image sees it, shape ``grid.shape``, float32."""
        fine = resample(to_sitk(canvas_map, template.grid), self.fine, self.transform)
        fine = smooth(fine, self.fine, self.blur_mm)
        if self.box is None:
            return resample(to_sitk(fine, self.fine), self.grid)
        out = np.zeros(self.grid.shape, np.float32)
        out[self.box] = fine
        return out


def plan_acquisition(
    scene: Scene, position: HeadPosition, params: AcquisitionParams, *, has_head: bool
) -> Acquisition:
    """The image grid and sampling chain for ``params`` with the head at ``position``."""
    template = scene.template
    scale = template.scale
    canvas_step = float(template.grid.zooms.min())
    motion = rigid_matrix(params.motion_deg, params.motion_mm)
    scanner_from_subject = motion @ position.matrix()
    brain = _brain_points(template) @ np.diag(scene.head_scale)
    brain = brain @ scanner_from_subject[:3, :3].T + scanner_from_subject[:3, 3]
    # The slice profile is a Gaussian as wide (FWHM) as the slice is thick; in plane, the
    # image is as sharp as the canvas (or its own voxels, when they are coarser).
    thickness = params.slice_thickness_mm / scale
    blur = (0.0, 0.0, thickness / FWHM_PER_SIGMA)
    if params.clean:
        grid = clean_grid(scale)
        steps = (canvas_step,) * 3
    else:
        grid = _raw_grid(params, brain, scale)
        step_in_plane = max(params.in_plane_mm / scale, canvas_step)
        steps = (step_in_plane, step_in_plane, max(canvas_step, thickness / SAMPLES_PER_SLICE))
    margin = HEAD_MARGIN_MM if has_head else BRAIN_MARGIN_MM
    box = None
    if np.allclose(steps, grid.zooms):
        box = _index_box(grid, brain, margin)
        fine = grid.crop(box)
    else:
        fine = _fine_grid(grid, steps, brain, margin)
    subject_from_scanner = affine_transform(np.linalg.inv(scanner_from_subject))
    return Acquisition(grid, fine, tuple(float(b) for b in blur),
                       chain(subject_from_scanner, scene.to_canvas), box)


def clean_grid(scale: float = 1.0) -> Grid:
    """The shared grid of clean images: the FSL MNI152 box with ``1 / scale`` mm voxels."""
    directions = CLEAN_AFFINE[:3, :3]
    centre = directions @ ((np.array(CLEAN_SHAPE) - 1) / 2) + CLEAN_AFFINE[:3, 3]
    shape = tuple(int(round(n * scale)) for n in CLEAN_SHAPE)
    return make_grid(directions, [1.0 / scale] * 3, shape, centre)


def _raw_grid(params: AcquisitionParams, brain: np.ndarray, scale: float) -> Grid:
    u_axis, v_axis, normal = (np.array(a, float) for a in _FRAMES[params.orientation])
    if params.flip_in_plane[0]:
        u_axis = -u_axis
    if params.flip_in_plane[1]:
        v_axis = -v_axis
    tilt = np.eye(3)
    for axis, angle in zip((u_axis, v_axis), params.tilt_deg):
        tilt = _rotation_about(axis, angle) @ tilt
    frame = tilt @ np.stack([u_axis, v_axis, normal], axis=1)
    along = brain @ frame  # (N, 3) coordinates in the frame
    lo = along[:, 2].min() - params.coverage_mm[0]
    hi = along[:, 2].max() + params.coverage_mm[1]
    spacing = (params.slice_thickness_mm + params.slice_gap_mm) / scale
    n_slices = max(int(np.ceil((hi - lo) / spacing)), 3)
    in_plane = params.in_plane_mm / scale
    shape = (round(params.fov_mm[0] / in_plane), round(params.fov_mm[1] / in_plane), n_slices)
    centre_in_frame = np.array([
        along[:, 0].mean() + params.centre_offset_mm[0],
        along[:, 1].mean() + params.centre_offset_mm[1],
        (lo + hi) / 2,
    ])
    return make_grid(frame, (in_plane, in_plane, spacing), shape, frame @ centre_in_frame)


def _rotation_about(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rodrigues' rotation matrix about a unit ``axis``."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(angle_deg)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def _index_range(grid: Grid, points: np.ndarray, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Continuous voxel range ``[lo, hi]`` of ``grid`` covering ``points`` ± margin (clipped)."""
    inverse = np.linalg.inv(grid.affine)
    index = points @ inverse[:3, :3].T + inverse[:3, 3]
    margin = margin_mm / grid.zooms
    lo = np.maximum(index.min(axis=0) - margin, -0.5)
    hi = np.minimum(index.max(axis=0) + margin, np.array(grid.shape) - 0.5)
    return lo, np.maximum(hi, lo + 1)


def _index_box(grid: Grid, points: np.ndarray, margin_mm: float) -> tuple[slice, slice, slice]:
    """The block of ``grid``'s voxels covering ``points`` ± margin."""
    lo, hi = _index_range(grid, points, margin_mm)
    return tuple(slice(int(np.floor(a + 0.5)), int(np.ceil(b - 0.5)) + 1) for a, b in zip(lo, hi))


def _fine_grid(grid: Grid, steps, points: np.ndarray, margin_mm: float) -> Grid:
    """A grid along ``grid``'s axes with voxel ``steps`` (mm) covering ``points`` ± margin."""
    lo, hi = _index_range(grid, points, margin_mm)
    extent_mm = (hi - lo) * grid.zooms
    shape = np.maximum(np.ceil(extent_mm / np.asarray(steps)).astype(int) + 1, 2)
    centre = grid.affine[:3, :3] @ ((lo + hi) / 2) + grid.affine[:3, 3]
    return make_grid(grid.directions, steps, shape, centre)


@functools.lru_cache(maxsize=2)
def _brain_points(template: Template) -> np.ndarray:
    """RAS coordinates (mm) of a sparse sample of brain voxels, ``(N, 3)``."""
    step = max(1, int(round(3.0 / template.grid.zooms.min())))
    index = np.argwhere(template.brain[::step, ::step, ::step] > 0.5) * step
    return index @ template.grid.affine[:3, :3].T + template.grid.affine[:3, 3]


def render_image(
    canvas_image: np.ndarray,
    acquisition: Acquisition,
    params: AcquisitionParams,
    template: Template,
    *,
    stripped: bool = False,
) -> nib.Nifti1Image:
    """Image a painted canvas: slice profile, bias, Rician noise, background, output type.

    Voxels without signal are set to 0 when the scanner zeroed the background or the image
    is ``stripped`` (then the canvas holds the brain only); noise and bias are then only
    computed inside the box that has signal.
    """
    grid = acquisition.grid
    clean = acquisition.sample(canvas_image, template)
    threshold = 1e-3  # relative to WM: "no signal"
    blank_background = params.zero_background or stripped
    box = bounding_box(clean > threshold) if blank_background else None
    image = np.zeros(grid.shape, np.float32)
    if box is None and blank_background:
        return _typed(image, grid, params)
    box = box or tuple(slice(0, n) for n in grid.shape)
    region_grid = grid.crop(box)
    region = clean[box]
    centre = grid.affine[:3, :3] @ ((np.array(grid.shape) - 1) / 2) + grid.affine[:3, 3]
    bias = np.exp(polynomial_field(region_grid, params.bias, centre, BIAS_RADIUS_MM))
    region *= bias * np.float32(params.wm_value)
    rng = np.random.default_rng(params.noise_seed)
    sigma = np.float32(params.noise * params.wm_value)
    real = region + sigma * rng.standard_normal(region.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(region.shape, dtype=np.float32)
    noisy = np.sqrt(real * real + imaginary * imaginary)
    if blank_background:
        noisy[region < threshold * params.wm_value] = 0.0
    image[box] = noisy
    return _typed(image, grid, params)


def _typed(image: np.ndarray, grid: Grid, params: AcquisitionParams) -> nib.Nifti1Image:
    """float32 for clean images, rounded uint16 (like scanners) for raw ones."""
    if not params.clean:
        image = np.clip(np.rint(image), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return nifti_image(image, grid)
