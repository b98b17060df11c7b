"""The written BIDS dataset: validity, masks in derivatives, subsets, reproducibility."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_mdpp.contrasts import CONTRASTS, choose_reference
from bids_mdpp.errors import OutputError, UsageError
from bids_mdpp.synth.dataset import prepare_output_dir, write_dataset
from bids_mdpp.synth.subject import (
    SynthOptions,
    draw_contrast_subset,
    draw_subject,
    render_session,
)

#: Seed 218 with these options gives one raw, one raw-stripped and one clean subject, a second
#: session, a session without FLAIR, PDw and ce-T1w, and the load classes high, low and
#: typical (checked below, not assumed).
SEED, N = 218, 3
OPTIONS = SynthOptions(sessions_fraction=0.5, scale=0.3)
VALIDATOR = Path(sys.executable).parent / "bids-validator-deno"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "ds"
    write_dataset(root, N, SEED, OPTIONS)
    return root


@pytest.fixture(scope="module")
def manifest(dataset) -> dict:
    return json.loads((dataset / "manifest.json").read_text())


def test_the_chosen_seed_covers_every_case(manifest):
    subjects = manifest["subjects"].values()
    assert {s["spec"]["kind"] for s in subjects} == {"raw", "raw-stripped", "clean"}
    sessions = [session for s in subjects for session in s["sessions"]]
    assert any(len(s["sessions"]) == 2 for s in subjects)
    assert any("FLAIR" not in session["contrasts"] for session in sessions)
    assert {"PDw", "ceT1w"} <= {c for session in sessions for c in session["contrasts"]}
    assert {session["lesion_load"] for session in sessions} == {"high", "low", "typical"}


@pytest.mark.skipif(not VALIDATOR.exists(), reason="bids-validator-deno is not installed")
def test_the_dataset_is_valid_bids(dataset):
    run = subprocess.run([str(VALIDATOR), "-r", "--format", "json", str(dataset)],
                         capture_output=True, text=True, timeout=120)
    report = json.loads(run.stdout)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == [] and run.returncode == 0
    assert report["derivativesSummary"]  # the lesion derivatives were validated too


def test_pybids_finds_every_mask_on_its_reference_grid(dataset, manifest):
    from bids import BIDSLayout

    layout = BIDSLayout(dataset, derivatives=dataset / "derivatives" / "lesions", validate=False)
    masks = layout.get(scope="derivatives", suffix="mask", label="lesion", extension=".nii.gz")
    sessions = [(label, s) for label, subject in manifest["subjects"].items() for s in subject["sessions"]]
    assert len(masks) == len(sessions)
    loads = {}
    for label, session in sessions:
        [mask] = layout.get(scope="derivatives", subject=label, session=session["session"],
                            suffix="mask", extension=".nii.gz")
        assert session["reference"] == choose_reference(session["contrasts"])
        reference = nib.load(dataset / session["files"][session["reference"]])
        mask_img = nib.load(mask.path)
        assert mask_img.shape == reference.shape
        assert np.allclose(mask_img.affine, reference.affine)
        assert mask_img.get_data_dtype() == np.uint8 and set(np.unique(mask_img.dataobj)) <= {0, 1}
        sidecar = json.loads(Path(mask.path.replace(".nii.gz", ".json")).read_text())
        assert sidecar["SpatialReference"] == f"bids:raw:{session['files'][session['reference']]}"
        assert sidecar["LesionLoad"] == session["lesion_load"]
        loads.setdefault(session["lesion_load"], []).append(int(np.asanyarray(mask_img.dataobj).sum()))
    # on this coarse grid (3.3 mm) a low load may vanish; the others may not
    assert min(loads["typical"] + loads["high"]) > 0 and max(loads.get("free", [0])) == 0


def test_the_training_discovery_finds_the_masks(dataset, manifest):
    from bids_mdpp.bids import find_reference_mask

    for label, subject in manifest["subjects"].items():
        for session in subject["sessions"]:
            found = find_reference_mask(dataset / "derivatives" / "lesions", label, session["session"])
            assert found == dataset / session["mask"]


def test_files_are_named_by_contrast(dataset, manifest):
    from bids import BIDSLayout

    layout = BIDSLayout(dataset, validate=False)
    enhanced = layout.get(suffix="T1w", ceagent="gadolinium", extension=".nii.gz")
    assert enhanced and all("_ce-gadolinium_T1w.nii.gz" in f.path for f in enhanced)
    for subject in manifest["subjects"].values():
        for session in subject["sessions"]:
            assert session["contrasts"] and set(session["contrasts"]) <= set(CONTRASTS)
            for contrast, relative in session["files"].items():
                img = nib.load(dataset / relative)
                sidecar = json.loads((dataset / relative.replace(".nii.gz", ".json")).read_text())
                assert sidecar["MagneticFieldStrength"] in (1.5, 3.0)
                assert ("ContrastBolusIngredient" in sidecar) == (contrast == "ceT1w")
                clean = subject["spec"]["kind"] == "clean"
                assert img.get_data_dtype() == (np.float32 if clean else np.uint16)
                assert sidecar["MRAcquisitionType"] == ("3D" if clean else "2D")


def test_participants_and_readme(dataset, manifest):
    rows = (dataset / "participants.tsv").read_text().splitlines()
    assert rows[0] == "participant_id\tsynthesis\tn_sessions\tlesion_load\tlesion_volume_mm3"
    assert len(rows) == N + 1
    for row in rows[1:]:
        participant, kind, n_sessions, load, volume = row.split("\t")
        subject = manifest["subjects"][participant[4:]]
        spec = subject["spec"]
        assert kind == spec["kind"] and int(n_sessions) == len(spec["sessions"])
        assert load == spec["sessions"][0]["scene"]["lesions"]["load_class"]
        assert float(volume) == subject["sessions"][0]["lesion_volume_mm3"]
    assert {"lesion_load", "lesion_volume_mm3"} <= set(json.loads(
        (dataset / "participants.json").read_text()))
    readme = (dataset / "README").read_text()
    assert "Lesjak" in readme and "McConnell" in readme
    assert (dataset / ".bidsignore").read_text().strip() == "manifest.json"


def test_manifest_records_the_drawn_parameters(manifest):
    assert manifest["seed"] == SEED and manifest["options"]["scale"] == 0.3
    for label, subject in manifest["subjects"].items():
        spec = subject["spec"]
        redrawn = draw_subject(int(label[1:]) - 1, SEED, OPTIONS)
        assert spec["sessions"][0]["scene"]["lesions"]["atlas"] == list(redrawn.sessions[0].scene.lesions.atlas)
        for session in spec["sessions"]:
            assert set(session["acquisitions"]) == set(session["contrasts"])
            assert "noise" in next(iter(session["acquisitions"].values()))


def test_stripped_subjects_have_nothing_outside_the_brain():
    spec = next(s for s in (draw_subject(i, SEED, OPTIONS) for i in range(N)) if s.kind == "raw-stripped")
    rendered = render_session(spec, spec.sessions[0])
    template = rendered.scene.template
    for contrast, img in rendered.images.items():
        brain = rendered.acquisitions[contrast].sample(template.brain, template)
        assert np.all(np.asanyarray(img.dataobj)[brain < 1e-4] == 0)


def test_rendering_is_reproducible_and_independent_of_other_subjects(manifest):
    spec = draw_subject(1, SEED, OPTIONS)
    assert spec == draw_subject(1, SEED, OPTIONS)
    assert spec != draw_subject(1, SEED + 1, OPTIONS)
    first = render_session(spec, spec.sessions[0])
    again = render_session(spec, spec.sessions[0])
    for contrast in first.images:
        assert np.array_equal(np.asanyarray(first.images[contrast].dataobj),
                              np.asanyarray(again.images[contrast].dataobj))
        assert np.allclose(first.images[contrast].affine, again.images[contrast].affine)
    assert np.array_equal(np.asanyarray(first.mask.dataobj), np.asanyarray(again.mask.dataobj))


def test_two_processes_write_the_same_dataset(tmp_path, dataset):
    options = SynthOptions(sessions_fraction=0.0, scale=0.2, contrasts=("T1w", "FLAIR"))
    serial = write_dataset(tmp_path / "serial", 2, 3, options, nprocs=1)
    parallel = write_dataset(tmp_path / "parallel", 2, 3, options, nprocs=2)
    assert serial["subjects"] == parallel["subjects"]
    for session in serial["subjects"]["s002"]["sessions"]:
        for relative in [*session["files"].values(), session["mask"]]:
            a, b = nib.load(tmp_path / "serial" / relative), nib.load(tmp_path / "parallel" / relative)
            assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
    assert not (tmp_path / "serial" / "sub-s001" / "ses-1").exists()  # no sessions asked


def test_contrast_subsets_are_never_empty_and_mostly_have_flair():
    rng = np.random.default_rng(0)
    subsets = [draw_contrast_subset(rng, CONTRASTS) for _ in range(2000)]
    assert all(subsets)
    assert 0.7 < np.mean(["FLAIR" in s for s in subsets]) < 0.9
    assert len(Counter(subsets)) > 20
    only_t1 = [draw_contrast_subset(rng, ("T1w",)) for _ in range(200)]
    assert set(only_t1) == {("T1w",)}
    pdw_or_ce = {draw_contrast_subset(rng, ("PDw", "ceT1w")) for _ in range(200)}
    assert all(pdw_or_ce) and pdw_or_ce <= {("PDw",), ("ceT1w",), ("PDw", "ceT1w")}


def test_a_complete_protocol_gives_every_session_every_contrast_and_changes_nothing_else():
    pool = ("T1w", "FLAIR", "T2w", "ceT1w")
    options = SynthOptions(contrasts=pool, sessions_fraction=0.5)
    complete = SynthOptions(contrasts=pool, sessions_fraction=0.5, complete=True)
    for index in range(30):
        random_subsets, full = draw_subject(index, 3, options), draw_subject(index, 3, complete)
        assert all(s.contrasts == pool for s in full.sessions)
        assert [s.scene for s in full.sessions] == [s.scene for s in random_subsets.sessions]
    subsets = {s.contrasts for i in range(30) for s in draw_subject(i, 3, options).sessions}
    assert len(subsets) > 1


def test_fractions_of_sessions_clean_and_skull_subjects():
    options = SynthOptions(sessions_fraction=0.3, clean_fraction=0.2, skull_fraction=0.5)
    specs = [draw_subject(i, 11, options) for i in range(400)]
    kinds = Counter(s.kind for s in specs)
    assert kinds["clean"] / 400 == pytest.approx(0.2, abs=0.06)
    assert kinds["raw"] / (400 - kinds["clean"]) == pytest.approx(0.5, abs=0.08)
    assert np.mean([len(s.sessions) == 2 for s in specs]) == pytest.approx(0.3, abs=0.06)
    assert all(s.sessions[0].label == "1" for s in specs)
    follow_ups = [s for s in specs if len(s.sessions) == 2]
    for s in follow_ups:
        first, second = (session.scene for session in s.sessions)
        assert second.lesions.ellipsoids[: len(first.lesions.ellipsoids)] == first.lesions.ellipsoids
        assert second.anatomy.ventricle_enlargement_mm >= first.anatomy.ventricle_enlargement_mm


def test_output_folder_rules(tmp_path, dataset):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty.*--overwrite"):
        prepare_output_dir(foreign, overwrite=False)
    with pytest.raises(UsageError, match="not written by|does not hold a dataset written"):
        prepare_output_dir(foreign, overwrite=True)
    assert (foreign / "notes.txt").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        prepare_output_dir(a_file, overwrite=True)
    ours = tmp_path / "ours"
    shutil.copytree(dataset, ours)
    prepare_output_dir(ours, overwrite=True)
    assert list(ours.iterdir()) == []
    with pytest.raises(UsageError, match="at least 1"):
        write_dataset(tmp_path / "none", 0, 1)
