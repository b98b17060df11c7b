"""Interfaces: the model grid and resampling onto it."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec,
                                    isdefined, traits)

from bids_mdpp.interfaces import save_result, use_threads


class _ModelGridInputSpec(BaseInterfaceInputSpec):
    reference = File(exists=True, mandatory=True, desc="reference image (canonical, native)")
    brain = File(exists=True, mandatory=True, desc="brain prior (≥ 0.5 is brain), any grid")
    grid_mm = traits.Float(1.0, usedefault=True, desc="voxel size (mm) of the model grid")


class _ModelGridOutputSpec(TraitedSpec):
    out_grid = File(exists=True, desc="empty image defining the model grid")


class ModelGrid(SimpleInterface):
    """Define the model grid (:func:`bids_mdpp.preproc.grid.model_grid`)."""

    input_spec = _ModelGridInputSpec
    output_spec = _ModelGridOutputSpec

    def _run_interface(self, runtime):
        from bids_mdpp.preproc.grid import model_grid

        grid = model_grid(nib.load(self.inputs.reference), nib.load(self.inputs.brain),
                          grid_mm=self.inputs.grid_mm)
        save_result(self, runtime, "out_grid", grid, "grid.nii.gz")
        return runtime


class _ResampleInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to resample")
    grid = File(exists=True, mandatory=True, desc="model grid")
    xfm = File(exists=True, desc="ITK transform: grid (reference) points → image points")
    num_threads = traits.Int(
        1, usedefault=True, nohash=True, desc="SimpleITK threads (not part of the cache key)"
    )


class _ResampleOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="image on the model grid (float32, linear interpolation)")


class ResampleToGrid(SimpleInterface):
    """Resample onto the model grid in one interpolation (:func:`~bids_mdpp.preproc.grid.resample_to_grid`)."""

    input_spec = _ResampleInputSpec
    output_spec = _ResampleOutputSpec

    def _run_interface(self, runtime):
        from bids_mdpp.preproc.grid import resample_to_grid
        from bids_mdpp.preproc.register import read_transform

        use_threads(self.inputs.num_threads)
        transform = read_transform(self.inputs.xfm) if isdefined(self.inputs.xfm) else None
        out = resample_to_grid(nib.load(self.inputs.in_file), nib.load(self.inputs.grid), transform)
        save_result(self, runtime, "out_file", out, "on_grid.nii.gz")
        return runtime
