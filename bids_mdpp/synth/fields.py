"""Seeded smooth random fields: texture, vessel networks, layer-thickness modulation.

A field is white Gaussian noise drawn from ``numpy.random.default_rng(seed)`` and smoothed
with a Gaussian of ``sigma_mm``, then standardised to mean 0 and standard deviation 1.  A
field with a large ``sigma_mm`` is drawn on a coarser grid and interpolated, which gives the
same statistics at a fraction of the cost.
"""
from __future__ import annotations

import numpy as np

from bids_mdpp.synth.geometry import Grid, make_grid, resample, smooth, to_sitk

#: Noise is drawn on a grid with voxels this many times smaller than ``sigma_mm``.
_SAMPLES_PER_SIGMA = 1.5


def smooth_field(grid: Grid, sigma_mm: float, seed: int) -> np.ndarray:
    """A standardised smooth random field on ``grid``, shape ``grid.shape``, float32."""
    rng = np.random.default_rng(seed)
    coarse_step = sigma_mm / _SAMPLES_PER_SIGMA
    if coarse_step <= 1.2 * grid.zooms.max():
        noise = rng.standard_normal(grid.shape, dtype=np.float32)
        field = smooth(noise, grid, sigma_mm, periodic=True)
    else:
        extent = grid.zooms * (np.array(grid.shape) - 1)
        shape = np.ceil(extent / coarse_step).astype(int) + 3
        coarse = make_grid(grid.directions, [coarse_step] * 3, shape,
                           grid.affine[:3, :3] @ ((np.array(grid.shape) - 1) / 2) + grid.affine[:3, 3])
        noise = rng.standard_normal(coarse.shape, dtype=np.float32)
        field = resample(to_sitk(smooth(noise, coarse, sigma_mm, periodic=True), coarse), grid)
    return _standardise(field)


def _standardise(field: np.ndarray) -> np.ndarray:
    sample = field[::3, ::3, ::3]  # a sparse sample estimates the moments well enough
    mean, std = float(sample.mean(dtype=np.float64)), float(sample.std(dtype=np.float64))
    field -= np.float32(mean)
    if std > 0:
        field *= np.float32(1.0 / std)
    return field


def tube_network(grid: Grid, sigma_mm: float, seed: int, width: float) -> np.ndarray:
    """Curvilinear tubes where two independent smooth fields are both near zero, in [0, 1].

    The zero set of one field is a surface; where two such surfaces cross lies a tangle of
    curves that looks like a vessel network.  ``width`` (in field units, ~0.05–0.3) sets
    the tube thickness.  Shape ``grid.shape``, float32.
    """
    first = smooth_field(grid, sigma_mm, seed)
    second = smooth_field(grid, sigma_mm, seed + 1)
    return np.exp(-(first**2 + second**2) / (2.0 * width**2)).astype(np.float32)


def polynomial_field(grid: Grid, coefficients, centre, radius_mm: float) -> np.ndarray:
    """``sum_k c_k · x^a y^b z^c`` of the degree-≤3 monomials (:func:`monomial_powers`).

    Coordinates are RAS world (mm) relative to ``centre`` and divided by ``radius_mm``, so
    coefficients of a few tenths give smooth variations over a head.  The polynomial is
    evaluated every ~4 mm and interpolated linearly.  Shape ``grid.shape``, float32.
    """
    step = max(1, int(round(4.0 / grid.zooms.min())))
    coarse_shape = tuple(int(np.ceil((n - 1) / step)) + 1 for n in grid.shape)
    coarse = Grid(coarse_shape, grid.affine @ np.diag([step, step, step, 1.0]))
    coords = coarse.world_coordinates()
    coords = (coords - np.asarray(centre, np.float32)[:, None, None, None]) / np.float32(radius_mm)
    values = np.zeros(coarse_shape, np.float32)
    for c, (a, b, d) in zip(coefficients, monomial_powers()):
        values += np.float32(c) * coords[0] ** a * coords[1] ** b * coords[2] ** d
    return values if step == 1 else resample(to_sitk(values, coarse), grid)


def monomial_powers(degree: int = 3) -> list[tuple[int, int, int]]:
    """Exponents ``(a, b, c)`` of the monomials of total degree 1..``degree`` (19 for 3)."""
    return [
        (a, b, c)
        for total in range(1, degree + 1)
        for a in range(total + 1)
        for b in range(total + 1 - a)
        for c in [total - a - b]
    ]
