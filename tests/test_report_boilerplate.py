"""The methods text: what it says, what it cites, and logs/CITATION.md."""
from __future__ import annotations

import pytest

from bids_mdpp import __version__
from bids_mdpp.reports.boilerplate import IN_TEXT, REFERENCES, methods_text, write_citation

SUMMARY = {
    "Model": {"Name": "umcl", "Version": "2.0", "Mode": "moddrop++", "SHA256": "0" * 64},
    "ModelContrasts": ["T1w", "FLAIR", "T2w", "ceT1w"],
    "ContrastsUsed": ["T1w", "FLAIR"],
    "ModalityCode": "1100",
    "ReferenceContrast": "FLAIR",
    "Threshold": 0.4,
    "MinimumLesionSize": 0.0,
    "Connectivity": 26,
}
PREPROC = "Each image was corrected for intensity non-uniformity with N4 (Tustison et al. 2010)."


def test_preprocessing_text_comes_first_then_the_model_then_references():
    text = methods_text(PREPROC, SUMMARY)
    assert text.startswith(PREPROC)
    assert text.index("Lesions were segmented") < text.index("### References")
    assert f"bids_mdpp {__version__}" in text
    assert 'model "umcl" (version 2.0)' in text
    assert "modality code 1100" in text
    assert "T1-weighted and FLAIR images" in text
    assert "intra-subject co-training" in text
    assert "thresholded at 0.4" in text and "26-connectivity" in text
    assert "(FLAIR) by cubic spline interpolation (clipped to [0, 1])" in text
    assert "smaller than" not in text


def test_every_required_reference_is_cited_and_listed():
    text = methods_text(PREPROC, SUMMARY)
    for key, doi in [("liu2022", "10.1007/978-3-031-16443-9_43"),
                     ("zhang2019", "10.1007/978-3-030-32248-9_38"),
                     ("jegou2017", "10.1109/CVPRW.2017.156"), ("nipype", "10.3389/fninf.2011.00013"),
                     ("n4", "10.1109/TMI.2010.2046908"), ("pybids", "10.21105/joss.01294"),
                     ("mni152", "10.1016/j.neuroimage.2010.07.033"), ("pytorch", "1912.01703"),
                     ("simpleitk", "10.3389/fninf.2013.00045")]:
        assert doi in REFERENCES[key]
        assert f"- {REFERENCES[key]}" in text
    for key in ("liu2022", "zhang2019", "jegou2017", "nipype", "pytorch", "simpleitk", "pybids"):
        assert IN_TEXT[key] in text.split("### References")[0]


def test_training_data_is_cited_only_for_the_shipped_model():
    assert "Lesjak" not in methods_text(PREPROC, SUMMARY)
    shipped = methods_text(PREPROC, SUMMARY, shipped_model=True)
    assert "MSLUB" in shipped and "10.1007/s12021-017-9348-7" in shipped


def test_minimum_lesion_size_is_mentioned_when_used():
    text = methods_text(PREPROC, {**SUMMARY, "MinimumLesionSize": 12.5})
    assert "connected components smaller than 12.5 mm³ were removed" in text


@pytest.mark.parametrize("mode, phrase", [("moddrop", "static first layer"),
                                          ("independent", "a fixed set of contrasts")])
def test_each_training_mode_is_described(mode, phrase):
    summary = {**SUMMARY, "Model": {**SUMMARY["Model"], "Mode": mode}}
    assert phrase in methods_text(PREPROC, summary)


def test_test_time_augmentation_is_described_when_used():
    assert "mirror" not in methods_text(PREPROC, SUMMARY)
    plain = {**SUMMARY, "Inference": {"Precision": "fp32", "TestTimeAugmentation": []}}
    assert "mirror" not in methods_text(PREPROC, plain)
    tta = {**SUMMARY, "Inference": {"Precision": "fp32", "TestTimeAugmentation": ["left-right flip"]}}
    assert "left-right mirror (test-time augmentation)" in methods_text(PREPROC, tta)


def test_citation_file_is_written_under_logs(tmp_path):
    path = write_citation(tmp_path, methods_text(PREPROC, SUMMARY))
    assert path == tmp_path / "logs" / "CITATION.md"
    body = path.read_text(encoding="utf-8")
    assert body.startswith("# Methods") and PREPROC in body and REFERENCES["liu2022"] in body
    assert [p.name for p in path.parent.iterdir()] == ["CITATION.md"]  # no temporary left


