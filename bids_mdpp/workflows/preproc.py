"""The preprocessing workflow (Nipype), its driver and the way back to native space.

``init_preproc_wf`` builds the workflow from small sub-workflows, each carrying a
``__desc__`` sentence for the methods text (:func:`boilerplate`):

    bias_wf        reorient every contrast to RAS+, N4 bias-field correction
    coreg_wf       rigid registration of every other contrast to the reference
    brainmask_wf   skull-stripped detection / template fit, model grid, refined brain mask
    resample_wf    every other contrast onto the model grid (one interpolation)
    normalize_wf   white-matter-peak normalisation of every contrast
    qc_wf          registration and brain-mask figures

:func:`run_preprocessing` runs it in a work directory (a re-run reuses finished nodes) and
copies the results to ``<work_dir>/outputs``; :func:`to_native` brings a map on the model
grid back onto the native grid of the reference image, and :func:`probability_to_native` the
lesion probability map.
"""
from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_mdpp.contrasts import CONTRASTS, LABELS, choose_reference
from bids_mdpp.errors import InputDataError
from bids_mdpp.imageio import atomic_path
from bids_mdpp.session import PreprocResult, SessionInputs

LOGGER = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "MNI152NLin2009cAsym"
#: Order in which the sub-workflows' descriptions make up the methods text.
SUBWORKFLOWS = ("bias_wf", "coreg_wf", "brainmask_wf", "resample_wf", "normalize_wf")
#: Seconds between MultiProc polls (Nipype's default of 2 s adds 2 s per dependent step).
POLL_SLEEP_S = 0.05

#: References the methods text cites (key → full reference).
PREPROC_REFERENCES: dict[str, str] = {
    "nipype": "Gorgolewski K, Burns CD, Madison C, Clark D, Halchenko YO, Waskom ML, Ghosh SS. "
              "Nipype: a flexible, lightweight and extensible neuroimaging data processing "
              "framework in Python. Front Neuroinform 2011;5:13. doi:10.3389/fninf.2011.00013",
    "nibabel": "Brett M, Markiewicz CJ, Hanke M, et al. nipy/nibabel. Zenodo. "
               "doi:10.5281/zenodo.591597",
    "simpleitk": "Lowekamp BC, Chen DT, Ibáñez L, Blezek D. The Design of SimpleITK. Front "
                 "Neuroinform 2013;7:45. doi:10.3389/fninf.2013.00045",
    "n4": "Tustison NJ, Avants BB, Cook PA, Zheng Y, Egan A, Yushkevich PA, Gee JC. N4ITK: "
          "Improved N3 Bias Correction. IEEE Trans Med Imaging 2010;29(6):1310-1320. "
          "doi:10.1109/TMI.2010.2046908",
    "mattes2003": "Mattes D, Haynor DR, Vesselle H, Lewellen TK, Eubank W. PET-CT image "
                  "registration in the chest using free-form deformations. IEEE Trans Med "
                  "Imaging 2003;22(1):120-128. doi:10.1109/TMI.2003.809072",
    "mni152": "Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased "
              "average age-appropriate atlases for pediatric studies. NeuroImage "
              "2011;54(1):313-327. doi:10.1016/j.neuroimage.2010.07.033",
    "templateflow": "Ciric R, Thompson WH, Lorenz R, et al. TemplateFlow: FAIR-sharing of "
                    "multi-scale, multi-species brain models. Nat Methods 2022;19:1568-1571. "
                    "doi:10.1038/s41592-022-01681-2",
    "nilearn": "Abraham A, Pedregosa F, Eickenberg M, et al. Machine learning for neuroimaging "
               "with scikit-learn. Front Neuroinform 2014;8:14. doi:10.3389/fninf.2014.00014",
    "roy2018": "Roy S, Butman JA, Reich DS, Calabresi PA, Pham DL. Multiple Sclerosis Lesion "
               "Segmentation from Brain MRI via Fully Convolutional Neural Networks. "
               "arXiv:1803.09172 (2018)",
}


