"""Interfaces: reorientation to RAS+ and N4 bias-field correction."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, SimpleInterface, Str,
                                    TraitedSpec, traits)

from bids_mdpp.interfaces import save_result, use_threads


class _ReorientInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3D NIfTI image")


class _ReorientOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the image in RAS+ voxel order")


class Reorient(SimpleInterface):
    """Reorder voxel axes to the closest RAS+ orientation (nibabel, no interpolation)."""

    input_spec = _ReorientInputSpec
    output_spec = _ReorientOutputSpec

    def _run_interface(self, runtime):
        from bids_mdpp.preproc.reorient import to_canonical

        save_result(self, runtime, "out_file", to_canonical(nib.load(self.inputs.in_file)),
                    "canonical.nii.gz")
        return runtime


class _N4InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to correct")
    source = Str("", usedefault=True, desc="input file of this image (for messages)")
    num_threads = traits.Int(
        1, usedefault=True, nohash=True, desc="SimpleITK threads (not part of the cache key)"
    )


class _N4OutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="bias-corrected image (float32)")
    bias_field = File(exists=True, desc="estimated multiplicative field")


class N4BiasCorrection(SimpleInterface):
    """N4 bias-field correction (:func:`bids_mdpp.preproc.bias.n4_correct`)."""

    input_spec = _N4InputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        from bids_mdpp.preproc.bias import n4_correct

        use_threads(self.inputs.num_threads)
        corrected, field = n4_correct(nib.load(self.inputs.in_file),
                                      name=self.inputs.source or self.inputs.in_file)
        save_result(self, runtime, "out_file", corrected, "corrected.nii.gz")
        save_result(self, runtime, "bias_field", field, "bias_field.nii.gz")
        return runtime
