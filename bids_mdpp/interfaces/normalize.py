"""Interface: white-matter-peak intensity normalisation."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, SimpleInterface, Str,
                                    TraitedSpec, traits)

from bids_mdpp.interfaces import save_result


class _NormalizeInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image on the model grid")
    mask = File(exists=True, mandatory=True, desc="brain mask on the model grid")
    contrast = Str(mandatory=True, desc="contrast name (T1w and ceT1w take the brightest peak)")
    source = Str("", usedefault=True, desc="input file of this contrast (for messages)")


class _NormalizeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="normalised image: background −1, white matter −0.5")
    wm_peak = traits.Float(desc="white-matter peak intensity before normalisation")


class NormalizeIntensity(SimpleInterface):
    """Normalise by the white-matter peak (:func:`bids_mdpp.preproc.normalize.normalize_wm_peak`)."""

    input_spec = _NormalizeInputSpec
    output_spec = _NormalizeOutputSpec

    def _run_interface(self, runtime):
        from bids_mdpp.preproc.normalize import normalize_wm_peak

        normalised, peak = normalize_wm_peak(
            nib.load(self.inputs.in_file), nib.load(self.inputs.mask), self.inputs.contrast,
            name=self.inputs.source or self.inputs.in_file)
        save_result(self, runtime, "out_file", normalised, "normalised.nii.gz")
        self._results["wm_peak"] = peak
        return runtime