def _names(contrasts: Iterable[str]) -> str:
    labels = [LABELS.get(c, c) for c in contrasts]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _canonical(contrasts: Iterable[str], reference: str) -> tuple[tuple[str, ...], list[str]]:
    given = set(contrasts)
    unknown = given - set(CONTRASTS)
    if unknown:
        raise ValueError(f"unknown contrast(s) {sorted(unknown)}; known: {', '.join(CONTRASTS)}")
    ordered = tuple(c for c in CONTRASTS if c in given)
    if reference not in ordered:
        raise ValueError(f"reference {reference!r} is not among the contrasts {ordered}")
    return ordered, [c for c in ordered if c != reference]


def init_bias_wf(*, contrasts: Sequence[str], omp_nthreads: int = 1, name: str = "bias_wf"):
    """Reorientation and N4 correction of each contrast.

    Inputs: one field per contrast (image file).  Outputs: the same fields (bias-corrected,
    RAS+ images, float32).
    """
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline import engine as pe

    from bids_mdpp.interfaces.bias import N4BiasCorrection, Reorient

    wf = pe.Workflow(name=name)
    wf.__desc__ = (
        f"Each image ({_names(contrasts)}) was reoriented to RAS+ with nibabel and corrected "
        f"for intensity non-uniformity with N4 (Tustison et al. 2010) as implemented in "
        f"SimpleITK (Lowekamp et al. 2013), the field being fitted at about 4 mm resolution "
        f"inside an Otsu foreground mask.")
    inputnode = pe.Node(IdentityInterface(fields=list(contrasts)), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=list(contrasts)), name="outputnode")
    for contrast in contrasts:
        reorient = pe.Node(Reorient(), name=f"reorient_{contrast}")
        n4 = pe.Node(N4BiasCorrection(num_threads=omp_nthreads), name=f"n4_{contrast}",
                     n_procs=omp_nthreads)
        wf.connect([
            (inputnode, reorient, [(contrast, "in_file")]),
            (inputnode, n4, [(contrast, "source")]),
            (reorient, n4, [("out_file", "in_file")]),
            (n4, outputnode, [("out_file", contrast)]),
        ])
    return wf


def init_coreg_wf(*, moving: Sequence[str], reference: str, omp_nthreads: int = 1,
                  name: str = "coreg_wf"):
    """Rigid registration of each ``moving`` contrast to ``reference``.

    Inputs: ``reference``, one field per moving contrast (bias-corrected images) and
    ``source_<contrast>`` (input files, for messages).  Outputs: ``xfm_<contrast>``.
    """
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline import engine as pe

    from bids_mdpp.interfaces.registration import RigidRegistration

    wf = pe.Workflow(name=name)
    wf.__desc__ = (
        f"The {_names(moving)} image{'s were' if len(moving) > 1 else ' was'} aligned to the "
        f"{LABELS[reference]} image with a rigid (6 degrees of freedom) registration in "
        f"SimpleITK: Mattes mutual information (Mattes et al. 2003), regular-step gradient "
        f"descent and a three-level multi-resolution pyramid, started from a moments "
        f"initialiser.")
    sources = [f"source_{c}" for c in [reference, *moving]]
    inputnode = pe.Node(IdentityInterface(fields=["reference", *moving, *sources]),
                        name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=[f"xfm_{c}" for c in moving]),
                         name="outputnode")
    for contrast in moving:
        register = pe.Node(RigidRegistration(moving_name=contrast, reference_name=reference,
                                             num_threads=omp_nthreads),
                           name=f"register_{contrast}", n_procs=omp_nthreads)
        wf.connect([
            (inputnode, register, [("reference", "fixed_file"), (contrast, "moving_file"),
                                   (f"source_{contrast}", "moving_source"),
                                   (f"source_{reference}", "fixed_source")]),
            (register, outputnode, [("out_xfm", f"xfm_{contrast}")]),
        ])
    return wf


