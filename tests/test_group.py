"""Group level: cohort table, scoring against reference masks, report content, exit 66.

The participant level's outputs are written directly here, following the output contract
(mask + probseg + stats and their sidecars per session), on tiny 24³ grids.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_mdpp.errors import EXIT_NO_INPUT, NoInputError
from bids_mdpp.bids import natural_key
from bids_mdpp.group import qc_columns, run_group
from bids_mdpp.lesions import label_lesions

SHAPE = (24, 24, 24)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])   # 2 mm³ voxels
MODEL = ["T1w", "FLAIR", "T2w", "PDw", "ceT1w"]


def box_mask(*boxes, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for box in boxes:
        mask[box] = 1
    return mask


def write_session(out: Path, subject: str, session: str | None, mask: np.ndarray, *,
                  used=("T1w", "FLAIR"), qc=None, affine=AFFINE, entities="",
                  skip=()) -> Path:
    """Write one session's derivatives per the output contract; returns the mask path."""
    anat = out / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    key = f"sub-{subject}" + (f"_ses-{session}" if session else "") + entities
    _, count = label_lesions(mask, 26)
    volume = float(mask.sum() * abs(np.linalg.det(affine[:3, :3])))
    code = "".join("1" if c in used else "0" for c in MODEL)
    common = {"ModalityCode": code, "ModelContrasts": MODEL, "ContrastsUsed": list(used),
              "ContrastsMissing": [c for c in MODEL if c not in used], "ContrastsIgnored": [],
              "ReferenceContrast": "FLAIR" if "FLAIR" in used else used[0],
              "Model": {"Name": "bids_mdpp-synthetic", "Version": "0.1", "Mode": "moddrop++",
                        "SHA256": "0" * 64}}
    files = {
        "_label-lesion_mask.nii.gz": lambda p: nib.save(
            nib.Nifti1Image(mask.astype(np.uint8), affine), p),
        "_label-lesion_mask.json": lambda p: Path(p).write_text(json.dumps({
            "Type": "Lesion", **common, "Threshold": 0.5, "MinimumLesionSize": 0.0,
            "Connectivity": 26, "LesionCount": count, "TotalLesionVolume": volume,
            "QC": {"EmptyMask": count == 0, **(qc or {})}})),
        "_label-lesion_probseg.nii.gz": lambda p: nib.save(
            nib.Nifti1Image(mask.astype(np.float32) * 0.9, affine), p),
        "_label-lesion_probseg.json": lambda p: Path(p).write_text(json.dumps(common)),
        "_label-lesion_stats.tsv": lambda p: Path(p).write_text("lesion_id\tn_voxels\n"),
        "_label-lesion_stats.json": lambda p: Path(p).write_text("{}"),
    }
    for suffix, write in files.items():
        if suffix not in skip:
            write(str(anat / f"{key}{suffix}"))
    (out / f"sub-{subject}.html").write_text("<html><body>report</body></html>")
    return anat / f"{key}_label-lesion_mask.nii.gz"


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture
def cohort(tmp_path) -> Path:
    """Two participants: sub-01 with sessions 2 and 10 (natural order), sub-02 without sessions."""
    out = tmp_path / "out"
    write_session(out, "01", "10", box_mask(np.s_[2:6, 2:6, 2:6], np.s_[15:17, 15:17, 15:17]),
                  qc={"RegistrationCost": {"T1w": -0.61}})
    write_session(out, "01", "2", box_mask(np.s_[2:5, 2:5, 2:5]),
                  qc={"RegistrationCost": {"T1w": -0.58}})
    write_session(out, "02", None, box_mask(np.s_[8:12, 8:12, 8:10]),
                  used=("FLAIR", "T2w"), entities="_acq-3D")
    return out


def test_cohort_table_rows_columns_and_dictionary(cohort, tmp_path):
    bids = tmp_path / "bids"
    for subject in ("01", "02", "03"):
        (bids / f"sub-{subject}" / "anat").mkdir(parents=True)
    result = run_group(cohort, bids_dir=bids)
    rows = read_tsv(result.lesions_tsv)
    assert [(r["participant_id"], r["session_id"]) for r in rows] == [
        ("sub-01", "ses-2"), ("sub-01", "ses-10"), ("sub-02", "n/a")]
    first = rows[0]
    assert float(first["total_lesion_volume_mm3"]) == pytest.approx(27 * 2.0)
    assert first["lesion_count"] == "1" and rows[1]["lesion_count"] == "2"
    assert first["contrasts_used"] == "T1w,FLAIR"
    assert first["contrasts_missing"] == "T2w,PDw,ceT1w"
    assert first["modality_code"] == "11000" and rows[2]["modality_code"] == "01100"
    assert (first["model"], first["model_version"]) == ("bids_mdpp-synthetic", "0.1")
    assert first["qc_empty_mask"] == "false"
    assert float(first["qc_registration_cost_T1w"]) == pytest.approx(-0.58)
    assert rows[2]["qc_registration_cost_T1w"] == "n/a"
    assert rows[2]["mask_file"] == "sub-02/anat/sub-02_acq-3D_label-lesion_mask.nii.gz"
    dictionary = json.loads((cohort / "group_lesions.json").read_text())
    assert set(dictionary) == set(first)
    assert dictionary["total_lesion_volume_mm3"]["Units"] == "mm^3"
    assert all(entry["Description"] for entry in dictionary.values())
    assert result.not_processed == ("sub-03",)
    assert result.scores_tsv is None and not (cohort / "group_scores.tsv").exists()
    assert result.report == cohort / "group_lesions.html"
    assert not [p for p in cohort.rglob(".*")]   # atomic writes leave no temporary behind