def test_probability_calibration_is_described_when_applied():
    assert "recalibrated" not in methods_text(PREPROC, SUMMARY)
    calibrated = {**SUMMARY, "Inference": {
        "Precision": "fp32", "TestTimeAugmentation": [],
        "ProbabilityCalibration": {"Method": "logistic", "Scale": 1.6, "Bias": -0.25}}}
    text = methods_text(PREPROC, calibrated)
    assert "recalibrated by the model's logistic map" in text
    assert "scaled by 1.6, shifted by -0.25" in text


def test_an_adapted_model_is_described_with_its_base_and_its_anchor_weights():
    adapted = {**SUMMARY["Model"],
               "AdaptedFrom": {"Name": "default", "Version": "0.1.0", "SHA256": "1" * 64},
               "AdaptedOn": {"Dataset": "a site", "Sessions": ["sub-01"], "LabelsUsed": False}}
    text = methods_text(PREPROC, {**SUMMARY, "Model": adapted})
    assert 'adapted from "default" (version 0.1.0) with bids_mdpp adapt on 1 unlabelled' in text
    assert "Inputs that include FLAIR" not in text
    anchored = {**adapted, "AnchorWeights": {"Contrast": "FLAIR", "SHA256": "2" * 64}}
    text = methods_text(PREPROC, {**SUMMARY, "Model": anchored})
    assert "Inputs that include FLAIR were segmented with the base model's own weights." in text
    assert "contrasts taught the same network" in text  # the network taught alone
    both = {**anchored, "AnchorWeights": {**anchored["AnchorWeights"], "Subsets": ["T1w"]},
            "AdaptedOn": {**adapted["AdaptedOn"], "TeacherIntensityModel": "combine"}}
    text = methods_text(PREPROC, {**SUMMARY, "Model": both})
    assert ("Inputs that include FLAIR, and those of T1w alone, were segmented with the base "
            "model's own weights.") in text
    assert ("contrasts, averaged with the lesion posterior of a Gaussian mixture fitted to that "
            "session's intensities, taught the same network") in text


@pytest.mark.parametrize("weight, phrase", [
    (None, "The network's probability map was then averaged with the lesion posterior"),
    (0.5, "The network's probability map was then averaged with the lesion posterior"),
    (0.0, "The model card gives the network no weight for these contrasts, so the lesion "
          "probability map is the lesion posterior"),
    (0.25, "The network's probability map (weight 0.25) was then combined with (weight 0.75) "
           "the lesion posterior"),
])
def test_the_intensity_model_is_described_with_the_networks_weight(weight, phrase):
    entry = {"Mode": "combine"} if weight is None else {"Mode": "combine", "NetworkWeight": weight}
    text = methods_text(PREPROC, {**SUMMARY, "Inference": {"IntensityModel": entry}})
    assert phrase in text
    assert ("held brighter than white matter on FLAIR, T2w and PDw, or, with T1-weighted images "
            "alone, darker on T1w and ce-T1w (T1w and ce-T1w together were modelled from T1w "
            "alone), and, with one contrast alone, never narrower than grey matter; a voxel "
            "was lesion only where it lay as far "
            "from white matter itself on FLAIR, T2w and PDw and, without FLAIR, not where it was "
            "as dark as cerebrospinal fluid on T1w or ce-T1w (2 grey-matter standard "
            "deviations darker than grey matter)") in text
    assert IN_TEXT["cerri2021"] in text
    assert ("lesion frequency of 27 patients of the MSLUB database (Lesjak et al. 2018) (plus "
            "0.01 times the white-matter probability, so that a lesion is possible anywhere in "
            "white matter; scaled up by the session's own lesion load)") in text
    scaled = methods_text(PREPROC, {**SUMMARY, "Inference": {"IntensityModel": {
        **entry, "LesionPriorScale": 2.874}}})
    assert "scaled up by the session's own lesion load, by 2.87 here)" in scaled
    own = methods_text(PREPROC, {**SUMMARY, "Inference": {"IntensityModel": {
        **entry, "LesionMasks": "26 lesion masks of /data/atlas"}}})
    assert "lesion frequency of 26 lesion masks of /data/atlas (plus 0.01 times" in own
    assert "Gaussian mixture" not in methods_text(
        PREPROC, {**SUMMARY, "Inference": {"IntensityModel": {"Mode": "off"}}})