def init_brainmask_wf(*, reference: str, grid_mm: float = 1.0, omp_nthreads: int = 1,
                      template: str = DEFAULT_TEMPLATE, name: str = "brainmask_wf"):
    """Brain extraction of the reference and the model grid.

    Inputs: ``reference`` (bias-corrected image), ``source`` (input file, for messages).
    Outputs: ``grid``, ``reference_on_grid``, ``brain_mask`` (on the grid), ``skull_stripped``.
    """
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline import engine as pe

    from bids_mdpp.interfaces.brainmask import BrainPrior, RefineBrainMask
    from bids_mdpp.interfaces.grid import ModelGrid, ResampleToGrid
    from bids_mdpp.templates import templateflow_files

    source = (f"the {template} brain template from TemplateFlow (Ciric et al. 2022)"
              if templateflow_files(template, 1) else
              "the MNI152 2009 brain template bundled with nilearn (Fonov et al. 2011; "
              "Abraham et al. 2014)")
    wf = pe.Workflow(name=name)
    wf.__desc__ = (
        f"An image already skull-stripped (a large exact-zero background bordered by tissue) "
        f"kept its non-zero region as brain mask; otherwise {source} was registered to the {LABELS[reference]} image (similarity then "
        f"affine transform, mutual information, after a coarse grid search over scale), and "
        f"its brain mask was refined on the image's intensities and filled, so that "
        f"ventricles and lesions lie inside it. All images were resampled with linear "
        f"interpolation, in a single step, onto a {grid_mm:g} mm isotropic grid aligned with "
        f"the {LABELS[reference]} image and cropped to the brain plus an 8 mm margin.")
    inputnode = pe.Node(IdentityInterface(fields=["reference", "source"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(
        fields=["grid", "reference_on_grid", "brain_mask", "skull_stripped"]), name="outputnode")
    prior = pe.Node(BrainPrior(template=template, num_threads=omp_nthreads), name="prior",
                    n_procs=omp_nthreads)
    grid = pe.Node(ModelGrid(grid_mm=grid_mm), name="grid")
    resample = pe.Node(ResampleToGrid(num_threads=omp_nthreads), name="resample_reference",
                       n_procs=omp_nthreads)
    refine = pe.Node(RefineBrainMask(), name="refine")
    wf.connect([
        (inputnode, prior, [("reference", "in_file"), ("source", "source")]),
        (inputnode, grid, [("reference", "reference")]),
        (prior, grid, [("out_prior", "brain")]),
        (inputnode, resample, [("reference", "in_file")]),
        (grid, resample, [("out_grid", "grid")]),
        (resample, refine, [("out_file", "in_file")]),
        (inputnode, refine, [("source", "source")]),
        (prior, refine, [("out_prior", "prior"), ("skull_stripped", "skull_stripped"),
                         ("template_mask", "template_mask"), ("template_xfm", "template_xfm")]),
        (grid, outputnode, [("out_grid", "grid")]),
        (resample, outputnode, [("out_file", "reference_on_grid")]),
        (refine, outputnode, [("out_mask", "brain_mask")]),
        (prior, outputnode, [("skull_stripped", "skull_stripped")]),
    ])
    return wf


def init_resample_wf(*, moving: Sequence[str], omp_nthreads: int = 1, name: str = "resample_wf"):
    """Each moving contrast onto the model grid through its rigid transform.

    Inputs: ``grid``, one field per moving contrast and ``xfm_<contrast>``.  Outputs: one
    field per moving contrast (image on the grid).
    """
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline import engine as pe

    from bids_mdpp.interfaces.grid import ResampleToGrid

    wf = pe.Workflow(name=name)
    wf.__desc__ = ""  # described with the grid in brainmask_wf
    inputnode = pe.Node(IdentityInterface(
        fields=["grid", *moving, *(f"xfm_{c}" for c in moving)]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=list(moving)), name="outputnode")
    for contrast in moving:
        resample = pe.Node(ResampleToGrid(num_threads=omp_nthreads), name=f"resample_{contrast}",
                           n_procs=omp_nthreads)
        wf.connect([
            (inputnode, resample, [(contrast, "in_file"), (f"xfm_{contrast}", "xfm"),
                                   ("grid", "grid")]),
            (resample, outputnode, [("out_file", contrast)]),
        ])
    return wf


def init_normalize_wf(*, contrasts: Sequence[str], name: str = "normalize_wf"):
    """White-matter-peak normalisation of each contrast inside the brain mask.

    Inputs: one field per contrast (image on the grid), ``brain_mask`` and
    ``source_<contrast>``.  Outputs: one field per contrast and ``wm_peak_<contrast>``.
    """
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline import engine as pe

    from bids_mdpp.interfaces.normalize import NormalizeIntensity
    from bids_mdpp.preproc.normalize import DARK_PEAK_RATIO, RIVAL_PEAK_FRACTION

    wf = pe.Workflow(name=name)
    wf.__desc__ = (
        "Intensities were normalised as in FLEXCONN (Roy et al. 2018) and ModDrop++: the "
        "white-matter peak was found as a local maximum of a Gaussian kernel density "
        "estimate (SciPy; bandwidth 1/80 of the 99th percentile, 80 points) of the brain's "
        "intensities up to their 99th percentile (the highest-intensity peak for T1-weighted "
        f"images; otherwise the darkest peak at least {RIVAL_PEAK_FRACTION:.0%} as tall as the "
        f"tallest, ignoring peaks below {DARK_PEAK_RATIO:.0%} of the tallest one's intensity), "
        "intensities were divided by it and mapped by x/2 − 1, so that the background is −1 "
        "and white matter −0.5.")
    sources = [f"source_{c}" for c in contrasts]
    inputnode = pe.Node(IdentityInterface(fields=[*contrasts, "brain_mask", *sources]),
                        name="inputnode")
    outputnode = pe.Node(IdentityInterface(
        fields=[*contrasts, *(f"wm_peak_{c}" for c in contrasts)]), name="outputnode")
    for contrast in contrasts:
        normalize = pe.Node(NormalizeIntensity(contrast=contrast), name=f"normalize_{contrast}")
        wf.connect([
            (inputnode, normalize, [(contrast, "in_file"), ("brain_mask", "mask"),
                                    (f"source_{contrast}", "source")]),
            (normalize, outputnode, [("out_file", contrast), ("wm_peak", f"wm_peak_{contrast}")]),
        ])
    return wf


def init_qc_wf(*, moving: Sequence[str], reference: str, name: str = "qc_wf"):
    """QC figures: reference edges over each moving contrast, brain-mask contour.

    Inputs: ``reference``, one field per moving contrast (all on the grid), ``brain_mask``.
    Outputs: ``qc_reg_<contrast>`` and ``qc_brainmask`` (PNG files).
    """
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline import engine as pe

    from bids_mdpp.interfaces.qc import BrainMaskFigure, RegistrationFigure

    wf = pe.Workflow(name=name)
    wf.__desc__ = ""
    inputnode = pe.Node(IdentityInterface(fields=["reference", *moving, "brain_mask"]),
                        name="inputnode")
    outputnode = pe.Node(IdentityInterface(
        fields=[*(f"qc_reg_{c}" for c in moving), "qc_brainmask"]), name="outputnode")
    mask_figure = pe.Node(BrainMaskFigure(title=f"Brain mask over {reference}"),
                          name="brainmask_figure")
    wf.connect([
        (inputnode, mask_figure, [("reference", "reference"), ("brain_mask", "mask")]),
        (mask_figure, outputnode, [("out_figure", "qc_brainmask")]),
    ])
    for contrast in moving:
        figure = pe.Node(RegistrationFigure(title=f"{reference} edges over {contrast}"),
                         name=f"registration_figure_{contrast}")
        wf.connect([
            (inputnode, figure, [("reference", "reference"), (contrast, "moving"),
                                 ("brain_mask", "mask")]),
            (figure, outputnode, [("out_figure", f"qc_reg_{contrast}")]),
        ])
    return wf


def init_preproc_wf(*, contrasts: Iterable[str], reference: str, grid_mm: float = 1.0,
                    omp_nthreads: int = 1, name: str = "preproc_wf",
                    template: str = DEFAULT_TEMPLATE):
    """The preprocessing workflow of one session.

    Parameters
    ----------
    contrasts
        Contrasts present (canonical names); ``reference`` must be one of them.
    reference
        Registration reference (see :func:`bids_mdpp.contrasts.choose_reference`).
    grid_mm
        Voxel size (mm) of the isotropic model grid.
    omp_nthreads
        Threads per node (SimpleITK).
    template
        TemplateFlow name of the brain template (nilearn's MNI152 2009 stands in offline).

    Inputs
    ------
    One field per contrast: the input image file.

    Outputs
    -------
    ``preproc_<contrast>``
        Normalised image on the model grid (float32, background −1, white matter −0.5).
    ``brain_mask``
        Brain mask on the model grid (uint8).
    ``xfm_<contrast>``
        Per moving contrast: ITK transform, reference points → contrast points (LPS).
    ``wm_peak_<contrast>``
        White-matter peak intensity before normalisation.
    ``qc_reg_<contrast>``, ``qc_brainmask``
        QC figures (PNG).
    ``skull_stripped``
        True when the reference was already skull-stripped.
    """
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline import engine as pe

    contrasts, moving = _canonical(contrasts, reference)
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=list(contrasts)), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=[
        *(f"preproc_{c}" for c in contrasts), "brain_mask", *(f"xfm_{c}" for c in moving),
        *(f"wm_peak_{c}" for c in contrasts), *(f"qc_reg_{c}" for c in moving), "qc_brainmask",
        "skull_stripped"]), name="outputnode")
    bias_wf = init_bias_wf(contrasts=contrasts, omp_nthreads=omp_nthreads)
    brainmask_wf = init_brainmask_wf(reference=reference, grid_mm=grid_mm,
                                     omp_nthreads=omp_nthreads, template=template)
    normalize_wf = init_normalize_wf(contrasts=contrasts)
    qc_wf = init_qc_wf(moving=moving, reference=reference)
    wf.connect([
        (inputnode, bias_wf, [(c, f"inputnode.{c}") for c in contrasts]),
        (inputnode, brainmask_wf, [(reference, "inputnode.source")]),
        (bias_wf, brainmask_wf, [(f"outputnode.{reference}", "inputnode.reference")]),
        (inputnode, normalize_wf, [(c, f"inputnode.source_{c}") for c in contrasts]),
        (brainmask_wf, normalize_wf, [("outputnode.reference_on_grid", f"inputnode.{reference}"),
                                      ("outputnode.brain_mask", "inputnode.brain_mask")]),
        (brainmask_wf, qc_wf, [("outputnode.reference_on_grid", "inputnode.reference"),
                               ("outputnode.brain_mask", "inputnode.brain_mask")]),
        (brainmask_wf, outputnode, [("outputnode.brain_mask", "brain_mask"),
                                    ("outputnode.skull_stripped", "skull_stripped")]),
        (normalize_wf, outputnode, [(f"outputnode.{c}", f"preproc_{c}") for c in contrasts]
         + [(f"outputnode.wm_peak_{c}", f"wm_peak_{c}") for c in contrasts]),
        (qc_wf, outputnode, [(f"outputnode.qc_reg_{c}", f"qc_reg_{c}") for c in moving]
         + [("outputnode.qc_brainmask", "qc_brainmask")]),
    ])
    if moving:
        coreg_wf = init_coreg_wf(moving=moving, reference=reference, omp_nthreads=omp_nthreads)
        resample_wf = init_resample_wf(moving=moving, omp_nthreads=omp_nthreads)
        wf.connect([
            (inputnode, coreg_wf, [(c, f"inputnode.source_{c}") for c in contrasts]),
            (bias_wf, coreg_wf, [(f"outputnode.{reference}", "inputnode.reference")]
             + [(f"outputnode.{c}", f"inputnode.{c}") for c in moving]),
            (bias_wf, resample_wf, [(f"outputnode.{c}", f"inputnode.{c}") for c in moving]),
            (brainmask_wf, resample_wf, [("outputnode.grid", "inputnode.grid")]),
            (coreg_wf, resample_wf, [(f"outputnode.xfm_{c}", f"inputnode.xfm_{c}") for c in moving]),
            (resample_wf, normalize_wf, [(f"outputnode.{c}", f"inputnode.{c}") for c in moving]),
            (resample_wf, qc_wf, [(f"outputnode.{c}", f"inputnode.{c}") for c in moving]),
            (coreg_wf, outputnode, [(f"outputnode.xfm_{c}", f"xfm_{c}") for c in moving]),
        ])
    return wf


