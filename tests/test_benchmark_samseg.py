"""benchmarks/samseg.py without SAMSEG: options, subsets, errors, and scoring with a fake
``run_samseg`` that writes a ``seg.mgz`` whose lesions (label 99) the test chooses."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from benchmark_scripts import load_script
from bids_builders import write_nifti

from bids_mdpp.metrics import score_masks

SHAPE = (16, 16, 12)
FAKE = """#!{python}
import json, sys
from pathlib import Path
import nibabel as nib
import numpy as np

plan = json.loads(Path({plan!r}).read_text())
with open({calls!r}, "a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
print("fake run_samseg")
if plan.get("exit"):
    print("something went wrong inside SAMSEG", file=sys.stderr)
    sys.exit(plan["exit"])
args = sys.argv[1:]
out = Path(args[args.index("--output") + 1])
out.mkdir(parents=True, exist_ok=True)
first = nib.load(args[args.index("--input") + 1])
affine = np.array(plan.get("affine", first.affine.tolist()))
shape = tuple(plan.get("shape", first.shape[:3]))
seg = np.full(shape, 2, np.int32)
for x0, x1, y0, y1, z0, z1 in plan["lesions"]:
    seg[x0:x1, y0:y1, z0:z1] = 99
nib.save(nib.MGHImage(seg, affine.astype(np.float32)), str(out / "seg.mgz"))
"""


@pytest.fixture(scope="module")
def samseg():
    """The benchmark script imported as a module."""
    module = load_script("samseg")
    yield module
    sys.modules.pop("samseg", None)


@pytest.fixture
def dataset(tmp_path) -> Path:
    """sub-01 with T1w, FLAIR and ce-T1w and a reference mask of two boxes; sub-02 with T1w
    and no reference."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0", "DatasetType": "raw"}))
    for i, rel in enumerate(["sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_FLAIR.nii.gz",
                             "sub-01/anat/sub-01_ce-gadolinium_T1w.nii.gz",
                             "sub-02/anat/sub-02_T1w.nii.gz"]):
        write_nifti(root / rel, shape=SHAPE, seed=i)
    write_nifti(root / "derivatives/manual/sub-01/anat/sub-01_label-lesion_mask.nii.gz",
                reference_mask().astype(np.uint8))
    return root


def reference_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[2:5, 2:5, 2:5] = True       # 27 voxels, found by the fake
    mask[10:12, 10:12, 8:10] = True  # 8 voxels, missed
    return mask


