"""The participant HTML report: sections, facts, figures embedded, no external resource."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from test_outputs_fakes import MODEL_CARD, SHA, make_session

from bids_mdpp.outputs import write_session_outputs
from bids_mdpp.reports.participant import SessionReport, write_participant_report
from bids_mdpp.session import SessionInputs

PREPROC = "Images were corrected with N4 (Tustison et al. 2010)."
CAUTION = "with only T1w, FLAIR, this model reached DSC 0.12 on a real patient"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    """sub-01 with a finished session 1 (two FLAIR runs, an ignored T2starw) and a failed 2."""
    root = tmp_path_factory.mktemp("report")
    done = make_session(root, session="1", names={"FLAIR": "run-2_FLAIR", "T1w": "T1w"})
    other_run = done.inputs.files["FLAIR"].with_name("sub-01_ses-1_run-1_FLAIR.nii.gz")
    inputs = replace(done.inputs,
                     candidates={**done.inputs.candidates,
                                 "FLAIR": (done.inputs.files["FLAIR"], other_run)},
                     ignored=(done.inputs.files["T1w"].with_name("sub-01_ses-1_T2starw.nii.gz"),))
    out = root / "out"
    outputs = write_session_outputs(out, inputs, done.preproc, done.prob, model_card=MODEL_CARD,
                                    model_sha256=SHA)
    failed = SessionInputs("01", "2", {"T1w": root / "raw/sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz"})
    sessions = [
        SessionReport(inputs, done.preproc, outputs, PREPROC, None, caution=CAUTION),
        SessionReport(failed, error="sub-01_ses-2_T1w.nii.gz: 12 voxels are NaN <oops>"),
    ]
    path = write_participant_report(out, "sub-01", sessions,
                                    command_line="bids_mdpp /raw /out participant")
    return path, path.read_text(encoding="utf-8")


def test_report_is_written_beside_the_subject_folder(report):
    path, _ = report
    assert path.name == "sub-01.html" and (path.parent / "sub-01").is_dir()


def test_sections_are_present(report):
    _, html = report
    for anchor in ("summary", "sub-01_ses-1", "sub-01_ses-2", "about", "methods", "errors"):
        assert f'id="{anchor}"' in html
    assert "Preprocessing checks" in html and "Lesions" in html and "Lesion table" in html


def test_summary_facts(report):
    _, html = report
    text = re.sub(r"<[^>]+>", " ", html)
    text = re.sub(r"\s+", " ", text)
    assert "Contrasts found T1w, FLAIR" in text
    assert "Contrasts used T1w, FLAIR" in text
    assert "Contrasts missing (zero-filled) T2w, PDw, ceT1w" in text
    assert "Modality code 11000 (model order: T1w, FLAIR, T2w, PDw, ceT1w)" in text
    assert "Ignored sub-01_ses-1_T2starw.nii.gz" in text
    assert "Reference contrast FLAIR" in text
    assert "Model tiny 1.2.3 (moddrop++)" in text
    # which run was chosen and why
    assert "sub-01_ses-1_run-2_FLAIR.nii.gz" in text
    assert "2 candidates (finest voxel first, then the latest run" in text
    assert "not used: sub-01_ses-1_run-1_FLAIR.nii.gz" in text


def test_a_low_accuracy_caution_shows_in_its_session_only(report):
    _, html = report
    first, second = html.split('id="sub-01_ses-1"')[1].split('id="sub-01_ses-2"')
    assert f"<strong>Caution:</strong> {CAUTION}." in first
    assert "Caution:" not in second and html.count('class="caution"') == 1


def test_lesion_table_rows(report):
    _, html = report
    table = html.split("Lesion table")[1].split("</table>")[0]
    assert table.count("<tr>") == 3  # header + 2 lesions
    assert "123" in table and "33" in table


def test_figures_are_written_and_embedded(report):
    path, html = report
    figures = sorted(p.name for p in (path.parent / "sub-01" / "figures").iterdir())
    assert figures == [
        "sub-01_ses-1_run-2_desc-brainmask_qc.svg",
        "sub-01_ses-1_run-2_desc-lesions_FLAIR.png",
        "sub-01_ses-1_run-2_desc-lesions_T1w.png",
        "sub-01_ses-1_run-2_desc-probability_FLAIR.png",
        "sub-01_ses-1_run-2_desc-regT1w_qc.svg",
    ]
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 5
    assert all(s.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,")) for s in sources)
    assert "Co-registration of T1w to FLAIR" in html and "Brain mask" in html


def test_report_is_self_contained(report):
    _, html = report
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert "<link" not in html and "<script" not in html
    assert "http://" not in html and "https://" not in html
    assert "<style>" in html


def test_about_methods_and_errors(report):
    _, html = report
    about = html.split('id="about"')[1].split('id="methods"')[0]
    for name in ("bids_mdpp", "PyTorch", "Nipype", "SimpleITK", "PyBIDS", "Python"):
        assert f"<th>{name}</th>" in about
    assert "bids_mdpp /raw /out participant" in about
    methods = html.split('id="methods"')[1]
    assert PREPROC in methods and "Liu et al. 2022" in methods
    assert "doi:10.1007/978-3-031-16443-9_43" in methods
    errors = html.split('id="errors"')[1]
    assert "sub-01 ses-2" in errors
    assert "12 voxels are NaN &lt;oops&gt;" in errors and "<oops>" not in html
    assert "not determined: the session failed" in html


def test_a_report_with_only_failures_has_no_methods(tmp_path):
    inputs = SessionInputs("02", None, {})
    path = write_participant_report(tmp_path, "02", [SessionReport(inputs, error="no usable image")])
    html = path.read_text()
    assert "No session reached the segmentation step." in html
    assert "no usable image" in html and not (tmp_path / "sub-02" / "figures").exists()


def test_a_session_that_failed_after_preprocessing_still_shows_its_checks(tmp_path):
    fake = make_session(tmp_path)
    report = SessionReport(fake.inputs, fake.preproc, None, PREPROC, "the network ran out of memory")
    html = write_participant_report(tmp_path / "out", "01", [report]).read_text()
    assert "Preprocessing checks" in html and "Co-registration of T1w to FLAIR" in html
    assert "Lesion table" not in html and "the network ran out of memory" in html
    assert len(re.findall(r'<img src="data:', html)) == 2
