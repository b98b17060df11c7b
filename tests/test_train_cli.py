"""``bids_mdpp train``: options, exit codes, and whole runs on a tiny synthetic BIDS dataset."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_train_support import TINY_NETWORK, normalised_subject, write_bids_dataset

from bids_mdpp.cli import main

QUICK = ("--epochs", "2", "--batch-size", "4", "--crop", "32", "--steps-per-epoch", "2",
         "--omp-nthreads", "1", "--precision", "fp32", "--val-subsets", "full", *TINY_NETWORK)




pytestmark = pytest.mark.usefixtures("restore_process_state")


def run_cli(args, capsys):
    """``bids_mdpp args…`` in-process → (exit code, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four subjects (one with two sessions, one without a mask), T1w/FLAIR/T2w, 40³."""
    root = tmp_path_factory.mktemp("train_bids")
    return write_bids_dataset(
        root, {"01": ("T1w", "FLAIR", "T2w"), "02": ("T1w", "FLAIR"), "03": ("FLAIR", "T2w"),
               "04": ("T1w", "FLAIR", "T2w"), "05": ("FLAIR",)},
        sessions={"04": ["a", "b"]},
        masks={"sub-01", "sub-02", "sub-03", "sub-04_ses-a", "sub-04_ses-b"})


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One work directory for the whole runs: preprocessing happens once per session."""
    return tmp_path_factory.mktemp("train_work")


def test_help_lists_the_options_without_importing_torch():
    probe = ("import sys; from bids_mdpp.cli import main\n"
             "try:\n    main(['train', '--help'])\nexcept SystemExit: pass\n"
             "print(sorted(m for m in ('torch', 'nipype', 'bids') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    for option in ("--labels", "--contrasts", "--mode", "--epochs", "--batch-size", "--resume",
                   "--val-fraction", "--seed", "--device", "--precision", "--work-dir",
                   "--nprocs", "--omp-nthreads", "--participant-label", "--lr", "--decay-epochs",
                   "--steps-per-epoch", "--network-size", "--focal-gamma", "--ssim-weight",
                   "--init-from", "--num-workers", "--single-contrast-p", "--negative-slice-p",
                   "--randomise-p", "--freeze-batchnorm", "torchrun"):
        assert option in result.stdout, option
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("args, code, message", [
    (["--labels", "{tmp}/nowhere"], 66, "nowhere: no such derivatives folder"),
    (["--labels", "{labels}", "--contrasts", "T1w,DWI"], 64, "unknown contrast 'DWI'"),
    (["--labels", "{labels}", "--mode", "independent"], 64, "give it with --contrasts"),
    (["--labels", "{labels}", "--layers-per-block", "4,x"], 64, "--layers-per-block"),
    (["--labels", "{labels}", "--init-from", "{tmp}/none"], 64, "--init-from"),
    (["--labels", "{labels}", "--precision", "fp16", "--device", "cpu"], 64, "CUDA"),
    (["--labels", "{labels}", "--participant-label", "99"], 66, "sub-99"),
    (["--participant-label", "01", "99", "--labels", "{labels}"], 66, "sub-99"),
    (["--labels", "{labels}", "--device", "cuda:7"], 64, "cuda:7"),
    (["--labels", "{empty}"], 66, "no session of"),
    (["--labels", "{labels}", "--single-contrast-p", "1.5"], 64, "--single-contrast-p"),
    (["--labels", "{labels}", "--negative-slice-p", "1"], 64, "--negative-slice-p"),
    (["--labels", "{labels}", "--randomise-p", "1.2"], 64, "--randomise-p"),
    (["--labels", "{labels}", "--freeze-batchnorm"], 64, "--freeze-batchnorm keeps"),
    (["--labels", "{labels}", "--mode", "independent", "--contrasts", "FLAIR",
      "--single-contrast-p", "0.5"], 64, "needs modality drop-out"),
])
def test_bad_usage_exits_with_a_clear_message(dataset, tmp_path, capsys, args, code, message):
    bids, labels = dataset
    empty = tmp_path / "empty_labels"
    empty.mkdir()
    args = [a.format(tmp=tmp_path, labels=labels, empty=empty) for a in args]
    status, err = run_cli(["train", bids, tmp_path / "model", *args], capsys)
    assert status == code, err
    assert message in err


def test_a_bad_reference_mask_is_an_error_naming_it(tmp_path, capsys):
    import nibabel as nib

    bids, labels = write_bids_dataset(tmp_path, {"01": ("FLAIR",)})
    mask = labels / "sub-01" / "anat" / "sub-01_label-lesion_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 40, 3), np.uint8), np.eye(4)), str(mask))
    status, err = run_cli(["train", bids, tmp_path / "model", "--labels", labels, *QUICK], capsys)
    assert status == 65 and "sub-01_label-lesion_mask.nii.gz" in err and "3D" in err


def test_two_epochs_resume_and_a_usable_model(dataset, work, tmp_path, capsys):
    from bids_mdpp.inference import Predictor
    from bids_mdpp.model import load_model

    bids, labels = dataset
    out = tmp_path / "model"
    args = ["train", bids, out, "--labels", labels, "--val-fraction", "0.25", "--seed", "2",
            "-w", work, *QUICK]
    status, err = run_cli(args, capsys)
    assert status == 0, err
    assert "sub-05: skipped, no reference lesion mask" in err
    loaded = load_model(out)
    card = loaded.card
    assert card.contrasts == ("T1w", "FLAIR", "T2w") and card.mode == "moddrop++"
    training = card.training
    split = training["subjects"]
    assert len(split["validation"]) == 1 and not set(split["training"]) & set(split["validation"])
    assert sorted(split["training"] + split["validation"]) == ["01", "02", "03", "04"]
    assert len(training["sessions"]) == 5
    assert all(len(s["mask"]["sha256"]) == 64 and s["inputs"] for s in training["sessions"])
    assert training["sessions"][0]["inputs"]["FLAIR"]["file"].startswith("sub-")
    assert training["command_line"].startswith("bids_mdpp train")
    assert training["epochs"] == 2 and card.metrics["epoch"] in (1, 2)
    assert json.loads((out / "model_card.json").read_text())["name"] == "model"
    caches = sorted(p.name for p in (work / "slabs").iterdir())
    assert caches == ["sub-01", "sub-02", "sub-03", "sub-04_ses-a", "sub-04_ses-b"]
    stamps = {p: p.stat().st_mtime_ns for p in (work / "slabs").rglob("images.npy")}

    volumes, _, brain = normalised_subject(7, ("T1w", "FLAIR"))
    probability = Predictor(loaded, device="cpu").predict(volumes, brain)
    assert probability.shape == brain.shape and probability.max() <= 1

    status, err = run_cli(args, capsys)  # the same OUTPUT_DIR again without --resume
    assert status == 64 and "--resume" in err

    status, err = run_cli([*args[:-len(QUICK)], *QUICK, "--epochs", "3", "--resume"], capsys)
    assert status == 0, err
    assert "Resuming from" in err and "after epoch 2" in err
    assert "reusing the slab cache" in err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    rows = (out / "training" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    assert load_model(out).card.training["epochs"] == 3


@pytest.mark.timeout(600)
def test_two_process_torchrun_writes_one_model(dataset, work, tmp_path):
    bids, labels = dataset
    out = tmp_path / "model"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE"))}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "-m", "bids_mdpp", "train", str(bids), str(out), "--labels", str(labels),
         "--val-fraction", "0.25", "-w", str(work), *QUICK],
        capture_output=True, text=True, env=env, timeout=580)
    assert result.returncode == 0, result.stderr[-4000:]
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["processes"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "model_card.json", "training"]
    logs = list((out / "training" / "logs").glob("*.log"))
    assert len(logs) == 1  # rank 0 alone logs
    assert logs[0].read_text().count("Model written to") == 1
    rows = (out / "training" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3


def test_an_output_folder_that_cannot_be_made_exits_73(dataset, tmp_path, capsys):
    bids, labels = dataset
    (tmp_path / "a_file").write_text("not a folder")
    status, err = run_cli(["train", bids, tmp_path / "a_file" / "model", "--labels", labels],
                          capsys)
    assert status == 73 and "a_file/model" in err
