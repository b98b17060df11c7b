"""End to end: ``bids_mdpp BIDS OUT participant`` with a tiny model on downsampled real scans.

The model card asks for a 4 mm grid so that preprocessing and inference take seconds; every
stage (discovery, checks, Nipype preprocessing, the network, outputs, report) is the product's.
"""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_to_output

from bids_builders import write_nifti
from bids_mdpp.cli import main

TINY = {"n_contrasts": 4, "growth_rate": 4, "down_blocks": (1, 1), "up_blocks": (1, 1),
        "bottleneck_layers": 1, "first_conv_channels": 8, "dynamic_head": True}
CROSS_NAMES = {"T1w": "T1w", "FLAIR": "FLAIR", "T2w": "T2w", "ceT1w": "ce-gadolinium_T1w"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    from bids_mdpp.model import ModelCard, save_model
    from bids_mdpp.nn import build_network

    torch.manual_seed(0)
    card = ModelCard(name="tiny-test", version="0", contrasts=("T1w", "FLAIR", "T2w", "ceT1w"),
                     mode="moddrop+", network=dict(TINY), grid_mm=4.0,
                     description="random weights, for tests only",
                     thresholds={"T1w+FLAIR": 0.35},
                     metrics={"real_scans": {"dsc": {"T1w+FLAIR+T2w+ceT1w": 0.61, "T1w+FLAIR": 0.12}},
                              "views": {"real-combined": {
                                  "kind": "real", "intensity_model": "combine",
                                  "subsets": {"T1w+FLAIR+T2w+ceT1w": {"dsc": 0.7},
                                              "T1w+FLAIR": {"dsc": 0.2}}}}})
    directory = tmp_path_factory.mktemp("model") / "tiny"
    save_model(directory, build_network(card.network), card)
    return directory


@pytest.fixture(scope="module")
def small_cross(tmp_path_factory, shared_data) -> Path:
    """sub-26 of mslub-cross at 3 mm as two participants (sub-01: all four contrasts, sub-02:
    FLAIR and T1w), in a fresh BIDS dataset."""
    root = tmp_path_factory.mktemp("bids") / "small"
    source = shared_data / "mslub-cross"
    shutil.copy(source / "dataset_description.json", root.mkdir() or root / "dataset_description.json")
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    (root / "README").write_text("Downsampled MSLUB sub-26 (CC-BY), for tests.\n")
    for subject, contrasts in (("01", CROSS_NAMES), ("02", {"T1w": "T1w", "FLAIR": "FLAIR"})):
        for contrast, name in contrasts.items():
            img = nib.load(source / f"sub-26/anat/sub-26_{name}.nii.gz")
            small = resample_to_output(img, voxel_sizes=(3, 3, 3), order=1)
            dest = root / f"sub-{subject}/anat/sub-{subject}_{name}.nii.gz"
            write_nifti(dest, np.asarray(small.dataobj, dtype=np.float32), affine=small.affine)
    return root


def run_cli(args) -> int:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code


def _copy_dataset(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def test_participant_run_writes_valid_derivatives_and_report(small_cross, tiny_model, tmp_path,
                                                             monkeypatch):
    out = tmp_path / "out"
    code = run_cli([small_cross, out, "participant", "--model", tiny_model, "-w", tmp_path / "work",
                    "--nprocs", "1"])
    assert code == 0
    mask = out / "sub-01/anat/sub-01_label-lesion_mask.nii.gz"
    prob = out / "sub-01/anat/sub-01_label-lesion_probseg.nii.gz"
    assert mask.exists() and prob.exists()
    reference = nib.load(small_cross / "sub-01/anat/sub-01_FLAIR.nii.gz")
    assert nib.load(mask).shape == reference.shape
    assert np.allclose(nib.load(mask).affine, reference.affine)
    sidecar = json.loads(mask.with_name(mask.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["ModalityCode"] == "1111" and sidecar["ReferenceContrast"] == "FLAIR"
    side2 = json.loads((out / "sub-02/anat/sub-02_label-lesion_mask.json").read_text())
    assert side2["ModalityCode"] == "1100"
    # the card's calibrated threshold for T1w + FLAIR; the full set has none and uses 0.5
    assert side2["Threshold"] == 0.35 and sidecar["Threshold"] == 0.5
    assert set(side2["ContrastsMissing"]) == {"T2w", "ceT1w"}
    assert (out / "sub-01.html").exists() and (out / "sub-02.html").exists()
    # the card's real-scan DSC with the intensity model (the default) is low for sub-02's
    # T1w + FLAIR only: its report says so
    assert "Caution:" not in (out / "sub-01.html").read_text()
    assert ("this model combined with the intensity model reached DSC 0.20 on a real patient"
            in (out / "sub-02.html").read_text())
    assert sidecar["Inference"]["IntensityModel"]["Mode"] == "combine"
    assert "Cerri et al. 2021" in (out / "logs" / "CITATION.md").read_text()
    from bids import BIDSLayout

    layout = BIDSLayout(small_cross, derivatives=str(out), validate=False)
    found = layout.get(subject="01", suffix="mask", label="lesion", extension=".nii.gz",
                       return_type="filename", scope="derivatives")
    assert [Path(f).name for f in found] == [mask.name]
    validator = Path(__import__("sys").executable).parent / "bids-validator-deno"
    result = subprocess.run([str(validator), str(out), "--datasetTypes", "derivative", "--format",
                             "json"], capture_output=True, text=True)
    errors = [i for i in json.loads(result.stdout)["issues"]["issues"] if i["severity"] == "error"]
    assert errors == []

    # a re-run skips finished participants; --overwrite redoes them
    before = mask.stat().st_mtime_ns
    assert run_cli([small_cross, out, "participant", "--model", tiny_model, "-w", tmp_path / "work",
                    "--skip-bids-validation"]) == 0
    assert mask.stat().st_mtime_ns == before
    # (with 2 processes: one thread per preprocessing step, both cores for inference)
    import bids_mdpp.inference
    import bids_mdpp.workflows.preproc as preproc

    threads = {}
    predictor_init, run_preprocessing = bids_mdpp.inference.Predictor.__init__, preproc.run_preprocessing

    def spy_predictor(self, *args, **kwargs):
        threads["inference"] = kwargs["num_threads"]
        predictor_init(self, *args, **kwargs)

    def spy_preprocessing(*args, **kwargs):
        threads["preprocessing"] = kwargs["omp_nthreads"]
        return run_preprocessing(*args, **kwargs)

    monkeypatch.setattr(bids_mdpp.inference.Predictor, "__init__", spy_predictor)
    monkeypatch.setattr(preproc, "run_preprocessing", spy_preprocessing)
    assert run_cli([small_cross, out, "participant", "--model", tiny_model, "-w", tmp_path / "work",
                    "--skip-bids-validation", "--overwrite", "--participant-label", "01",
                    "--nprocs", "2"]) == 0
    assert mask.stat().st_mtime_ns != before
    assert threads == {"inference": 2, "preprocessing": 1}
    monkeypatch.undo()

    # the group level reads what the participant level wrote
    assert run_cli([small_cross, out, "group"]) == 0
    rows = (out / "group_lesions.tsv").read_text().splitlines()[1:]
    assert sorted(row.split("\t")[0] for row in rows) == ["sub-01", "sub-02"]


def test_intensity_model_off_keeps_the_network_alone(small_cross, tiny_model, tmp_path,
                                                     monkeypatch):
    args = [small_cross, "participant", "--model", tiny_model, "-w", tmp_path / "work",
            "--participant-label", "02", "--skip-bids-validation"]
    combined, alone = tmp_path / "combined", tmp_path / "alone"
    assert run_cli([args[0], combined, *args[1:]]) == 0
    assert run_cli([args[0], alone, *args[1:], "--intensity-model", "off"]) == 0
    name = "sub-02/anat/sub-02_label-lesion_probseg"
    sidecar = json.loads((alone / f"{name}.json").read_text())
    assert sidecar["Inference"]["IntensityModel"] == {"Mode": "off"}
    assert json.loads((combined / f"{name}.json").read_text())["Inference"]["IntensityModel"][
        "Mode"] == "combine"
    p_alone = np.asarray(nib.load(alone / f"{name}.nii.gz").dataobj)
    p_combined = np.asarray(nib.load(combined / f"{name}.nii.gz").dataobj)
    assert not np.allclose(p_alone, p_combined, atol=1e-3)
    # the caution follows the card's numbers for the network alone
    assert "this model reached DSC 0.12 on a real patient" in (alone / "sub-02.html").read_text()
    assert "Cerri et al. 2021" not in (alone / "logs" / "CITATION.md").read_text()

    # a template fit that fails: the network's map alone, said in the sidecar and the report
    import bids_mdpp.atlas_priors as atlas_priors
    from bids_mdpp.errors import InputDataError

    def failing_fit(*args, name, **kwargs):
        raise InputDataError(name, "registration to the template failed")

    monkeypatch.setattr(atlas_priors, "priors_on_grid", failing_fit)
    skipped = tmp_path / "skipped"
    assert run_cli([args[0], skipped, *args[1:]]) == 0
    entry = json.loads((skipped / f"{name}.json").read_text())["Inference"]["IntensityModel"]
    assert entry["Mode"] == "off" and "registration to the template failed" in entry["Skipped"]
    assert np.allclose(np.asarray(nib.load(skipped / f"{name}.nii.gz").dataobj), p_alone)
    assert "the intensity model was skipped" in (skipped / "sub-02.html").read_text()


def test_a_card_that_gives_the_network_no_weight_segments_with_the_intensity_model_alone(
        small_cross, tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    card = json.loads((model / "model_card.json").read_text())
    card["network_weights"] = {"T1w+FLAIR": 0.0}
    (model / "model_card.json").write_text(json.dumps(card))
    args = [small_cross, "participant", "-w", tmp_path / "work", "--participant-label", "02",
            "--skip-bids-validation"]
    weighted, alone = tmp_path / "weighted", tmp_path / "alone"
    assert run_cli([args[0], weighted, *args[1:], "--model", tiny_model]) == 0
    assert run_cli([args[0], alone, *args[1:], "--model", model]) == 0
    name = "sub-02/anat/sub-02_label-lesion_probseg"
    inference = json.loads((alone / f"{name}.json").read_text())["Inference"]
    entry = inference["IntensityModel"]
    assert entry["Mode"] == "combine" and entry["NetworkWeight"] == 0.0
    assert entry["Combination"].startswith("the posterior alone")
    # the network did not run: no precision to record, and the sidecar says why
    assert "Precision" not in inference and "no weight" in inference["NetworkSkipped"]
    assert "segmenting" not in next((alone / "logs").glob("*.log")).read_text()
    weighted_inference = json.loads((weighted / f"{name}.json").read_text())["Inference"]
    assert weighted_inference["IntensityModel"]["NetworkWeight"] == 0.5
    assert "Precision" in weighted_inference and "NetworkSkipped" not in weighted_inference
    p_alone = np.asarray(nib.load(alone / f"{name}.nii.gz").dataobj)
    p_weighted = np.asarray(nib.load(weighted / f"{name}.nii.gz").dataobj)
    assert not np.allclose(p_alone, p_weighted, atol=1e-3)
    assert ("The model card gives the network no weight for these contrasts, so the lesion "
            "probability map is the lesion posterior") in (alone / "logs" / "CITATION.md").read_text()


def test_output_spaces_write_template_space_maps_and_a_transform(small_cross, tiny_model, tmp_path,
                                                               monkeypatch):
    import SimpleITK as sitk

    from bids_mdpp.templates import nilearn_files

    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "no-templateflow"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = [small_cross, out, "participant", "--model", tiny_model, "-w", tmp_path / "work",
            "--participant-label", "02", "--skip-bids-validation"]
    assert run_cli([*args, "--output-spaces", "MNI152NLin2009cAsym"]) == 64  # not offline here
    assert not (out / "sub-02").exists()
    assert run_cli(args) == 0
    assert run_cli([*args, "--output-spaces", "MNI152NLin2009aSym"]) == 0  # not skipped: new space
    anat = out / "sub-02" / "anat"
    mask = anat / "sub-02_space-MNI152NLin2009aSym_label-lesion_mask.nii.gz"
    prob = anat / "sub-02_space-MNI152NLin2009aSym_label-lesion_probseg.nii.gz"
    xfm = anat / "sub-02_from-FLAIR_to-MNI152NLin2009aSym_mode-image_xfm.txt"
    template = nib.load(nilearn_files(1)[0])
    for path in (mask, prob):
        img = nib.load(path)
        assert img.shape == template.shape and np.allclose(img.affine, template.affine)
    probability = np.asarray(nib.load(prob).dataobj)
    assert probability.dtype == np.float32 and 0 <= probability.min() and probability.max() <= 1
    # sub-02 has T1w + FLAIR: the card's threshold for them applies in template space too, and
    # the default minimum lesion size (3 mm³: components of one or two 1 mm voxels) as well
    from scipy import ndimage

    above = probability >= 0.35
    labels, count = ndimage.label(above, np.ones((3, 3, 3)))
    sizes = ndimage.sum(above, labels, range(1, count + 1))
    assert (sizes < 3).any()  # there are specks to drop
    kept = np.concatenate([[False], sizes >= 3])[labels]
    assert np.array_equal(np.asarray(nib.load(mask).dataobj) > 0, kept)
    sidecar = json.loads(mask.with_name(mask.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Threshold"] == 0.35 and sidecar["MinimumLesionSize"] == 3.0
    assert sidecar["Template"] == "MNI152NLin2009aSym" and sidecar["Type"] == "Lesion"
    assert sidecar["Sources"] == ["bids::sub-02/anat/sub-02_label-lesion_mask.nii.gz"]
    assert sidecar["ModalityCode"] == "1100" and xfm.name in sidecar["Registration"]
    transform = sitk.ReadTransform(str(xfm))
    matrix = np.reshape(sitk.AffineTransform(transform).GetMatrix(), (3, 3))
    # sub-26's brain (1.1 l, tightly stripped) is about 0.85 times the template's in each axis
    assert 0.75 < abs(np.linalg.det(matrix)) ** (1 / 3) < 0.95
    validator = Path(__import__("sys").executable).parent / "bids-validator-deno"
    result = subprocess.run([str(validator), str(out), "--datasetTypes", "derivative", "--format",
                             "json"], capture_output=True, text=True)
    errors = [i for i in json.loads(result.stdout)["issues"]["issues"] if i["severity"] == "error"]
    assert errors == []
    stamp = mask.stat().st_mtime_ns  # everything asked for exists now: skipped
    assert run_cli([*args, "--output-spaces", "MNI152NLin2009aSym"]) == 0
    assert mask.stat().st_mtime_ns == stamp


def test_a_read_only_container_style_run_succeeds(small_cross, tiny_model, tmp_path):
    """As under ``docker run --read-only --tmpfs /tmp``: HOME cannot be written, the caches go
    where the Dockerfile's ENV points them (under a writable /tmp), TemplateFlow is empty, the
    network is unreachable, Python writes no bytecode, and the input is read-only."""
    import os
    import stat
    import sys

    from test_containers import docker_env

    tmpfs = tmp_path / "tmpfs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIDS_MDPP", "XDG_"))}
    for key, value in docker_env().items():
        if value.startswith("/tmp/"):
            env[key] = str(tmpfs / value[len("/tmp/"):])
        elif key in ("NIPYPE_NO_ET", "MALLOC_CONF", "BIDS_MDPP_CONTAINER"):
            env[key] = value
    (tmp_path / "home-is-a-file").write_text("")  # nothing can be created under it, even as root
    env["HOME"] = str(tmp_path / "home-is-a-file")
    env["TEMPLATEFLOW_HOME"] = str(tmp_path / "empty-templateflow")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[proxy] = "http://127.0.0.1:9"  # any download would fail at once
    env.pop("no_proxy", None), env.pop("NO_PROXY", None)
    bids = tmp_path / "bids"
    shutil.copytree(small_cross, bids)
    for path in sorted(bids.rglob("*"), reverse=True):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "bids_mdpp"), str(bids), str(out), "participant",
               "--model", str(tiny_model), "--participant-label", "02", "--nprocs", "1",
               "-w", str(tmpfs / "work"), "--output-spaces", "MNI152NLin2009aSym"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "sub-02/anat/sub-02_label-lesion_mask.nii.gz").is_file()
    assert (out / "sub-02/anat/sub-02_space-MNI152NLin2009aSym_label-lesion_mask.nii.gz").is_file()
    assert (out / "sub-02.html").is_file()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Container"]["Type"] == "docker"
    assert not any(p.name == "__pycache__" for p in bids.rglob("*"))


def _break(path: Path, how: str) -> None:
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 3])
    elif how == "not-nifti":
        path.write_bytes(gzip.compress(b"this is a text file"))
    elif how == "4d":
        nib.save(nib.Nifti1Image(np.stack([data, data], -1), img.affine), path)
    elif how == "nan":
        data[5, 5, 5] = np.nan
        nib.save(nib.Nifti1Image(data, img.affine), path)
    elif how == "zero-affine":
        hdr = nib.Nifti1Header()
        hdr.set_data_shape(data.shape)
        hdr.set_data_dtype("float32")
        for row in ("srow_x", "srow_y", "srow_z"):
            hdr[row] = 0
        hdr["sform_code"], hdr["qform_code"] = 1, 0
        nib.save(nib.Nifti1Image(data, None, header=hdr), path)