def test_report_links_codes_and_one_longitudinal_line(cohort):
    html = run_group(cohort).report.read_text()
    assert run_group(cohort).report.read_text() == html          # the same on every run
    assert html.count('id="longitudinal-sub-01"') == 2            # volume and count panels
    assert "longitudinal-sub-02" not in html                       # a single session: no line
    assert 'href="sub-01.html"' in html and 'href="sub-02.html"' in html
    assert html.count('<td><a href="sub-01.html">sub-01</a></td>') == 2   # the sessions table
    assert "11000" in html and "01100" in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    for marker in ('src="http', "src='http", 'href="http', "@import", "url(http"):
        assert marker not in html


def test_longitudinal_series_two_points_in_natural_order(cohort):
    import pandas as pd

    from bids_mdpp.reports.group import longitudinal_series

    lesions = pd.read_csv(run_group(cohort).lesions_tsv, sep="\t", na_values="n/a",
                          keep_default_na=False, dtype={"modality_code": str})
    series = longitudinal_series(lesions)
    assert list(series) == ["sub-01"]
    assert [(s, v) for s, v, _ in series["sub-01"]] == [("ses-2", 54.0), ("ses-10", 144.0)]
    assert natural_key("10") > natural_key("2") and natural_key(None) < natural_key("1")


def _save_reference(labels: Path, relative: str, data: np.ndarray, affine=AFFINE) -> Path:
    path = labels / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), path)
    return path


def test_scores_with_labels(cohort, tmp_path, caplog):
    labels = tmp_path / "labels"
    # sub-01 ses-2: the prediction's 3³ cube shifted by one voxel along x (18 voxels shared).
    _save_reference(labels, "sub-01/ses-2/anat/sub-01_ses-2_label-lesion_mask.nii.gz",
                    box_mask(np.s_[3:6, 2:5, 2:5]))
    # sub-01 ses-10: only the first of the two predicted lesions (the second is a false alarm).
    _save_reference(labels, "sub-01/ses-10/anat/sub-01_ses-10_lesion-manual_mask.nii.gz",
                    box_mask(np.s_[2:6, 2:6, 2:6]))
    # sub-02: the same lesion on a 2x finer grid (nearest-neighbour resampling back is exact).
    fine = np.zeros((48, 48, 48), np.uint8)
    fine[16:24, 16:24, 16:20] = 1
    fine_affine = np.diag([0.5, 0.5, 1.0, 1.0])
    fine_affine[:3, 3] = [-0.25, -0.25, -0.5]
    _save_reference(labels, "sub-02/anat/sub-02_acq-3D_label-lesion_roi.nii.gz", fine, fine_affine)
    with caplog.at_level(logging.WARNING, logger="bids_mdpp.group"):
        result = run_group(cohort, labels_dir=labels)
    assert "resampled with nearest neighbour" in caplog.text and "sub-02_acq-3D" in caplog.text
    assert result.unscored == {}
    rows = {(r["participant_id"], r["session_id"]): r for r in read_tsv(result.scores_tsv)}
    assert list(rows) == [("sub-01", "ses-2"), ("sub-01", "ses-10"), ("sub-02", "n/a")]
    shifted, partial, exact = rows.values()
    assert float(shifted["dsc"]) == pytest.approx(2 * 18 / 54)
    assert float(shifted["ppv"]) == pytest.approx(18 / 27)
    assert shifted["reference_resampled"] == "false"
    assert (float(partial["lfpr"]), float(partial["ltpr"])) == (0.5, 1.0)
    assert float(partial["vd"]) == pytest.approx((72 - 64) / 64)
    assert float(exact["dsc"]) == pytest.approx(1.0) and exact["reference_resampled"] == "true"
    assert exact["reference_mask"] == "sub-02/anat/sub-02_acq-3D_label-lesion_roi.nii.gz"
    predicted = [float(r["predicted_volume_mm3"]) for r in rows.values()]
    reference = [float(r["reference_volume_mm3"]) for r in rows.values()]
    assert (predicted, reference) == ([54.0, 144.0, 64.0], [54.0, 128.0, 64.0])
    corr = np.corrcoef(predicted, reference)[0, 1]
    assert [float(r["corr"]) for r in rows.values()] == pytest.approx([corr] * 3)
    assert 0.9 < corr < 1.0
    sc = 2 * 18 / 54 / 8 + 18 / 27 / 8 + (1 - 0) / 4 + 1 / 4 + corr / 4
    assert float(shifted["sc"]) == pytest.approx(sc)
    summary = {r["modality_code"]: r for r in read_tsv(result.summary_tsv)}
    assert list(summary) == ["all", "01100", "11000"]
    assert (summary["all"]["n"], summary["11000"]["n"], summary["01100"]["n"]) == ("3", "2", "1")
    dscs = [2 * 18 / 54, 2 * 64 / (72 + 64), 1.0]
    assert float(summary["all"]["dsc_mean"]) == pytest.approx(np.mean(dscs))
    assert float(summary["all"]["dsc_sd"]) == pytest.approx(np.std(dscs, ddof=1))
    assert float(summary["all"]["corr"]) == pytest.approx(corr)
    assert float(summary["11000"]["corr"]) == pytest.approx(1.0)     # two sessions
    assert summary["01100"]["dsc_sd"] == "n/a" and summary["01100"]["corr"] == "n/a"
    assert summary["01100"]["contrasts_used"] == "FLAIR,T2w"
    dictionary = json.loads((cohort / "group_scores_summary.json").read_text())
    assert set(dictionary) == set(summary["all"])
    assert set(json.loads((cohort / "group_scores.json").read_text())) == set(shifted)
    html = result.report.read_text()
    assert 'id="agreement"' in html and f"Corr = {corr:.3f}" in html


