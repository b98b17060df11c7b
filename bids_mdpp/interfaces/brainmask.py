"""Interfaces: brain extraction (template prior on the native grid, refined mask on the grid)."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (BaseInterfaceInputSpec, Directory, File, SimpleInterface, Str,
                                    TraitedSpec, isdefined, traits)

from bids_mdpp.interfaces import save_result, use_threads


class _BrainPriorInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="reference image (bias-corrected, native)")
    source = Str("", usedefault=True, desc="input file of the reference (for messages)")
    template = Str("MNI152NLin2009cAsym", usedefault=True, desc="TemplateFlow template name")
    cache_dir = Directory(desc="where nilearn's template is written (default: node folder)")
    num_threads = traits.Int(
        1, usedefault=True, nohash=True, desc="SimpleITK threads (not part of the cache key)"
    )


class _BrainPriorOutputSpec(TraitedSpec):
    out_prior = File(exists=True, desc="brain fraction per voxel on the reference's grid")
    skull_stripped = traits.Bool(desc="True when the input was already skull-stripped")
    template_mask = File(desc="template brain mask (raw input only)")
    template_xfm = File(desc="ITK transform: reference points → template points (raw input only)")


class BrainPrior(SimpleInterface):
    """Already-stripped detection, else an affine fit of a brain template.

    See :mod:`bids_mdpp.preproc.brainmask` and :mod:`bids_mdpp.preproc.templatefit`.
    """

    input_spec = _BrainPriorInputSpec
    output_spec = _BrainPriorOutputSpec

    def _run_interface(self, runtime):
        from bids_mdpp.preproc import brainmask, templatefit
        from bids_mdpp.preproc.register import write_transform
        from bids_mdpp.templates import get_template

        use_threads(self.inputs.num_threads)
        image = nib.load(self.inputs.in_file)
        name = self.inputs.source or self.inputs.in_file
        cwd = Path(runtime.cwd)
        stripped = brainmask.is_skull_stripped(image)
        self._results["skull_stripped"] = stripped
        if stripped:
            prior = brainmask.nonzero_brain_mask(image, name=name)
        else:
            cache = self.inputs.cache_dir if isdefined(self.inputs.cache_dir) else cwd
            t1, mask = get_template(self.inputs.template, 1, cache_dir=cache)
            to_template = templatefit.fit_template(image, t1, mask, name=name)
            prior = templatefit.warp_template_mask(mask, image, to_template)
            self._results["template_mask"] = str(mask)
            self._results["template_xfm"] = str(write_transform(
                to_template, cwd / f"from-{self.inputs.template}_to-reference_mode-image_xfm.txt"))
        save_result(self, runtime, "out_prior",
                    nib.Nifti1Image(np.asarray(prior.dataobj, dtype=np.float32), prior.affine),
                    "prior.nii.gz")
        return runtime


class _RefineInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="reference image on the model grid")
    prior = File(exists=True, mandatory=True, desc="brain prior on the reference's native grid")
    skull_stripped = traits.Bool(mandatory=True, desc="the reference was already skull-stripped")
    template_mask = File(desc="template brain mask (raw input)")
    template_xfm = File(desc="reference → template transform (raw input)")
    source = Str("", usedefault=True, desc="input file of the reference (for messages)")


class _RefineOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="brain mask on the model grid (uint8)")


class RefineBrainMask(SimpleInterface):
    """The final brain mask on the model grid.

    Skull-stripped input: its non-zero region carried onto the grid (every grid voxel that
    overlaps it).  Raw input: the template's mask carried onto the grid and cut to the
    reference's field of view, refined on the reference's intensities
    (:func:`bids_mdpp.preproc.brainmask.refine_brain_mask`).
    """

    input_spec = _RefineInputSpec
    output_spec = _RefineOutputSpec

    def _run_interface(self, runtime):
        from bids_mdpp.preproc.brainmask import refine_brain_mask
        from bids_mdpp.preproc.templatefit import warp_template_mask
        from bids_mdpp.preproc.grid import field_of_view, resample_to_grid
        from bids_mdpp.preproc.register import read_transform
        from bids_mdpp.preproc.sitkio import with_data

        image = nib.load(self.inputs.in_file)
        native_prior = nib.load(self.inputs.prior)
        name = self.inputs.source or self.inputs.in_file
        if self.inputs.skull_stripped:
            carried = np.asarray(resample_to_grid(native_prior, image).dataobj) > 0
            mask = with_data(image, carried.astype(np.uint8))
        else:
            prior = warp_template_mask(self.inputs.template_mask, image,
                                       read_transform(self.inputs.template_xfm))
            inside = field_of_view(native_prior, image)  # no brain where nothing was imaged
            prior = with_data(image, np.where(inside, np.asarray(prior.dataobj), 0.0))
            mask = refine_brain_mask(image, prior, name=name)
        save_result(self, runtime, "out_mask", mask, "brain_mask.nii.gz")
        return runtime
