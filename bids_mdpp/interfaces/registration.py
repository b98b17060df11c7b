"""Interface: rigid co-registration of one contrast to the reference contrast."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, SimpleInterface, Str,
                                    TraitedSpec, traits)

from bids_mdpp.interfaces import use_threads


class _RigidInputSpec(BaseInterfaceInputSpec):
    fixed_file = File(exists=True, mandatory=True, desc="reference contrast (bias-corrected)")
    moving_file = File(exists=True, mandatory=True, desc="contrast to align (bias-corrected)")
    moving_name = Str(mandatory=True, desc="contrast name of the moving image, e.g. T1w")
    reference_name = Str(mandatory=True, desc="contrast name of the reference, e.g. FLAIR")
    moving_source = Str("", usedefault=True, desc="input file of the moving image (for messages)")
    fixed_source = Str("", usedefault=True, desc="input file of the reference (for messages)")
    num_threads = traits.Int(
        1, usedefault=True, nohash=True, desc="SimpleITK threads (not part of the cache key)"
    )


class _RigidOutputSpec(TraitedSpec):
    out_xfm = File(exists=True, desc="ITK transform: reference points → moving points (LPS)")


class RigidRegistration(SimpleInterface):
    """Rigid 6-dof registration (:func:`bids_mdpp.preproc.register.register_rigid`)."""

    input_spec = _RigidInputSpec
    output_spec = _RigidOutputSpec

    def _run_interface(self, runtime):
        from bids_mdpp.preproc.register import register_rigid, write_transform, xfm_filename

        use_threads(self.inputs.num_threads)
        transform = register_rigid(
            nib.load(self.inputs.fixed_file), nib.load(self.inputs.moving_file),
            fixed_name=self.inputs.fixed_source or self.inputs.fixed_file,
            moving_name=self.inputs.moving_source or self.inputs.moving_file)
        out = Path(runtime.cwd) / xfm_filename(self.inputs.moving_name, self.inputs.reference_name)
        self._results["out_xfm"] = str(write_transform(transform, out))
        return runtime