def boilerplate(contrasts: Iterable[str], reference: str, *, grid_mm: float = 1.0,
                template: str = DEFAULT_TEMPLATE) -> str:
    """The preprocessing methods paragraph, assembled from the sub-workflows' ``__desc__``.

    In-text citations refer to :data:`PREPROC_REFERENCES`.
    """
    wf = init_preproc_wf(contrasts=contrasts, reference=reference, grid_mm=grid_mm,
                         template=template)
    parts = []
    for name in SUBWORKFLOWS:
        sub = wf.get_node(name)
        if sub is not None and getattr(sub, "__desc__", ""):
            parts.append(sub.__desc__)
    parts.append("Preprocessing ran as a Nipype workflow (Gorgolewski et al. 2011).")
    return " ".join(parts)


def nipype_plugin(nprocs: int, memory_gb: float | None = None) -> tuple[str, dict]:
    """Nipype plugin and its arguments for ``nprocs`` processes (Linear for one, else
    MultiProc, limited to ``memory_gb`` when given)."""
    if nprocs == 1:
        return "Linear", {}
    args = {"n_procs": nprocs, "raise_insufficient": False}
    if memory_gb:
        args["memory_gb"] = memory_gb
    return "MultiProc", args


def run_preprocessing(inputs: SessionInputs, work_dir: Path, *, grid_mm: float = 1.0,
                      plugin: str = "Linear", plugin_args: dict | None = None,
                      omp_nthreads: int = 1) -> PreprocResult:
    """Preprocess one session; returns plain files under ``<work_dir>/outputs``.

    Nipype caches every node under ``work_dir`` (a re-run with the same inputs executes
    nothing), crash files go to ``<work_dir>/crash``.  A node that fails on bad data raises
    its :class:`InputDataError` again here, naming the input file.
    """
    work_dir = Path(work_dir).absolute()
    reference = choose_reference(inputs.contrasts)
    wf = init_preproc_wf(contrasts=inputs.contrasts, reference=reference, grid_mm=grid_mm,
                         omp_nthreads=omp_nthreads)
    wf.base_dir = str(work_dir)
    wf.config["execution"].update({
        "crashdump_dir": str(work_dir / "crash"), "crashfile_format": "txt",
        "poll_sleep_duration": POLL_SLEEP_S, "stop_on_first_crash": True,
        "remove_unnecessary_outputs": False,
    })
    wf.get_node("brainmask_wf.prior").inputs.cache_dir = str(work_dir / "templates")
    for contrast in inputs.contrasts:
        setattr(wf.inputs.inputnode, contrast, str(Path(inputs.files[contrast]).absolute()))
    args = dict(plugin_args or {})
    if plugin == "MultiProc":
        args.setdefault("raise_insufficient", False)
    LOGGER.info("%s: preprocessing in %s (%s)", inputs.key, work_dir, plugin)
    try:
        graph = wf.run(plugin=plugin, plugin_args=args)
    except Exception as exc:  # Nipype re-raises node failures in several forms
        raise _node_error(exc) from exc
    nodes = {node.fullname: node for node in graph.nodes()}
    return _collect(lambda node, field: getattr(nodes[f"{wf.name}.{node}"].result.outputs, field),
                    inputs, reference, work_dir / "outputs")


