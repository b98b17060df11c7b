"""The methods ("boilerplate") text of a run and the references it cites.

The preprocessing part is the workflow's own description (assembled from the ``__desc__`` of
each sub-workflow, passed in as text) so the paragraph always matches what ran; this module
adds the segmentation part and the reference list, and writes ``logs/CITATION.md``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bids_mdpp import __version__
from bids_mdpp.contrasts import LABELS, and_those_alone
from bids_mdpp.imageio import write_text

#: Every reference the methods text may cite: key → full reference with its DOI.
REFERENCES: dict[str, str] = {
    "liu2022": "Liu H, Fan Y, Li H, Wang J, Hu D, Cui C, Lee HH, Zhang H, Oguz I. ModDrop++: A "
               "Dynamic Filter Network with Intra-subject Co-training for Multiple Sclerosis Lesion "
               "Segmentation with Missing Modalities. MICCAI 2022, LNCS 13435:444-453. "
               "doi:10.1007/978-3-031-16443-9_43",
    "zhang2019": "Zhang H, Valcarcel AM, Bakshi R, Chu R, Bagnato F, Shinohara RT, Hett K, Oguz I. "
                 "Multiple Sclerosis Lesion Segmentation with Tiramisu and 2.5D Stacked Slices. "
                 "MICCAI 2019, LNCS 11766:338-346. doi:10.1007/978-3-030-32248-9_38",
    "jegou2017": "Jégou S, Drozdzal M, Vazquez D, Romero A, Bengio Y. The One Hundred Layers "
                 "Tiramisu: Fully Convolutional DenseNets for Semantic Segmentation. CVPR Workshops "
                 "2017:1175-1183. doi:10.1109/CVPRW.2017.156",
    "nipype": "Gorgolewski K, Burns CD, Madison C, Clark D, Halchenko YO, Waskom ML, Ghosh SS. "
              "Nipype: a flexible, lightweight and extensible neuroimaging data processing framework "
              "in Python. Front Neuroinform 2011;5:13. doi:10.3389/fninf.2011.00013",
    "simpleitk": "Lowekamp BC, Chen DT, Ibáñez L, Blezek D. The Design of SimpleITK. Front "
                 "Neuroinform 2013;7:45. doi:10.3389/fninf.2013.00045",
    "n4": "Tustison NJ, Avants BB, Cook PA, Zheng Y, Egan A, Yushkevich PA, Gee JC. N4ITK: Improved "
          "N3 Bias Correction. IEEE Trans Med Imaging 2010;29(6):1310-1320. "
          "doi:10.1109/TMI.2010.2046908",
    "pybids": "Yarkoni T, Markiewicz CJ, de la Vega A, et al. PyBIDS: Python tools for BIDS datasets. "
              "J Open Source Softw 2019;4(40):1294. doi:10.21105/joss.01294",
    "nilearn": "Abraham A, Pedregosa F, Eickenberg M, et al. Machine learning for neuroimaging with "
               "scikit-learn. Front Neuroinform 2014;8:14. doi:10.3389/fninf.2014.00014",
    "mni152": "Fonov VS, Evans AC, McKinstry RC, Almli CR, Collins DL. Unbiased nonlinear average "
              "age-appropriate brain templates from birth to adulthood. NeuroImage 2009;47:S102. "
              "doi:10.1016/S1053-8119(09)70884-5; Fonov V, Evans AC, Botteron K, Almli CR, McKinstry "
              "RC, Collins DL. Unbiased average age-appropriate atlases for pediatric studies. "
              "NeuroImage 2011;54(1):313-327. doi:10.1016/j.neuroimage.2010.07.033",
    "pytorch": "Paszke A, Gross S, Massa F, et al. PyTorch: An Imperative Style, High-Performance "
               "Deep Learning Library. NeurIPS 2019;32:8024-8035. arXiv:1912.01703",
    "cerri2021": "Cerri S, Puonti O, Meier DS, Wuerfel J, Mühlau M, Siebner HR, Van Leemput K. A "
                 "contrast-adaptive method for simultaneous whole-brain and lesion segmentation in "
                 "multiple sclerosis. NeuroImage 2021;225:117471. "
                 "doi:10.1016/j.neuroimage.2020.117471",
    "lesjak2018": "Lesjak Ž, Galimzianova A, Koren A, Lukin M, Pernuš F, Likar B, Špiclin Ž. "
                  "A Novel Public MR Image Dataset of Multiple Sclerosis Patients With Lesion "
                  "Segmentations Based on Multi-rater Consensus. Neuroinformatics 2018;16:51-63. "
                  "doi:10.1007/s12021-017-9348-7",
}

#: Short in-text form of each reference.
IN_TEXT: dict[str, str] = {
    "liu2022": "Liu et al. 2022", "zhang2019": "Zhang et al. 2019", "jegou2017": "Jégou et al. 2017",
    "nipype": "Gorgolewski et al. 2011", "simpleitk": "Lowekamp et al. 2013",
    "n4": "Tustison et al. 2010", "pybids": "Yarkoni et al. 2019", "nilearn": "Abraham et al. 2014",
    "mni152": "Fonov et al. 2011", "pytorch": "Paszke et al. 2019", "lesjak2018": "Lesjak et al. 2018",
    "cerri2021": "Cerri et al. 2021",
}

#: Training modes as the methods text names them.
MODES: dict[str, str] = {
    "moddrop": "modality drop-out with a static first layer",
    "moddrop+": "modality drop-out with a dynamic filter-scaling head",
    "moddrop++": "ModDrop++: modality drop-out, a dynamic filter-scaling head and intra-subject "
                 "co-training",
    "independent": "a fixed set of contrasts",
}


def _cite(*keys: str) -> str:
    return "(" + "; ".join(IN_TEXT[k] for k in keys) + ")"


def _listing(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def methods_text(preproc_desc: str, summary: Mapping, *, shipped_model: bool = False) -> str:
    """The methods paragraph(s) and the reference list of one session, as Markdown.

    Parameters
    ----------
    preproc_desc
        The preprocessing workflow's description (prose assembled from its ``__desc__``).
    summary
        The session's mask sidecar (:attr:`bids_mdpp.outputs.SessionOutputs.summary`): it
        names the model, its contrasts, the contrasts used, the modality code, the threshold
        and the minimum lesion size (mm³).
    shipped_model
        True when the model shipped with bids_mdpp was used (cites its training data).
    """
    model = summary["Model"]
    mode = str(model.get("Mode", ""))
    contrasts = [LABELS.get(c, c) for c in summary["ContrastsUsed"]]
    min_size = float(summary.get("MinimumLesionSize", 0.0))
    cleaning = (f"connected components smaller than {min_size:g} mm³ were removed, and "
                if min_size > 0 else "")
    text = (
        f"Lesions were segmented with bids_mdpp {__version__}, an implementation of ModDrop++ "
        f"{_cite('liu2022')}. The network is "
        f"the 2.5D FC-DenseNet (\"Tiramisu\") of {IN_TEXT['zhang2019']} {_cite('jegou2017')}: "
        f"three adjacent slices of each contrast are stacked as input channels, and the "
        f"predictions made slice by slice in the axial, coronal and sagittal orientations are "
        f"averaged into one lesion probability map{_tta_clause(summary)}{_recalibration_clause(summary)}. The model \"{model.get('Name')}\" "
        f"(version {model.get('Version')}) was trained with {MODES.get(mode, mode)}, so that it "
        f"accepts any subset of the {_listing([LABELS.get(c, c) for c in summary['ModelContrasts']])} "
        f"contrasts; here "
        f"it received the {_listing(contrasts)} image{'s' if len(contrasts) > 1 else ''} "
        f"(modality code {summary['ModalityCode']}), the missing contrasts being zero-filled. "
        f"The probability map was resampled onto the native grid of the reference image "
        f"({summary['ReferenceContrast']}) by cubic spline interpolation (clipped to [0, 1]) "
        f"and thresholded at {float(summary['Threshold']):g}; "
        f"{cleaning}lesions were counted as connected components with "
        f"{summary.get('Connectivity', 26)}-connectivity. Computations used PyTorch "
        f"{_cite('pytorch')}, Nipype {_cite('nipype')}, SimpleITK {_cite('simpleitk')}, PyBIDS "
        f"{_cite('pybids')} and nilearn {_cite('nilearn')}."
    )
    base, cohort = model.get("AdaptedFrom"), model.get("AdaptedOn")
    if base and cohort:
        teacher = (", averaged with the lesion posterior of a Gaussian mixture fitted to that "
                   "session's intensities,"
                   if cohort.get("TeacherIntensityModel") == "combine" else "")
        text += (f" The model was adapted from \"{base.get('Name')}\" (version "
                 f"{base.get('Version')}) with bids_mdpp adapt on "
                 f"{len(cohort.get('Sessions') or [])} unlabelled session(s) of "
                 f"{cohort.get('Dataset')}: the base model's prediction from all of a session's "
                 f"contrasts{teacher} taught the same network fed subsets of them without FLAIR.")
        anchor = model.get("AnchorWeights")
        if anchor:
            also = and_those_alone(anchor.get("Subsets") or [])
            text += (f" Inputs that include {anchor.get('Contrast')}{also} were segmented with "
                     "the base model's own weights.")
    intensity = summary.get("Inference", {}).get("IntensityModel", {})
    if intensity.get("Mode") == "combine":
        from bids_mdpp.config import DEFAULT_NETWORK_WEIGHT
        from bids_mdpp.intensity_model import GREY_FLOOR_SD, LESION_PRIOR_IN_WHITE_MATTER

        weight = float(intensity.get("NetworkWeight", DEFAULT_NETWORK_WEIGHT))
        if weight == DEFAULT_NETWORK_WEIGHT:
            how = "The network's probability map was then averaged with"
        elif weight == 0.0:
            how = ("The model card gives the network no weight for these contrasts, so the "
                   "lesion probability map is")
        else:
            how = (f"The network's probability map (weight {weight:g}) was then combined with "
                   f"(weight {1.0 - weight:g})")
        masks = str(intensity.get("LesionMasks", "MSLUB"))
        scale = intensity.get("LesionPriorScale")
        load = f", by {float(scale):.2f} here" if isinstance(scale, (int, float)) else ""
        lesion_source = (f"27 patients of the MSLUB database {_cite('lesjak2018')}"
                         if "MSLUB" in masks else masks)
        text += (f" {how} the lesion posterior of a Gaussian mixture of tissue and lesion "
                 f"intensities fitted to the session, in the manner of SAMSEG {_cite('cerri2021')}: four classes (cerebrospinal fluid, "
                 f"grey matter, white matter, lesion), each a Gaussian over the contrasts present, "
                 f"fitted by expectation-maximisation inside the brain mask with spatial priors "
                 f"from the MNI152 template's tissue probability maps {_cite('mni152')} and the "
                 f"lesion frequency of {lesion_source} (plus {LESION_PRIOR_IN_WHITE_MATTER:g} "
                 f"times the white-matter probability, so that a lesion is possible anywhere in "
                 f"white matter; scaled up by the session's own lesion load{load}), "
                 f"carried onto the session by an affine registration; the lesion class was held "
                 f"brighter than white matter on FLAIR, T2w and PDw, or, with T1-weighted "
                 f"images alone, darker on T1w and ce-T1w (T1w and ce-T1w together were "
                 f"modelled from T1w alone), and, with one contrast alone, never narrower than "
                 f"grey matter; a voxel was lesion only where it "
                 f"lay as far from white matter itself on FLAIR, T2w and PDw and, without "
                 f"FLAIR, not where it was as dark as cerebrospinal fluid on T1w or ce-T1w "
                 f"({GREY_FLOOR_SD:g} grey-matter standard deviations darker than grey matter).")
    if shipped_model:
        text += (f" The shipped model was trained on data derived from the MSLUB database "
                 f"{_cite('lesjak2018')}.")
    from bids_mdpp.workflows.preproc import PREPROC_REFERENCES

    merged = {**PREPROC_REFERENCES, **REFERENCES}  # the preprocessing text cites these too
    cited = set()
    if shipped_model:
        cited.add("lesjak2018")
    if intensity.get("Mode") == "combine":
        cited |= {"lesjak2018", "cerri2021"}
    keys = [k for k in merged if k not in ("lesjak2018", "cerri2021") or k in cited]
    references = "\n".join(f"- {merged[k]}" for k in keys)
    return f"{preproc_desc.strip()}\n\n{text}\n\n### References\n\n{references}\n"


def _tta_clause(summary: Mapping) -> str:
    """How test-time augmentation changed the map, as a clause ("" without it)."""
    if "left-right flip" in summary.get("Inference", {}).get("TestTimeAugmentation", []):
        return (", itself the average of the predictions on the images and on their left-right "
                "mirror (test-time augmentation)")
    return ""


def _recalibration_clause(summary: Mapping) -> str:
    """How the model's probability calibration changed the map, as a clause ("" without it)."""
    calibration = summary.get("Inference", {}).get("ProbabilityCalibration")
    if not calibration:
        return ""
    return (f", then recalibrated by the model's logistic map fitted on labelled scans "
            f"(logit scaled by {float(calibration['Scale']):.3g}, shifted by "
            f"{float(calibration['Bias']):+.3g})")


def write_citation(output_dir: os.PathLike | str, text: str) -> Path:
    """Write ``OUTPUT_DIR/logs/CITATION.md`` (atomically) with the methods text."""
    body = ("# Methods\n\nThe following text was generated by bids_mdpp for this run; it may be "
            "copied into a manuscript unchanged.\n\n" + text.strip() + "\n")
    return write_text(body, Path(output_dir) / "logs" / "CITATION.md")
