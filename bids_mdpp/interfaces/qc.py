"""Interfaces: quality-control figures of preprocessing."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
from nipype.interfaces.base import (BaseInterfaceInputSpec, File, SimpleInterface, Str,
                                    TraitedSpec)


class _RegistrationFigureInputSpec(BaseInterfaceInputSpec):
    reference = File(exists=True, mandatory=True, desc="reference contrast on the model grid")
    moving = File(exists=True, mandatory=True, desc="co-registered contrast on the model grid")
    mask = File(exists=True, mandatory=True, desc="brain mask on the model grid")
    title = Str(mandatory=True, desc="figure title")


class _FigureOutputSpec(TraitedSpec):
    out_figure = File(exists=True, desc="PNG figure")


class RegistrationFigure(SimpleInterface):
    """Edges of the reference over a co-registered contrast (:func:`~bids_mdpp.preproc.qc.registration_figure`)."""

    input_spec = _RegistrationFigureInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        from bids_mdpp.preproc.qc import registration_figure

        out = registration_figure(
            nib.load(self.inputs.reference), nib.load(self.inputs.moving),
            nib.load(self.inputs.mask), Path(runtime.cwd) / "registration.png",
            title=self.inputs.title)
        self._results["out_figure"] = str(out)
        return runtime


class _BrainMaskFigureInputSpec(BaseInterfaceInputSpec):
    reference = File(exists=True, mandatory=True, desc="reference contrast on the model grid")
    mask = File(exists=True, mandatory=True, desc="brain mask on the model grid")
    title = Str(mandatory=True, desc="figure title")


class BrainMaskFigure(SimpleInterface):
    """Brain-mask contour over the reference (:func:`~bids_mdpp.preproc.qc.brainmask_figure`)."""

    input_spec = _BrainMaskFigureInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        from bids_mdpp.preproc.qc import brainmask_figure

        out = brainmask_figure(nib.load(self.inputs.reference), nib.load(self.inputs.mask),
                               Path(runtime.cwd) / "brainmask.png", title=self.inputs.title)
        self._results["out_figure"] = str(out)
        return runtime
