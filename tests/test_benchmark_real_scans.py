"""benchmarks/real_scans.py without networks: subset datasets, group scores, card update, errors."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_group import box_mask, write_session

from bids_mdpp.group import run_group
from bids_mdpp.model import CARD_NAME, DEFAULT_MODEL_DIR, read_card

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_scans.py"
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


@pytest.fixture(scope="module")
def real_scans():
    """The benchmark script imported as a module."""
    spec = importlib.util.spec_from_file_location("real_scans", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_scans"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("real_scans", None)


@pytest.fixture
def dataset(bids_factory) -> Path:
    """sub-01 (no sessions) with T1w, ce-T1w and FLAIR; sub-02 ses-1 with T1w only; sidecars."""
    root = bids_factory([
        "sub-01/anat/sub-01_T1w.nii.gz",
        "sub-01/anat/sub-01_ce-gadolinium_T1w.nii.gz",
        "sub-01/anat/sub-01_FLAIR.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz",
    ])
    for image in root.rglob("*.nii.gz"):
        image.with_name(image.name.removesuffix(".nii.gz") + ".json").write_text(
            json.dumps({"RepetitionTime": 2.0}))
    (root / "derivatives" / "manual" / "sub-01" / "anat").mkdir(parents=True)
    (root / "sub-01" / "sub-01_scans.tsv").write_text("filename\n")
    return root


def built_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


def test_parse_subsets_canonical_names(real_scans):
    assert real_scans.parse_subsets("FLAIR+T1w, ce-T1w+t2w,T1w+FLAIR,,FLAIR") == [
        ("T1w", "FLAIR"), ("T2w", "ceT1w"), ("FLAIR",)]
    with pytest.raises(real_scans.BenchmarkError,
                       match="subset 'T1w\\+DWI'.*unknown contrast 'DWI'"):
        real_scans.parse_subsets("T1w+DWI")


def test_subset_dataset_holds_only_the_subset_and_its_sidecars(real_scans, dataset, tmp_path):
    sessions = real_scans.session_images(dataset)
    assert set(sessions) == {"sub-01", "sub-02_ses-1"}
    keys = real_scans.sessions_with_subset(sessions, ("FLAIR",), dataset)
    assert keys == ["sub-01"]
    dest = tmp_path / "subset"
    dest.mkdir()
    (dest / "stale.txt").write_text("from an earlier run")
    linked = real_scans.build_subset_dataset(dataset, sessions, keys, ("FLAIR",), dest)
    assert built_files(dest) == {
        "dataset_description.json", "participants.tsv",
        "sub-01/anat/sub-01_FLAIR.nii.gz", "sub-01/anat/sub-01_FLAIR.json"}
    assert {p.as_posix() for p in linked} == built_files(dest)
    assert (dest / "sub-01/anat/sub-01_FLAIR.nii.gz").resolve() == (
        dataset / "sub-01/anat/sub-01_FLAIR.nii.gz").resolve()
    sidecar = dest / "sub-01/anat/sub-01_FLAIR.json"
    assert json.loads(sidecar.read_text()) == {"RepetitionTime": 2.0}


def test_t1w_subset_leaves_contrast_enhanced_t1w_out(real_scans, dataset, tmp_path):
    sessions = real_scans.session_images(dataset)
    keys = real_scans.sessions_with_subset(sessions, ("T1w",), dataset)
    assert keys == ["sub-01", "sub-02_ses-1"]
    dest = tmp_path / "t1w"
    real_scans.build_subset_dataset(dataset, sessions, keys, ("T1w",), dest)
    images = {p for p in built_files(dest) if p.startswith("sub-")}
    assert images == {"sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_T1w.json",
                      "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz",
                      "sub-02/ses-1/anat/sub-02_ses-1_T1w.json"}
    ce = tmp_path / "ce"
    real_scans.build_subset_dataset(dataset, sessions, ["sub-01"], ("ceT1w",), ce)
    assert {p for p in built_files(ce) if p.startswith("sub-")} == {
        "sub-01/anat/sub-01_ce-gadolinium_T1w.nii.gz", "sub-01/anat/sub-01_ce-gadolinium_T1w.json"}


def test_subset_with_a_contrast_no_session_has(real_scans, dataset):
    sessions = real_scans.session_images(dataset)
    with pytest.raises(real_scans.BenchmarkError) as info:
        real_scans.sessions_with_subset(sessions, ("T1w", "T2w"), dataset)
    assert "T2w" in str(info.value) and str(dataset) in str(info.value)


def test_missing_folders_are_named(real_scans, dataset, tmp_path):
    model, labels = DEFAULT_MODEL_DIR, dataset / "derivatives" / "manual"
    for args, missing in (((tmp_path / "no-model", dataset, labels), "no-model"),
                          ((model, tmp_path / "no-data", labels), "no-data"),
                          ((model, dataset, tmp_path / "no-labels"), "no-labels")):
        with pytest.raises(real_scans.BenchmarkError,
                           match=f"{tmp_path / missing}: .* does not exist"):
            real_scans.check_inputs(*args)


def test_main_reports_a_missing_labels_folder(real_scans, dataset, tmp_path, capsys):
    output = tmp_path / "result.json"
    code = real_scans.main(["--data", str(dataset), "--labels", str(tmp_path / "nowhere"),
                            "--work", str(tmp_path / "work"), "--output", str(output)])
    assert code == 1
    assert f"{tmp_path / 'nowhere'}: labels directory does not exist" in capsys.readouterr().err
    assert not output.exists()


def test_failed_command_raises_with_its_stderr_tail(real_scans, tmp_path):
    failing = [sys.executable, "-c",
               "import sys; [print(f'line {i}', file=sys.stderr) for i in range(100)]; sys.exit(3)"]
    with pytest.raises(real_scans.BenchmarkError) as info:
        real_scans.run_command(failing, tmp_path / "logs" / "failing.log")
    message = str(info.value)
    assert "exited with code 3" in message and "line 99" in message and "line 10\n" not in message
    assert "line 0" in (tmp_path / "logs" / "failing.log").read_text()


def test_participant_command_uses_the_card_thresholds(real_scans, tmp_path):
    command = real_scans.participant_command(tmp_path / "bids", tmp_path / "out", tmp_path / "w",
                                             tmp_path / "model", None)
    assert command[-10:] == [str(tmp_path / "bids"), str(tmp_path / "out"), "participant",
                             "--model", str(tmp_path / "model"), "-w", str(tmp_path / "w"),
                             "--notrack", "--intensity-model", "combine"]
    assert "--threshold" not in command
    assert "--tta" not in command
    assert real_scans.participant_command(tmp_path / "bids", tmp_path / "out", tmp_path / "w",
                                          tmp_path / "model", 2, tta=True)[-3:] == ["--nprocs", "2", "--tta"]
    assert real_scans.participant_command(tmp_path / "bids", tmp_path / "out", tmp_path / "w",
                                          tmp_path / "model", None, intensity_model="off")[-2:] == [
        "--intensity-model", "off"]


def group_outputs(tmp_path: Path, threshold: float = 0.35) -> Path:
    """Participant outputs of two sessions and their group level scored against references."""
    out, labels = tmp_path / "out", tmp_path / "labels"
    predicted = {("01", None): box_mask(np.s_[2:6, 2:6, 2:6]),
                 ("02", "1"): np.zeros((24, 24, 24), np.uint8)}
    for (subject, session), mask in predicted.items():
        write_session(out, subject, session, mask, used=("FLAIR",))
        sidecar = next(out.glob(f"sub-{subject}/**/*_label-lesion_mask.json"))
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "Threshold": threshold}))
        anat = labels / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
        anat.mkdir(parents=True)
        key = f"sub-{subject}" + (f"_ses-{session}" if session else "")
        nib.save(nib.Nifti1Image(box_mask(np.s_[2:6, 2:6, 2:4]), AFFINE),
                 str(anat / f"{key}_label-lesion_mask.nii.gz"))
    run_group(out, labels_dir=labels)
    return out


def test_group_scores_are_read_per_session(real_scans, tmp_path):
    sessions = real_scans.read_group_scores(group_outputs(tmp_path))
    assert [(s["participant_id"], s["session_id"]) for s in sessions] == [
        ("sub-01", None), ("sub-02", "ses-1")]
    first, second = sessions
    assert first["contrasts_used"] == ["FLAIR"] and first["threshold"] == 0.35
    assert first["dsc"] == pytest.approx(2 * 32 / (64 + 32))
    assert first["tpr"] == 1.0 and first["ppv"] == 0.5 and first["vd"] == 1.0
    assert second["dsc"] == 0.0 and second["ppv"] is None and second["lfpr"] is None
    means = real_scans.mean_scores(sessions)
    assert means["dsc"] == pytest.approx(first["dsc"] / 2)
    assert means["ppv"] == 0.5 and means["lfpr"] == 0.0
    assert real_scans.subset_threshold(sessions) == 0.35
    assert real_scans.mean_scores([{"ppv": None}])["ppv"] is None


def test_calibration_and_false_positive_views_per_session(real_scans, tmp_path):
    out = group_outputs(tmp_path)
    first, second = real_scans.read_group_scores(out, tmp_path / "labels")
    # sub-01: 64 voxels at 0.9, half of them reference lesion; z = 4, 5 lie 2 and 4 mm (2 mm
    # slices) from the reference, so the 16 voxels at z = 5 are false positives away from it
    assert first["ece_brain"] == pytest.approx(0.4) and first["ece_lesion_region"] == pytest.approx(0.4)
    assert first["median_probability_in_lesions"] == pytest.approx(0.9)
    assert first["false_positive_away_mm3"] == pytest.approx(16 * 2.0)
    assert sorted(first["reliability_lesion_region"]["counts"])[-2:] == [0, 64]
    # sub-02: nothing predicted: no brain voxel to calibrate, the lesion region is all miss
    assert second["ece_brain"] is None and second["ece_lesion_region"] == pytest.approx(1.0)
    assert second["median_probability_in_lesions"] == 0.0 and second["false_positive_away_mm3"] == 0.0
    means = real_scans.mean_scores([first, second])
    assert means["ece_brain"] == pytest.approx(0.4) and means["ece_lesion_region"] == pytest.approx(0.7)
    assert "ece_brain" not in real_scans.read_group_scores(out)[0], "views need the labels"


def benchmark_result(model_dir: Path) -> dict:
    session = {"participant_id": "sub-26", "session_id": None}
    subsets = {
        "FLAIR": {"dsc": 0.560412, "ppv": 0.68384, "tpr": 0.47477, "lfpr": 0.733333,
                  "ltpr": 0.421052, "vd": 0.30571, "threshold": 0.5, "sessions": [session]},
        "T1w": {"dsc": 0.0, "ppv": None, "tpr": 0.0, "lfpr": None, "ltpr": 0.0, "vd": 1.0,
                "threshold": 0.3, "sessions": [session]},
        "PDw": {"dsc": 0.1, "ppv": 0.1, "tpr": 0.1, "lfpr": 0.1, "ltpr": 0.1, "vd": 0.1,
                "threshold": 0.5, "sessions": [session]},
    }
    return {"model": str(model_dir), "subsets": subsets,
            "paper_table_1_moddrop++_dsc": {"FLAIR": 0.693, "T1w": 0.324, "PDw": None}}


def test_card_update_replaces_real_scans_only(real_scans, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(DEFAULT_MODEL_DIR / CARD_NAME, model_dir / CARD_NAME)
    before = json.loads((model_dir / CARD_NAME).read_text())
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "mslub-cross"
    real_scans.write_card_section(model_dir, benchmark_result(model_dir), data,
                                  data / "derivatives" / "manual")
    after = json.loads((model_dir / CARD_NAME).read_text())
    section = after["metrics"].pop("real_scans")
    before["metrics"].pop("real_scans")
    assert after == before
    assert list(section) == ["intensity_model", "data", "reference", "procedure", "dsc",
                             "thresholds", "scores", "paper_table_1_moddrop++_dsc"]
    assert section["intensity_model"] == "off"  # a result that does not say: the network alone
    assert section["dsc"] == {"FLAIR": 0.5604, "T1w": 0.0, "PDw": 0.1}
    assert section["thresholds"] == {"FLAIR": 0.5, "T1w": 0.3, "PDw": 0.5}
    assert section["scores"]["FLAIR"] == {"dsc": 0.5604, "ppv": 0.6838, "tpr": 0.4748,
                                          "lfpr": 0.7333, "ltpr": 0.4211, "vd": 0.3057}
    assert section["scores"]["T1w"]["ppv"] is None
    assert section["paper_table_1_moddrop++_dsc"] == {"FLAIR": 0.693, "T1w": 0.324, "PDw": None}
    assert section["data"].startswith("mslub-cross sub-26")
    assert "derivatives/manual" in section["reference"]
    assert "card's threshold" in section["procedure"]
    assert read_card(model_dir / CARD_NAME).real_scan_dsc(["FLAIR"]) == 0.5604

    # measured with the intensity model: only a run with it reads these numbers
    real_scans.write_card_section(model_dir, {**benchmark_result(model_dir),
                                              "intensity_model": "combine"},
                                  data, data / "derivatives" / "manual")
    card = read_card(model_dir / CARD_NAME)
    assert card.metrics["real_scans"]["intensity_model"] == "combine"
    assert card.real_scan_dsc(["PDw"], intensity_model="combine") == 0.1
    assert card.real_scan_dsc(["PDw"]) is None


def test_card_texts_for_another_dataset(real_scans, dataset):
    result = {"subsets": {"FLAIR": {**dict.fromkeys(real_scans.SCORES, 0.5), "threshold": 0.5,
                                    "sessions": [
        {"participant_id": "sub-01", "session_id": None},
        {"participant_id": "sub-02", "session_id": "ses-1"}]}},
        "paper_table_1_moddrop++_dsc": {"FLAIR": 0.693}}
    previous = {"data": "mslub-cross sub-26 (a note about that patient)"}
    section = real_scans.card_section(result, previous, dataset, dataset / "derivatives" / "manual")
    assert section["data"] == f"{dataset.name} sub-01, sub-02_ses-1 (tiny)"
    assert section["reference"] == "reference lesion masks (derivatives/manual)"
    assert "mean over 2 sessions" in section["procedure"]


def test_paper_values_from_the_card_then_from_table_1(real_scans):
    card = {"paper_table_1_moddrop++_dsc": {"FLAIR": 0.693}}
    assert real_scans.paper_moddrop_pp_dsc(["FLAIR", "T2w+ceT1w", "PDw"], card) == {
        "FLAIR": 0.693, "T2w+ceT1w": 0.458, "PDw": None}
