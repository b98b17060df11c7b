"""Output names from entities, BIDS URIs, dataset_description.json and .bidsignore."""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from bids_mdpp import __version__
from bids_mdpp.errors import InputDataError
from bids_mdpp.outputs import (
    BIDSIGNORE,
    bids_uri,
    dataset_description,
    derivative_paths,
    figure_path,
    write_dataset_description,
    xfm_path,
)
from bids_mdpp.session import SessionInputs


def inputs(subject="01", session=None, **files) -> SessionInputs:
    folder = Path("/data") / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    return SessionInputs(subject, session, {c: folder / name for c, name in files.items()})


def names(paths: dict[str, Path], root: Path) -> dict[str, str]:
    return {k: p.relative_to(root).as_posix() for k, p in paths.items()}


def test_names_without_sessions(tmp_path):
    got = names(derivative_paths(tmp_path, inputs(FLAIR="sub-01_FLAIR.nii.gz"), "FLAIR"), tmp_path)
    assert got == {
        "mask": "sub-01/anat/sub-01_label-lesion_mask.nii.gz",
        "mask_json": "sub-01/anat/sub-01_label-lesion_mask.json",
        "probseg": "sub-01/anat/sub-01_label-lesion_probseg.nii.gz",
        "probseg_json": "sub-01/anat/sub-01_label-lesion_probseg.json",
        "stats": "sub-01/anat/sub-01_label-lesion_stats.tsv",
        "stats_json": "sub-01/anat/sub-01_label-lesion_stats.json",
    }


def test_names_with_a_session(tmp_path):
    session = inputs("02", "baseline", T2w="sub-02_ses-baseline_T2w.nii.gz")
    got = names(derivative_paths(tmp_path, session, "T2w"), tmp_path)
    assert got["probseg"] == "sub-02/ses-baseline/anat/sub-02_ses-baseline_label-lesion_probseg.nii.gz"
    assert got["stats_json"] == "sub-02/ses-baseline/anat/sub-02_ses-baseline_label-lesion_stats.json"


def test_acq_rec_run_of_the_reference_are_kept_in_entity_order_and_ce_is_not(tmp_path):
    session = inputs(
        "01", "1",
        FLAIR="sub-01_ses-1_acq-3D_ce-gadolinium_rec-norm_run-02_FLAIR.nii.gz",
        T1w="sub-01_ses-1_acq-mprage_run-5_T1w.nii.gz",
    )
    got = names(derivative_paths(tmp_path, session, "FLAIR"), tmp_path)
    assert got["mask"] == ("sub-01/ses-1/anat/sub-01_ses-1_acq-3D_rec-norm_run-02"
                           "_label-lesion_mask.nii.gz")
    # the moving contrast's entities never enter the names
    xfm = xfm_path(tmp_path, session, "FLAIR", "T1w").relative_to(tmp_path).as_posix()
    assert xfm == ("sub-01/ses-1/anat/sub-01_ses-1_acq-3D_rec-norm_run-02"
                   "_from-T1w_to-FLAIR_mode-image_xfm.txt")


def test_run_only_and_ce_reference(tmp_path):
    session = inputs(ceT1w="sub-01_ce-gad_run-3_T1w.nii.gz")
    got = names(derivative_paths(tmp_path, session, "ceT1w"), tmp_path)
    assert got["mask"] == "sub-01/anat/sub-01_run-3_label-lesion_mask.nii.gz"
    xfm = xfm_path(tmp_path, inputs(T1w="sub-01_T1w.nii.gz", ceT1w="sub-01_ce-gad_T1w.nii.gz"),
                   "T1w", "ceT1w")
    assert xfm.name == "sub-01_from-ceT1w_to-T1w_mode-image_xfm.txt"


def test_figure_names(tmp_path):
    session = inputs("01", "2", FLAIR="sub-01_ses-2_run-1_FLAIR.nii.gz")
    path = figure_path(tmp_path, session, "FLAIR", desc="reg_T1w", suffix="qc", extension=".svg")
    expected = "sub-01/figures/sub-01_ses-2_run-1_desc-regT1w_qc.svg"
    assert path.relative_to(tmp_path).as_posix() == expected


def test_reference_must_be_one_of_the_files(tmp_path):
    with pytest.raises(ValueError, match="reference contrast 'FLAIR' is not among"):
        derivative_paths(tmp_path, inputs(T1w="sub-01_T1w.nii.gz"), "FLAIR")