BREAKAGES = {  # participant → (how its FLAIR is broken, what the message must say)
    "03": ("empty", "empty"), "04": ("truncated", "truncated or corrupt|not a readable"),
    "05": ("not-nifti", "not a readable NIfTI"), "06": ("4d", "expected a 3D image"),
    "07": ("nan", "NaN or infinite"), "08": ("zero-affine", "singular"),
}


def test_bad_inputs_fail_their_participant_only(small_cross, tiny_model, tmp_path):
    import re

    bids = _copy_dataset(small_cross, tmp_path / "bids")
    for subject, (how, _) in BREAKAGES.items():
        anat = bids / f"sub-{subject}/anat"
        anat.mkdir(parents=True)
        for name in ("T1w", "FLAIR"):
            shutil.copy(bids / f"sub-02/anat/sub-02_{name}.nii.gz", anat / f"sub-{subject}_{name}.nii.gz")
        _break(anat / f"sub-{subject}_FLAIR.nii.gz", how)
    shutil.rmtree(bids / "sub-02")
    out = tmp_path / "out"
    args = [bids, out, "participant", "--model", tiny_model, "-w", tmp_path / "work",
            "--skip-bids-validation"]
    assert run_cli(args) == 1  # sub-01 finished, the broken ones failed
    assert (out / "sub-01/anat/sub-01_label-lesion_mask.nii.gz").exists()
    for subject, (how, message) in BREAKAGES.items():
        assert not list(out.glob(f"sub-{subject}/anat/*_mask.nii.gz")), how
        (crash,) = (out / "logs").glob(f"crash-sub-{subject}-*.txt")
        first_lines = "\n".join(crash.read_text().splitlines()[:3])
        assert f"sub-{subject}_FLAIR.nii.gz" in first_lines, how
        assert re.search(message, first_lines), how
        assert f"sub-{subject}_FLAIR.nii.gz" in (out / f"sub-{subject}.html").read_text()
    # alone, a broken participant gives the bad-data exit code
    assert run_cli([*args, "--participant-label", "07"]) == 65