def test_no_results_is_exit_66(tmp_path):
    empty = tmp_path / "out"
    empty.mkdir()
    with pytest.raises(NoInputError, match="no finished participant results") as info:
        run_group(empty)
    assert info.value.exit_code == EXIT_NO_INPUT == 66
    with pytest.raises(NoInputError, match="no such folder"):
        run_group(tmp_path / "absent")


def test_cli_group_without_results_exits_66(tmp_path):
    from bids_mdpp.cli import main

    bids = tmp_path / "bids"
    bids.mkdir()
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit) as info:
        main([str(bids), str(tmp_path / "out"), "group"])
    assert info.value.code == 66


def test_incomplete_and_broken_sessions_are_left_out(tmp_path, caplog):
    out = tmp_path / "out"
    write_session(out, "01", None, box_mask(np.s_[2:5, 2:5, 2:5]))
    write_session(out, "02", None, box_mask(np.s_[2:5, 2:5, 2:5]),
                  skip=("_label-lesion_probseg.nii.gz",))        # a participant still running
    broken = write_session(out, "03", None, box_mask(np.s_[2:5, 2:5, 2:5]))
    sidecar = broken.parent / "sub-03_label-lesion_mask.json"
    sidecar.write_text('{"Type": "Lesion"}')
    with caplog.at_level(logging.WARNING, logger="bids_mdpp.group"):
        result = run_group(out)
    assert [r["participant_id"] for r in read_tsv(result.lesions_tsv)] == ["sub-01"]
    assert "incomplete" in result.excluded["sub-02"]
    assert str(sidecar) in result.excluded["sub-03"]
    assert "lacks ModalityCode" in result.excluded["sub-03"]
    assert "sub-02" in caplog.text and "sub-03" in caplog.text
    assert "sub-03" in result.report.read_text()
    sidecar.write_text("{not json")
    assert "not a readable JSON" in run_group(out).excluded["sub-03"]
    good = json.loads((out / "sub-01/anat/sub-01_label-lesion_mask.json").read_text())
    sidecar.write_text(json.dumps({**good, "ContrastsUsed": "FLAIR", "LesionCount": -1}))
    reason = run_group(out).excluded["sub-03"]
    assert "ContrastsUsed='FLAIR'" in reason and "LesionCount=-1" in reason


def test_only_incomplete_sessions_is_exit_66(tmp_path):
    out = tmp_path / "out"
    write_session(out, "01", None, box_mask(np.s_[2:5, 2:5, 2:5]),
                  skip=("_label-lesion_stats.json",))
    with pytest.raises(NoInputError, match="incomplete"):
        run_group(out)


def test_participant_selection(cohort):
    result = run_group(cohort, participant_labels=["sub-02"])
    assert [r["participant_id"] for r in read_tsv(result.lesions_tsv)] == ["sub-02"]
    result = run_group(cohort, participant_labels=["02", "05"])
    assert result.not_processed == ("sub-05",)
    with pytest.raises(NoInputError, match="for 07"):
        run_group(cohort, participant_labels=["07"])


