"""Discovery: contrasts per participant/session, run choice, filters, labels, reference masks."""
from __future__ import annotations

import json

import pytest
from bids.layout import Query

from bids_mdpp.bids import discover, find_reference_mask, load_bids_filters, strip_label
from bids_mdpp.contrasts import modality_code
from bids_mdpp.errors import NoInputError, UsageError
from bids_builders import write_nifti


def test_real_cross_sectional_layout_finds_four_contrasts_including_ce(shared_data):
    (found,) = discover(shared_data / "mslub-cross")
    assert found.subject == "26" and found.session is None
    assert found.contrasts == ("T1w", "FLAIR", "T2w", "ceT1w")
    assert found.files["ceT1w"].name == "sub-26_ce-gadolinium_T1w.nii.gz"
    assert found.files["T1w"].name == "sub-26_T1w.nii.gz"
    assert modality_code(found.contrasts, ("T1w", "FLAIR", "T2w", "PDw", "ceT1w")) == (1, 1, 1, 0, 1)


def test_real_longitudinal_layout_has_two_sessions(shared_data):
    found = discover(shared_data / "mslub-long")
    assert [(s.subject, s.session) for s in found] == [("01", "1"), ("01", "2")]
    assert all(s.contrasts == ("T1w", "FLAIR", "T2w") for s in found)
    assert [s.key for s in found] == ["sub-01_ses-1", "sub-01_ses-2"]
    (only,) = discover(shared_data / "mslub-long", session_labels=["ses-2"])
    assert only.session == "2"


def test_several_runs_choose_finest_voxel_then_latest_run(bids_factory, tmp_path):
    root = bids_factory(["sub-01/anat/sub-01_run-1_FLAIR.nii.gz", "sub-01/anat/sub-01_run-2_FLAIR.nii.gz",
                         "sub-01/anat/sub-01_T1w.nii.gz"])
    (found,) = discover(root)
    assert found.files["FLAIR"].name == "sub-01_run-2_FLAIR.nii.gz"
    assert [p.name for p in found.candidates["FLAIR"]] == ["sub-01_run-2_FLAIR.nii.gz",
                                                           "sub-01_run-1_FLAIR.nii.gz"]
    # a finer acquisition wins over a later run
    write_nifti(root / "sub-01/anat/sub-01_acq-3D_run-1_T2w.nii.gz", zooms=(1, 1, 1))
    write_nifti(root / "sub-01/anat/sub-01_acq-2D_run-2_T2w.nii.gz", zooms=(1, 1, 4))
    (found,) = discover(root)
    assert found.files["T2w"].name == "sub-01_acq-3D_run-1_T2w.nii.gz"


def test_filter_file_overrides_the_run_rule(bids_factory, tmp_path):
    root = bids_factory(["sub-01/anat/sub-01_run-1_FLAIR.nii.gz", "sub-01/anat/sub-01_run-2_FLAIR.nii.gz"])
    filt = tmp_path / "filter.json"
    filt.write_text(json.dumps({"flair": {"run": 1}}))
    (found,) = discover(root, bids_filters=load_bids_filters(filt))
    assert found.files["FLAIR"].name == "sub-01_run-1_FLAIR.nii.gz"


def test_filter_file_null_and_star(tmp_path):
    filt = tmp_path / "f.json"
    filt.write_text(json.dumps({"T1w": {"acquisition": None, "reconstruction": "*"}}))
    parsed = load_bids_filters(filt)
    assert parsed["T1w"]["acquisition"] is Query.NONE
    assert parsed["T1w"]["reconstruction"] is Query.ANY


@pytest.mark.parametrize("content,problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"dwi": {}}', "unknown contrast 'dwi'"),
    ('{"t1w": 3}', "must be a JSON object"),
])
def test_bad_filter_file_names_the_file(tmp_path, content, problem):
    filt = tmp_path / "bad.json"
    filt.write_text(content)
    with pytest.raises(UsageError, match=problem) as info:
        load_bids_filters(filt)
    assert str(filt) in str(info.value)


def test_pdw_sessions_missing_contrasts_and_unknown_suffixes(bids_factory):
    root = bids_factory([
        "sub-01/ses-a/anat/sub-01_ses-a_PDw.nii.gz",
        "sub-01/ses-a/anat/sub-01_ses-a_T2w.nii.gz",
        "sub-01/ses-b/anat/sub-01_ses-b_FLAIR.nii.gz",
        "sub-01/ses-b/anat/sub-01_ses-b_T2starw.nii.gz",
        "sub-02/anat/sub-02_T2starw.nii.gz",
    ])
    found = {s.key: s for s in discover(root)}
    assert found["sub-01_ses-a"].contrasts == ("T2w", "PDw")
    assert found["sub-01_ses-b"].contrasts == ("FLAIR",)
    assert [p.name for p in found["sub-01_ses-b"].ignored] == ["sub-01_ses-b_T2starw.nii.gz"]
    # a participant with nothing usable is still listed: its own run reports the error
    assert found["sub-02"].files == {} and found["sub-02"].ignored


def test_participant_labels_with_or_without_prefix(bids_factory):
    root = bids_factory(["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-02_T1w.nii.gz",
                         "sub-10/anat/sub-10_T1w.nii.gz"])
    assert [s.subject for s in discover(root, participant_labels=["sub-01", "10"])] == ["01", "10"]
    assert [s.subject for s in discover(root)] == ["01", "02", "10"]


def test_unknown_participant_and_session_are_no_input(bids_factory):
    root = bids_factory(["sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"])
    with pytest.raises(NoInputError, match="sub-99"):
        discover(root, participant_labels=["99"])
    with pytest.raises(NoInputError, match="ses-7"):
        discover(root, session_labels=["7"])


def test_dataset_without_subjects_is_no_input(bids_factory):
    root = bids_factory([])
    with pytest.raises(NoInputError, match="no participant"):
        discover(root)


def test_invalid_label_is_usage_error():
    assert strip_label("sub-01", "sub") == "01"
    with pytest.raises(UsageError, match="alphanumeric"):
        strip_label("sub-0_1", "sub")


def test_reference_mask_spellings(tmp_path):
    deriv = tmp_path / "labels"
    assert find_reference_mask(deriv, "01", None) is None
    roi = write_nifti(deriv / "sub-01/anat/sub-01_label-lesion_roi.nii.gz")
    assert find_reference_mask(deriv, "01", None) == roi
    mask = write_nifti(deriv / "sub-01/anat/sub-01_label-lesion_mask.nii.gz")
    assert find_reference_mask(deriv, "01", None) == mask  # the preferred spelling wins
    manual = write_nifti(deriv / "sub-02/ses-1/anat/sub-02_ses-1_FLAIR_lesion-manual.nii.gz")
    assert find_reference_mask(deriv, "02", "1") == manual
    assert find_reference_mask(deriv, "02", "2") is None


def test_real_reference_mask(shared_data):
    path = find_reference_mask(shared_data / "mslub-cross/derivatives/manual", "26", None)
    assert path is not None and path.name == "sub-26_label-lesion_mask.nii.gz"