def test_model_that_is_not_a_model_exits_65(small_cross, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "model_card.json").write_text("{not json")
    code = run_cli([small_cross, tmp_path / "out", "participant", "--model", fake,
                    "--skip-bids-validation"])
    assert code == 65


def test_participant_without_usable_contrast_exits_66_and_names_files(small_cross, tiny_model,
                                                                       tmp_path):
    bids = _copy_dataset(small_cross, tmp_path / "bids")
    for path in (bids / "sub-02/anat").iterdir():
        path.unlink()
    write_nifti(bids / "sub-02/anat/sub-02_T2starw.nii.gz")
    out = tmp_path / "out"
    code = run_cli([bids, out, "participant", "--model", tiny_model, "--participant-label", "02",
                    "--skip-bids-validation", "-w", tmp_path / "work"])
    assert code == 66
    (crash,) = (out / "logs").glob("crash-sub-02-*.txt")
    assert "sub-02_T2starw.nii.gz" in crash.read_text()


@pytest.fixture(scope="module")
def small_long(tmp_path_factory, shared_data) -> Path:
    """mslub-long sub-01 (raw 2D clinical scans with skull, two sessions), FLAIR and T1w
    downsampled in-plane to ~2–3 mm, in a fresh BIDS dataset."""
    source = shared_data / "mslub-long"
    root = tmp_path_factory.mktemp("bids") / "long"
    root.mkdir()
    for name in ("dataset_description.json", "participants.tsv", "README"):
        if (source / name).is_file():
            shutil.copy(source / name, root / name)
    for session in ("1", "2"):
        for contrast in ("FLAIR", "T1w"):
            name = f"sub-01_ses-{session}_{contrast}.nii.gz"
            img = nib.load(source / f"sub-01/ses-{session}/anat" / name)
            zooms = img.header.get_zooms()[:3]
            small = resample_to_output(img, voxel_sizes=[max(z, 3.0) for z in zooms], order=1)
            write_nifti(root / f"sub-01/ses-{session}/anat" / name,
                        np.asarray(small.dataobj, dtype=np.float32), affine=small.affine)
    return root


def test_longitudinal_participant_then_group(small_long, tiny_model, tmp_path):
    """Two sessions of one raw, skull-on patient: both segmented, one row per session in the
    cohort table and one line across the sessions in the group report."""
    out = tmp_path / "out"
    assert run_cli([small_long, out, "participant", "--model", tiny_model, "-w", tmp_path / "work",
                    "--skip-bids-validation", "--nprocs", "2"]) == 0
    for session in ("1", "2"):
        mask = out / f"sub-01/ses-{session}/anat/sub-01_ses-{session}_label-lesion_mask.nii.gz"
        assert nib.load(mask).shape == nib.load(
            small_long / f"sub-01/ses-{session}/anat/sub-01_ses-{session}_FLAIR.nii.gz").shape
    assert run_cli([small_long, out, "group"]) == 0
    rows = [row.split("\t") for row in (out / "group_lesions.tsv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    assert [(r[header.index("participant_id")], r[header.index("session_id")]) for r in rows] == [
        ("sub-01", "ses-1"), ("sub-01", "ses-2")]
    html = (out / "group_lesions.html").read_text()
    assert html.count('id="longitudinal-sub-01"') == 2   # volume and count panels