@pytest.fixture
def venv(tmp_path):
    """A fake SAMSEG environment: ``venv.plan(lesions=[...], ...)`` sets what its run_samseg
    writes, ``venv.calls()`` lists the argument lists it was called with."""
    root = tmp_path / "samseg-venv"
    (root / "bin").mkdir(parents=True)
    (root / "lib/python3.11/site-packages/samseg-0.4a0.dist-info").mkdir(parents=True)
    (root / "lib/python3.11/site-packages/numpy-1.26.4.dist-info").mkdir(parents=True)
    plan, calls = tmp_path / "plan.json", tmp_path / "calls.txt"
    script = root / "bin" / "run_samseg"
    script.write_text(FAKE.format(python=sys.executable, plan=str(plan), calls=str(calls)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)

    class Venv:
        path = root

        @staticmethod
        def plan(**values):
            plan.write_text(json.dumps(values))

        @staticmethod
        def calls():
            return ([json.loads(line) for line in calls.read_text().splitlines()]
                    if calls.exists() else [])

    Venv.plan(lesions=[[2, 5, 2, 5, 2, 5], [13, 15, 13, 15, 1, 3]])
    return Venv


def run(samseg, venv, dataset, tmp_path, *extra):
    output = tmp_path / "result.json"
    code = samseg.main(["--samseg-venv", str(venv.path), "--data", str(dataset),
                        "--work", str(tmp_path / "work"), "--output", str(output), *extra])
    return code, (json.loads(output.read_text()) if output.exists() else None)


# --- options and subsets ----------------------------------------------------------------------

def test_defaults(samseg, monkeypatch):
    monkeypatch.delenv("SAMSEG_VENV", raising=False)
    args = samseg.parse_args([])
    assert args.samseg_venv == Path("/opt/samseg-venv")
    assert args.threads == 1
    assert args.labels == args.data / "derivatives" / "manual"
    subsets = samseg.parse_subsets(args.subsets)
    assert len(subsets) == 15
    assert subsets[0] == ("T1w", "FLAIR", "T2w", "ceT1w")
    assert subsets[-4:] == [("T1w",), ("FLAIR",), ("T2w",), ("ceT1w",)]
    assert len(set(subsets)) == 15
    monkeypatch.setenv("SAMSEG_VENV", "/somewhere/else")
    assert samseg.parse_args([]).samseg_venv == Path("/somewhere/else")
    assert samseg.parse_args(["--samseg-venv", "/x"]).samseg_venv == Path("/x")


def test_threads_must_be_positive(samseg, capsys):
    with pytest.raises(SystemExit):
        samseg.parse_args(["--threads", "0"])
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_subsets_keep_the_order_given_in_canonical_spelling(samseg):
    assert samseg.parse_subsets("FLAIR, t1w ,FLAIR+T1w,ce-T1w+t2w+flair+T1w") == [
        ("FLAIR",), ("T1w",), ("T1w", "FLAIR"), ("T1w", "FLAIR", "T2w", "ceT1w")]
    with pytest.raises(samseg.BenchmarkError, match="subset 'T1w\\+DWI'.*unknown contrast 'DWI'"):
        samseg.parse_subsets("T1w+DWI")
    with pytest.raises(samseg.BenchmarkError, match="no subset"):
        samseg.parse_subsets(" , ")


def test_command_lesion_mask_pattern_and_pallidum(samseg, tmp_path):
    script = tmp_path / "run_samseg"
    images = {"T1w": Path("/d/t1.nii.gz"), "FLAIR": Path("/d/flair.nii.gz"),
              "T2w": Path("/d/t2.nii.gz"), "ceT1w": Path("/d/ce.nii.gz")}
    command = samseg.samseg_command(script, images, tmp_path / "out", 3)
    assert command == [str(script), "--input", "/d/t1.nii.gz", "/d/flair.nii.gz",
                       "/d/t2.nii.gz", "/d/ce.nii.gz", "--output", str(tmp_path / "out"),
                       "--threads", "3", "--lesion", "--lesion-mask-pattern", "0", "1", "1", "0",
                       "--pallidum-separate"]
    t1_only = samseg.samseg_command(script, {"T1w": images["T1w"]}, tmp_path / "out", 1)
    assert t1_only[-2:] == ["--lesion-mask-pattern", "0"]


def test_installed_versions_read_from_dist_info(samseg, venv):
    assert samseg.installed_versions(venv.path) == {
        "samseg": "0.4a0", "tensorflow-cpu": None, "tensorflow": None, "numpy": "1.26.4"}


# --- errors -----------------------------------------------------------------------------------

def test_missing_venv_is_named(samseg, dataset, tmp_path, capsys):
    missing = tmp_path / "no-venv"
    code = samseg.main(["--samseg-venv", str(missing), "--data", str(dataset),
                        "--output", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{missing}: SAMSEG virtual environment does not exist" in err
    assert "pip install samseg tensorflow-cpu" in err
    assert not (tmp_path / "r.json").exists()


def test_missing_or_unusable_run_samseg_is_named(samseg, venv):
    script = venv.path / "bin" / "run_samseg"
    script.chmod(0o644)
    with pytest.raises(samseg.BenchmarkError, match=f"{script}: run_samseg is not executable"):
        samseg.run_samseg_path(venv.path)
    script.unlink()
    with pytest.raises(samseg.BenchmarkError,
                       match=f"{script}: no run_samseg in the SAMSEG virtual environment"):
        samseg.run_samseg_path(venv.path)


def test_unknown_subset_fails_before_any_run(samseg, venv, dataset, tmp_path, capsys):
    code, _ = run(samseg, venv, dataset, tmp_path, "--subsets", "FLAIR,T1w+SWI")
    assert code == 1
    assert "unknown contrast 'SWI'" in capsys.readouterr().err
    assert venv.calls() == []


def test_missing_data_and_labels_are_named(samseg, venv, dataset, tmp_path, capsys):
    code, _ = run(samseg, venv, tmp_path / "nothing", tmp_path)
    assert code == 1
    assert f"{tmp_path / 'nothing'}: BIDS dataset does not exist" in capsys.readouterr().err
    code = samseg.main(["--samseg-venv", str(venv.path), "--data", str(dataset), "--labels",
                        str(tmp_path / "labels"), "--output", str(tmp_path / "r.json")])
    assert code == 1
    assert f"{tmp_path / 'labels'}: labels directory does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty-labels"
    empty.mkdir()
    code = samseg.main(["--samseg-venv", str(venv.path), "--data", str(dataset), "--labels",
                        str(empty), "--output", str(tmp_path / "r.json")])
    assert code == 1
    assert f"{empty}: no reference lesion mask for any session" in capsys.readouterr().err


def test_subset_missing_from_the_data_fails_before_any_run(samseg, venv, dataset, tmp_path,
                                                          capsys):
    code, _ = run(samseg, venv, dataset, tmp_path, "--subsets", "FLAIR,T1w+T2w")
    err = capsys.readouterr().err
    assert code == 1
    assert f"subset T1w+T2w: no labelled session of {dataset} has a T2w image" in err
    assert venv.calls() == []


def test_failed_run_reports_its_log(samseg, venv, dataset, tmp_path, capsys):
    venv.plan(exit=3, lesions=[])
    code, _ = run(samseg, venv, dataset, tmp_path, "--subsets", "FLAIR")
    err = capsys.readouterr().err
    assert code == 1
    assert "exited with code 3" in err
    assert "something went wrong inside SAMSEG" in err
    assert str(tmp_path / "work" / "FLAIR" / "sub-01" / "samseg.log") in err


# --- running and scoring ----------------------------------------------------------------------

def test_scores_with_the_group_metrics(samseg, venv, dataset, tmp_path, capsys):
    code, result = run(samseg, venv, dataset, tmp_path, "--subsets", "FLAIR,T1w+FLAIR+ceT1w",
                       "--threads", "2")
    assert code == 0, capsys.readouterr().err
    assert result["complete"] is True and "running" not in result
    assert result["samseg_version"] == "0.4a0"
    assert list(result["subsets"]) == ["FLAIR", "T1w+FLAIR+ceT1w"]
    predicted = np.zeros(SHAPE, bool)
    predicted[2:5, 2:5, 2:5] = True
    predicted[13:15, 13:15, 1:3] = True
    expected = score_masks(predicted, reference_mask(), 1.0)
    for name, entry in result["subsets"].items():
        assert entry["n_sessions"] == 1
        (record,) = entry["sessions"]
        assert record["participant_id"] == "sub-01" and record["session_id"] is None
        for score in ("dsc", "ppv", "tpr", "lfpr", "ltpr", "vd"):
            assert entry[score] == pytest.approx(getattr(expected, score), abs=1e-4)
            assert record[score] == pytest.approx(getattr(expected, score))
        assert record["predicted_volume_mm3"] == 35.0 and record["reference_volume_mm3"] == 35.0
        assert entry["false_positive_away_mm3"] == 8.0  # the 2×2×2 box far from both lesions
        assert record["samseg_resampled"] is False and record["rescored_only"] is False
        assert entry["seconds"] >= 0 and entry["peak_rss_mib"] > 0
        assert "--threads 2" in record["command"]
    assert expected.dsc == pytest.approx(54 / 70)
    first, second = venv.calls()
    assert first[first.index("--lesion-mask-pattern") + 1:] == ["1", "--pallidum-separate"]
    assert second[second.index("--lesion-mask-pattern") + 1:] == [
        "0", "1", "0", "--pallidum-separate"]
    assert [Path(p).name for p in second[1:4]] == [
        "sub-01_T1w.nii.gz", "sub-01_FLAIR.nii.gz", "sub-01_ce-gadolinium_T1w.nii.gz"]
    assert len(result["load_average_start"]) == 3 and len(result["load_average_end"]) == 3
    assert result["command_line"].startswith("python benchmarks/samseg.py --samseg-venv")
    assert "FLAIR: DSC 0.7714" in capsys.readouterr().out


def test_existing_output_is_only_rescored(samseg, venv, dataset, tmp_path):
    code, first = run(samseg, venv, dataset, tmp_path, "--subsets", "FLAIR")
    assert code == 0 and len(venv.calls()) == 1
    code, again = run(samseg, venv, dataset, tmp_path, "--subsets", "FLAIR,T1w", "--threads", "4")
    assert code == 0
    assert len(venv.calls()) == 2                     # only T1w ran
    reused = again["subsets"]["FLAIR"]["sessions"][0]
    assert reused["rescored_only"] is True
    assert reused["seconds"] == first["subsets"]["FLAIR"]["sessions"][0]["seconds"]
    assert again["subsets"]["FLAIR"]["dsc"] == first["subsets"]["FLAIR"]["dsc"]
    assert again["subsets"]["T1w"]["sessions"][0]["rescored_only"] is False
    # an unfinished run (no run.json) is redone
    (tmp_path / "work" / "FLAIR" / "sub-01" / "run.json").unlink()
    code, _ = run(samseg, venv, dataset, tmp_path, "--subsets", "FLAIR")
    assert code == 0 and len(venv.calls()) == 3


def test_partial_results_are_written_as_subsets_finish(samseg, venv, dataset, tmp_path,
                                                      monkeypatch):
    output = tmp_path / "result.json"
    args = samseg.parse_args(["--samseg-venv", str(venv.path), "--data", str(dataset),
                              "--work", str(tmp_path / "work"), "--output", str(output),
                              "--subsets", "FLAIR,T1w"])
    args.work = args.work.absolute()
    real_run = samseg.run_samseg

    def run_then_fail(command, out_dir, threads):
        if "T1w" in out_dir.parent.name:
            raise samseg.BenchmarkError("stopped")
        return real_run(command, out_dir, threads)

    monkeypatch.setattr(samseg, "run_samseg", run_then_fail)
    with pytest.raises(samseg.BenchmarkError, match="stopped"):
        samseg.benchmark(args)
    partial = json.loads(output.read_text())
    assert partial["complete"] is False
    assert list(partial["subsets"]) == ["FLAIR"]
    assert partial["running"]["subset"] == "T1w" and partial["running"]["session"] == "sub-01"


def test_a_first_run_that_fails_still_leaves_where_it_stopped(samseg, venv, dataset, tmp_path):
    venv.plan(exit=1, lesions=[])
    code, result = run(samseg, venv, dataset, tmp_path, "--subsets", "FLAIR")
    assert code == 1
    assert result["complete"] is False and result["subsets"] == {}
    assert result["running"]["subset"] == "FLAIR"
    assert result["samseg_version"] == "0.4a0" and len(result["load_average_start"]) == 3


def test_segmentation_on_another_grid_is_resampled(samseg, venv, dataset, tmp_path):
    # SAMSEG's grid at 2 mm: its voxel [1:3, 1:3, 1:3] covers reference voxels [2:6, 2:6, 2:6]
    venv.plan(lesions=[[1, 3, 1, 3, 1, 3]], shape=[8, 8, 6],
              affine=np.diag([2.0, 2.0, 2.0, 1.0]).tolist())
    code, result = run(samseg, venv, dataset, tmp_path, "--subsets", "FLAIR")
    assert code == 0
    record = result["subsets"]["FLAIR"]["sessions"][0]
    assert record["samseg_resampled"] is True
    assert record["predicted_volume_mm3"] == 64.0
    assert record["tpr"] == pytest.approx(27 / 35)
    assert record["ppv"] == pytest.approx(27 / 64)


def test_threads_reach_the_environment(samseg, venv, dataset, tmp_path, monkeypatch):
    seen = {}
    real_popen = samseg.subprocess.Popen

    def popen(command, **kwargs):
        seen.update(kwargs["env"])
        return real_popen(command, **kwargs)

    monkeypatch.setattr(samseg.subprocess, "Popen", popen)
    code, _ = run(samseg, venv, dataset, tmp_path, "--subsets", "FLAIR", "--threads", "3")
    assert code == 0
    assert all(seen[name] == "3" for name in samseg.THREAD_VARIABLES)
    assert seen.get("PATH") == os.environ.get("PATH")