def _node_error(exc: BaseException) -> BaseException:
    """The :class:`InputDataError` behind a Nipype failure, else ``exc`` itself."""
    for error in (exc, exc.__cause__, exc.__context__):
        if isinstance(error, InputDataError):
            return error
    match = re.search(r"bids_mdpp\.errors\.(?:InputDataError|ModelError): (.+)", str(exc))
    return InputDataError(None, match.group(1).strip()) if match else exc


def _copy(source: str, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    return dest


def _collect(output, inputs: SessionInputs, reference: str, folder: Path) -> PreprocResult:
    """Copy the results to ``folder``; ``output(node, field)`` reads a node's output.

    Nipype drops identity nodes (such as ``outputnode``) from the graph it runs, so the
    results are read from the nodes that produced them.
    """
    key = inputs.key
    moving = [c for c in inputs.contrasts if c != reference]
    images = {c: _copy(output(f"normalize_wf.normalize_{c}", "out_file"),
                       folder / f"{key}_desc-preproc_{c}.nii.gz") for c in inputs.contrasts}
    xfms = {c: _copy(output(f"coreg_wf.register_{c}", "out_xfm"),
                     folder / f"{key}_from-{c}_to-{reference}_mode-image_xfm.txt") for c in moving}
    qc = {f"reg_{c}": _copy(output(f"qc_wf.registration_figure_{c}", "out_figure"),
                            folder / f"{key}_desc-reg{c}_qc.png") for c in moving}
    qc["brainmask"] = _copy(output("qc_wf.brainmask_figure", "out_figure"),
                            folder / f"{key}_desc-brainmask_qc.png")
    peaks = ", ".join(f"{c} {output(f'normalize_wf.normalize_{c}', 'wm_peak'):.4g}"
                      for c in inputs.contrasts)
    stripped = output("brainmask_wf.prior", "skull_stripped")
    LOGGER.info("%s: reference %s, %s input; white-matter peaks: %s", key, reference,
                "skull-stripped" if stripped else "skull-on", peaks)
    return PreprocResult(
        reference=reference, reference_native=Path(inputs.files[reference]), images=images,
        brain_mask=_copy(output("brainmask_wf.refine", "out_mask"),
                         folder / f"{key}_desc-brain_mask.nii.gz"),
        xfms=xfms, qc=qc)


def grid_image(result: PreprocResult) -> nib.Nifti1Image:
    """The model grid of a preprocessed session (its brain mask image: shape and affine)."""
    return nib.load(str(result.brain_mask))


def to_native(data: np.ndarray, result: PreprocResult, *, order: int = 1) -> nib.Nifti1Image:
    """A map on the model grid resampled onto the reference image's native grid.

    ``data`` has the model grid's shape (that of ``result.images``); the result has exactly
    the shape and affine of ``result.reference_native`` (float32 for ``order`` ≥ 1; the
    input type for ``order=0``, nearest neighbour).
    """
    from bids_mdpp.preproc.grid import resample_to_target

    grid = grid_image(result)
    if tuple(np.shape(data)) != tuple(grid.shape[:3]):
        raise ValueError(f"map of shape {np.shape(data)} is not on the model grid {grid.shape[:3]}")
    return resample_to_target(data, grid, nib.load(str(result.reference_native)), order=order)


#: Spline order that brings the lesion probability map back to the native grid
#: (:func:`probability_to_native`).
PROBABILITY_SPLINE_ORDER = 3


def probability_to_native(probability: np.ndarray, result: PreprocResult) -> nib.Nifti1Image:
    """The lesion probability map ``(X, Y, Z)`` on the model grid, resampled onto the reference
    image's native grid by a cubic spline and clipped to [0, 1] (float32).

    On a 1 mm reference the model grid's voxel centres lie half a voxel from the native ones
    along each axis; linear interpolation there is the mean of two neighbours per axis, a blur
    that shrinks every thresholded lesion (on a real patient's FLAIR, 6.4 ml above 0.5 on the
    model grid became 5.5 ml natively).  The cubic spline keeps the map's detail (6.0 ml); its
    overshoot beyond [0, 1] at sharp edges is clipped, and its ringing is cut where the map is 0
    within a model-grid voxel (where linear interpolation gives 0).
    """
    from bids_mdpp.preproc.sitkio import with_data

    native = to_native(probability, result, order=PROBABILITY_SPLINE_ORDER)
    support = np.asarray(to_native((np.asarray(probability) > 0).astype(np.float32), result,
                                   order=1).dataobj) > 0
    values = np.where(support, np.clip(np.asarray(native.dataobj), 0.0, 1.0), 0.0)
    return with_data(native, values.astype(np.float32))