def test_labels_without_any_reference_is_exit_66(cohort, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    with pytest.raises(NoInputError, match="no reference lesion mask") as info:
        run_group(cohort, labels_dir=labels)
    assert info.value.exit_code == 66


def test_unreadable_reference_is_reported_not_fatal(cohort, tmp_path):
    labels = tmp_path / "labels"
    _save_reference(labels, "sub-02/anat/sub-02_label-lesion_mask.nii.gz",
                    box_mask(np.s_[8:12, 8:12, 8:10]))
    bad = labels / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_label-lesion_mask.nii.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"")
    result = run_group(cohort, labels_dir=labels)
    assert str(bad) in result.unscored["sub-01_ses-2"]
    assert "empty" in result.unscored["sub-01_ses-2"]
    assert "no reference lesion mask" in result.unscored["sub-01_ses-10"]
    html = result.report.read_text()
    assert "Not scored" in html and "sub-01_ses-10" in html
    assert [r["participant_id"] for r in read_tsv(result.scores_tsv)] == ["sub-02"]


def test_newest_mask_wins_when_a_session_has_two(tmp_path, caplog):
    out = tmp_path / "out"
    old = write_session(out, "01", None, box_mask(np.s_[2:5, 2:5, 2:5]), entities="_acq-2D")
    new = write_session(out, "01", None, box_mask(np.s_[2:4, 2:4, 2:4]), entities="_acq-3D")
    os.utime(old, (1_000_000, 1_000_000))
    with caplog.at_level(logging.WARNING, logger="bids_mdpp.group"):
        result = run_group(out)
    assert [s.mask for s in result.sessions] == [new]
    assert old.name in caplog.text


def test_qc_columns_flatten():
    assert qc_columns({"EmptyMask": True, "RegistrationCost": {"T1w": -0.6}, "Notes": [1, 2],
                       "Missing": None}) == {
        "qc_empty_mask": "true", "qc_registration_cost_T1w": -0.6, "qc_notes": "[1, 2]",
        "qc_missing": pytest.approx(math.nan, nan_ok=True)}


# --- the report in a real browser -------------------------------------------------------------

#: Runs in the page after it loaded; writes what it measured into <pre id="check">.
PAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const svgs = [...document.querySelectorAll("main svg")].map(s => s.getBoundingClientRect());
  const out = {
    images: [...document.images].map(i => [i.alt, i.complete && i.naturalWidth]),
    svg_sizes: svgs.map(r => [r.width, r.height]),
    svg_links: [...document.querySelectorAll("main svg a")].map(a =>
      a.getAttribute("href") || a.getAttribute("xlink:href")),
    resources: performance.getEntriesByType("resource").map(e => e.name),
  };
  const pre = document.createElement("pre");
  pre.id = "check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium_measure(html: Path, tmp_path: Path) -> dict:
    """Open a copy of ``html`` (same folder) with :data:`PAGE_CHECK` in headless Chromium."""
    import re
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    probe = html.with_name(".check-" + html.name)
    probe.write_text(html.read_text().replace("</body>", PAGE_CHECK + "</body>"))
    try:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1300,900",
             "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=180, check=False)
    finally:
        probe.unlink()
    match = re.search(r'<pre id="check">(.*?)</pre>', done.stdout, re.S)
    assert match, f"no measurement from chromium (exit {done.returncode}): {done.stderr[-2000:]}"
    import html as html_lib

    return json.loads(html_lib.unescape(match.group(1)))


def test_report_renders_in_chromium(cohort, tmp_path):
    labels = tmp_path / "labels"
    _save_reference(labels, "sub-02/anat/sub-02_label-lesion_mask.nii.gz",
                    box_mask(np.s_[8:12, 8:12, 8:10]))
    _save_reference(labels, "sub-01/ses-2/anat/sub-01_ses-2_label-lesion_mask.nii.gz",
                    box_mask(np.s_[3:6, 2:5, 2:5]))
    report = run_group(cohort, labels_dir=labels).report
    page = chromium_measure(report, tmp_path)
    assert all(width and width > 0 for _, width in page["images"]), page["images"]
    # cohort, modality codes, longitudinal, volume agreement: each drawn with a real size
    assert len(page["svg_sizes"]) == 4
    assert all(w > 200 and h > 150 for w, h in page["svg_sizes"]), page["svg_sizes"]
    links = page["svg_links"]
    assert set(links) == {"sub-01.html", "sub-02.html"}
    # 3 sessions x (volume, count, volume per code, count per code) points, 2 scored points,
    # and the line of sub-01 in 2 panels (matplotlib links a line's path and its markers apart)
    assert len(links) == 3 * 4 + 2 + 2 * 2
    assert page["resources"] == []   # self-contained: nothing else is loaded