def test_bids_uris_start_at_the_subject_folder():
    path = Path("/study/rawdata/sub-07/ses-3/anat/sub-07_ses-3_FLAIR.nii.gz")
    assert bids_uri(path, "07") == "bids:raw:sub-07/ses-3/anat/sub-07_ses-3_FLAIR.nii.gz"
    # a dataset that itself lives below a folder named like the subject
    nested = Path("/sub-07/bids/sub-07/anat/sub-07_T1w.nii.gz")
    assert bids_uri(nested, "07") == "bids:raw:sub-07/anat/sub-07_T1w.nii.gz"
    with pytest.raises(InputDataError, match=r"not inside a sub-07/ folder") as err:
        bids_uri(Path("/tmp/sub-07_T1w.nii.gz"), "07")
    assert "/tmp/sub-07_T1w.nii.gz" in str(err.value)


def test_dataset_description_content(tmp_path, monkeypatch):
    monkeypatch.delenv("BIDS_MDPP_CONTAINER", raising=False)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text(json.dumps(
        {"Name": "Study", "BIDSVersion": "1.9.0", "DatasetDOI": "doi:10.1/x"}))
    path = write_dataset_description(tmp_path / "out", bids_dir=raw)
    desc = json.loads(path.read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "bids_mdpp"
    assert desc["GeneratedBy"][0]["Version"] == __version__
    assert "Container" not in desc["GeneratedBy"][0]
    assert desc["SourceDatasets"] == [{"URL": "bids:raw:", "DOI": "doi:10.1/x"}]
    assert desc["DatasetLinks"] == {"raw": raw.resolve().as_uri()}
    assert desc["Name"].endswith("of Study")


@pytest.mark.parametrize("value, env, expected", [
    ("docker", {}, {"Type": "docker"}),
    ("docker:bids/mdpp:0.1.0", {}, {"Type": "docker", "Tag": "bids/mdpp:0.1.0"}),
    ("singularity", {"APPTAINER_CONTAINER": "/images/bids_mdpp-0.1.0.sif"},
     {"Type": "singularity", "Tag": "bids_mdpp-0.1.0.sif"}),
])
def test_container_comes_from_the_environment(tmp_path, monkeypatch, value, env, expected):
    monkeypatch.setenv("BIDS_MDPP_CONTAINER", value)
    for name in ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(name, raising=False)
    for name, setting in env.items():
        monkeypatch.setenv(name, setting)
    assert dataset_description(tmp_path)["GeneratedBy"][0]["Container"] == expected


def test_dataset_description_is_idempotent_and_keeps_bidsignore_lines(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".bidsignore").write_text("extra/\n")
    first = write_dataset_description(out, bids_dir=tmp_path)
    stamp = first.stat().st_mtime_ns
    os.utime(first, ns=(stamp - 10**9, stamp - 10**9))
    write_dataset_description(out, bids_dir=tmp_path)
    assert first.stat().st_mtime_ns == stamp - 10**9  # identical content: not rewritten
    lines = (out / ".bidsignore").read_text().splitlines()
    assert lines[0] == "extra/" and set(BIDSIGNORE) <= set(lines)
    assert len(lines) == len(set(lines))


def test_readme_says_what_the_dataset_holds_and_which_version_wrote_it(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "Study", "BIDSVersion": "1.9.0"}))
    out = tmp_path / "out"
    write_dataset_description(out, bids_dir=raw)
    text = (out / "README.md").read_text()
    assert text.startswith("# bids_mdpp lesion segmentation of Study\n")
    assert f"bids_mdpp {__version__}" in text
    for pattern in ("_label-lesion_mask.nii.gz", "_label-lesion_probseg.nii.gz", "_label-lesion_stats.tsv",
                    "_mode-image_xfm.txt", "CITATION.md"):
        assert pattern in text


def test_readme_of_an_older_run_is_replaced_and_one_of_the_user_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("# bids_mdpp lesion segmentation of Study\n\nwritten by bids_mdpp 0.0.1\n")
    write_dataset_description(out, bids_dir=tmp_path)
    assert __version__ in (out / "README.md").read_text()
    (out / "README.md").write_text("# Our lesion study\n")
    write_dataset_description(out, bids_dir=tmp_path)
    assert (out / "README.md").read_text() == "# Our lesion study\n"
    (out / "README.md").unlink()
    (out / "README.rst").write_text("Our lesion study\n")
    write_dataset_description(out, bids_dir=tmp_path)
    assert not (out / "README.md").exists()


def _write(args):
    out, raw = args
    return write_dataset_description(out, bids_dir=raw).read_text()


def test_parallel_jobs_write_the_same_complete_file(tmp_path):
    out = tmp_path / "out"
    with ProcessPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(_write, [(out, tmp_path)] * 8))
    final = (out / "dataset_description.json").read_text()
    assert all(text == final for text in texts)
    assert json.loads(final)["DatasetType"] == "derivative"
    assert [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".bidsignore"] == []
