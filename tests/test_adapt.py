"""``bids_mdpp adapt``: a tiny base model adapted on a tiny synthetic cohort, end to end.

The base model is a tiny network trained here for a few seconds on labelled phantoms; the
cohort's own reference masks are replaced by bytes that are not NIfTI (any reader would fail),
and every file Python opens during the run is recorded (``sys.addaudithook``), so that a run
that read a label would be seen.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from test_train_cli import run_cli
from test_train_support import TINY_NETWORK, write_bids_dataset

from bids_mdpp import __version__
from bids_mdpp.cli import main

#: A few seconds of adaptation (the learning rate is high so that the tiny case moves).
#: The network teaches alone (adapt's default; the phantoms' anatomy is nothing like the
#: template's, so the intensity model's priors would mean nothing here: the averaged teacher is
#: tested on its own).
QUICK = ("--epochs", "2", "--steps-per-epoch", "8", "--batch-size", "4", "--crop", "32",
         "--lr", "3e-4", "--omp-nthreads", "1", "--precision", "fp32")
#: The guard's tolerance on the tiny case: the subsets with FLAIR keep at least this mean DSC
#: with the base model's own mask on the same input, and each at least FLAIR_DRIFT_DSC_EACH
#: (the training's floating point, and so the few steps' result, differs between CPUs: FLAIR
#: alone 0.88 on one with AVX-512, the other three 0.95-0.97).
FLAIR_DRIFT_DSC = 0.9
FLAIR_DRIFT_DSC_EACH = 0.85

pytestmark = pytest.mark.usefixtures("restore_process_state")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny moddrop++ model for T1w, FLAIR and T2w, trained on two labelled phantoms."""
    root = tmp_path_factory.mktemp("adapt_base")
    bids, labels = write_bids_dataset(root, {"11": ("T1w", "FLAIR", "T2w"),
                                             "12": ("T1w", "FLAIR", "T2w")})
    out = root / "base"
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in (
            "train", bids, out, "--labels", labels, *TINY_NETWORK, "--epochs", "6",
            "--steps-per-epoch", "20", "--batch-size", "8", "--crop", "32", "--val-fraction",
            "0", "--lr", "2e-3", "--omp-nthreads", "1", "--precision", "fp32")])
    assert info.value.code == 0
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Unlabelled cohort: sub-01 has FLAIR, sub-02 lacks it, sub-03 has FLAIR alone; its
    derivatives hold "masks" that are not images at all."""
    root = tmp_path_factory.mktemp("adapt_cohort")
    bids, labels = write_bids_dataset(root, {"01": ("T1w", "FLAIR", "T2w"), "02": ("T1w", "T2w"),
                                             "03": ("FLAIR",)})
    for mask in labels.rglob("*_mask.nii.gz"):
        mask.write_bytes(b"a label that adaptation must never read")
    return bids, labels


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One work directory: the cohort is preprocessed once."""
    return tmp_path_factory.mktemp("adapt_work")


class OpenedFiles:
    """Every path opened by this process while ``recording`` (a ``sys.addaudithook`` hook)."""

    def __init__(self):
        self.recording = False
        self.paths: list[str] = []
        sys.addaudithook(self)

    def __call__(self, event, args):
        if self.recording and event == "open":
            self.paths.append(str(args[0]))


OPENED = OpenedFiles()


def test_help_lists_the_options_without_importing_torch():
    probe = ("import sys; from bids_mdpp.cli import main\n"
             "try:\n    main(['adapt', '--help'])\nexcept SystemExit: pass\n"
             "print(sorted(m for m in ('torch', 'nipype', 'bids') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    for option in ("--model", "--work-dir", "--participant-label", "--session-label",
                   "--bids-filter-file", "--nprocs", "--omp-nthreads", "--epochs",
                   "--steps-per-epoch", "--seed", "--resume", "--confidence", "--targets",
                   "--lesion-share", "--intensity-model", "--base-subsets",
                   "--device",
                   "No label is read"):
        assert option in result.stdout, option
    assert "--labels" not in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_adapt_reads_no_label_keeps_flair_and_records_it(base_model, cohort, work, tmp_path,
                                                         capsys):
    from bids_mdpp.model import load_model, sha256_of

    bids, labels = cohort
    out = tmp_path / "adapted"
    OPENED.recording = True
    try:
        status, err = run_cli(["adapt", bids, out, "--model", base_model, "-w", work, *QUICK,
                               "--base-subsets", "T1w"], capsys)
    finally:
        OPENED.recording = False
    assert status == 0, err
    assert OPENED.paths, "the audit hook saw no file opened"
    assert not [p for p in OPENED.paths if str(labels) in p or "label-lesion" in p]
    assert "sub-02: skipped, no FLAIR" in err and "sub-03: skipped, FLAIR is its only" in err

    loaded = load_model(out)
    card = loaded.card
    adaptation = card.training["adaptation"]
    assert adaptation["base_model"]["sha256"] == sha256_of(base_model / "model.pt")
    assert adaptation["base_model"]["name"] == "base"
    assert adaptation["labels_used"] is False
    assert [s["session"] for s in adaptation["sessions"]] == ["sub-01"]
    inputs = adaptation["sessions"][0]["inputs"]
    assert sorted(inputs) == ["FLAIR", "T1w", "T2w"]
    assert inputs["FLAIR"]["sha256"] == sha256_of(bids / inputs["FLAIR"]["file"])
    assert {s["session"] for s in adaptation["skipped"]} == {"sub-02", "sub-03"}
    assert adaptation["subsets_adapted"] == ["T1w+T2w", "T2w"]
    assert sorted(adaptation["subsets_anchored"]) == ["FLAIR", "FLAIR+T2w", "T1w", "T1w+FLAIR",
                                                      "T1w+FLAIR+T2w"]
    assert adaptation["steps"] == 16 and adaptation["epochs"] == 2
    assert adaptation["seconds"] > 0 and adaptation["peak_rss_gb"] > 0
    assert adaptation["command_line"].startswith("bids_mdpp adapt")
    assert adaptation["lesion_share"] is None and adaptation["targets"] == "mask"
    assert adaptation["teacher_intensity_model"] == {"mode": "off", "skipped": {}}
    assert adaptation["teacher"].endswith("(three orientations fused)")
    base_loss = json.loads((base_model / "model_card.json").read_text())["training"]["loss"]
    assert adaptation["mask_loss"] == {"focal_gamma": float(base_loss["focal_gamma"]),
                                       "focal_alpha": float(base_loss["focal_alpha"])}
    assert card.metrics["adaptation"]["sessions"] == ["sub-01"]
    table = card.metrics["adaptation"]["agreement"]
    assert set(table) == set(adaptation["subsets_adapted"]) | set(adaptation["subsets_anchored"])
    assert all(0 <= row["before"] <= 1 and 0 <= row["after"] <= 1 for row in table.values())
    assert table["T1w+FLAIR+T2w"]["before"] == 1.0
    for name in adaptation["subsets_anchored"]:  # the base model's own weights: no drift at all
        assert table[name]["drift_dsc"] == 1.0, (name, table[name])
        assert table[name]["drift_probability"] == 0.0, (name, table[name])
    assert any(table[n]["drift_probability"] > 0 for n in adaptation["subsets_adapted"])
    assert card.contrasts == ("T1w", "FLAIR", "T2w") and card.name == "adapted"
    assert sorted(p.name for p in out.iterdir()) == ["adaptation", "anchor.pt", "model.pt",
                                                     "model_card.json"]
    assert card.anchor == {"contrast": "FLAIR", "weights": "anchor.pt",  # a byte copy of the base
                           "sha256": sha256_of(base_model / "model.pt"), "subsets": ["T1w"]}
    assert adaptation["flair_subsets"] == "the base model's weights (anchor.pt)"
    assert card.description.startswith(
        f"base {__version__} adapted with bids_mdpp adapt on 1 unlabelled session(s) of tiny "
        "training set "
        "(no label read; inputs with FLAIR, and those of T1w alone, keep the base model's "
        "weights). Base model: ")
    base_network = load_model(base_model).network
    assert loaded.network_for(["T1w", "FLAIR"]) is loaded.anchor_network
    assert loaded.network_for(["T1w", "T2w"]) is loaded.network
    assert loaded.network_for(["T1w"]) is loaded.anchor_network  # --base-subsets T1w
    assert all(torch.equal(a, b) for a, b in zip(loaded.anchor_network.state_dict().values(),
                                                 base_network.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(loaded.network.state_dict().values(),
                                                     base_network.state_dict().values()))
    assert (out / "adaptation" / "metrics.csv").read_text().count("\n") == 3

    # the participant level with the adapted model reuses the preprocessing and says so
    participant_out = tmp_path / "derivatives"
    status, err = run_cli([bids, participant_out, "participant", "--participant-label", "01",
                           "--model", out, "-w", work, "--skip-bids-validation",
                           "--omp-nthreads", "1"], capsys)
    assert status == 0, err
    assert "adapted with bids_mdpp adapt from base" in err
    sidecar = json.loads(next(participant_out.rglob("*_label-lesion_mask.json")).read_text())
    assert sidecar["Model"]["AdaptedFrom"]["SHA256"] == adaptation["base_model"]["sha256"]
    assert sidecar["Model"]["AdaptedOn"] == {"Dataset": "tiny training set",
                                             "Sessions": ["sub-01"], "LabelsUsed": False}
    assert sidecar["Model"]["AnchorWeights"] == {"Contrast": "FLAIR", "Subsets": ["T1w"],
                                                 "SHA256": card.anchor["sha256"]}
    report = (participant_out / "sub-01.html").read_text()
    assert "adapted with bids_mdpp adapt from base" in report
    assert "inputs with FLAIR, and those of T1w alone, use the base model" in report
    assert "unlabelled session(s) of tiny training set" in report


def test_resume_gives_the_weights_of_an_uninterrupted_run(base_model, cohort, work, tmp_path,
                                                           capsys):
    bids, _ = cohort
    quick = [a for a in QUICK]
    quick[quick.index("--epochs") + 1] = "1"
    interrupted, whole = tmp_path / "interrupted", tmp_path / "whole"
    common = ["--model", base_model, "-w", work, "--participant-label", "01",
              "--agreement-sessions", "1", "--flair-subsets", "adapted",
              "--targets", "soft", "--lesion-share", "0.5"]
    assert run_cli(["adapt", bids, interrupted, *common, *quick], capsys)[0] == 0
    status, err = run_cli(["adapt", bids, interrupted, *common, *quick], capsys)
    assert status == 64 and "--resume" in err
    status, err = run_cli(["adapt", bids, interrupted, *common, *QUICK, "--resume"], capsys)
    assert status == 0, err
    assert "Resuming from" in err and "after epoch 1" in err and "reusing the teacher's" in err
    assert run_cli(["adapt", bids, whole, *common, *QUICK], capsys)[0] == 0
    resumed = torch.load(interrupted / "model.pt", weights_only=True)
    uninterrupted = torch.load(whole / "model.pt", weights_only=True)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    card = json.loads((whole / "model_card.json").read_text())
    assert card["anchor"] == {} and not (whole / "anchor.pt").exists()
    assert card["training"]["adaptation"]["flair_subsets"] == "the adapted weights"
    assert "(no label read; one set of weights for every input)" in card["description"]
    assert card["training"]["adaptation"]["lesion_share"] == 0.5
    assert card["training"]["adaptation"]["targets"] == "soft"
    assert card["training"]["adaptation"]["mask_loss"] is None
    measured = card["metrics"]["adaptation"]  # one network for all: the anchoring term holds FLAIR
    assert measured["sessions"] == ["sub-01"]
    anchored = card["training"]["adaptation"]["subsets_anchored"]
    drift = {name: measured["agreement"][name]["drift_dsc"] for name in anchored}
    assert all(value >= FLAIR_DRIFT_DSC_EACH for value in drift.values()), drift
    assert sum(drift.values()) / len(drift) >= FLAIR_DRIFT_DSC, drift
    base = torch.load(base_model / "model.pt", weights_only=True)
    assert not all(torch.equal(base[k], uninterrupted[k]) for k in uninterrupted)
    status, err = run_cli(["adapt", bids, whole, *common, *QUICK, "--resume", "--seed", "5"],
                          capsys)
    assert status == 64 and "seed" in err
    status, err = run_cli(["adapt", bids, whole, *common[:-1], "0.25", *QUICK, "--resume"],
                          capsys)
    assert status == 64 and "lesion_share" in err


def _bad_model(tmp_path):
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "model_card.json").write_text("{ this is not JSON")
    (folder / "model.pt").write_bytes(b"nor are these weights")
    return folder


@pytest.mark.parametrize("case, code, messages", [
    ("no_flair", 66, ["no session can teach", "sub-01: no FLAIR (only T1w, T2w)",
                      "sub-02: no FLAIR (only T2w)"]),
    ("unreadable", 66, ["no session can teach", "sub-01_FLAIR.nii.gz"]),
    ("not_a_model", 65, ["not_a_model/model_card.json", "not valid JSON"]),
    ("no_model", 64, ["--model", "no such model directory"]),
    ("confidence", 64, ["--confidence"]),
    ("lesion_share", 64, ["--lesion-share"]),
    ("mask_with_share", 64, ["--lesion-share", "--targets mask"]),
    ("intensity_model", 64, ["--intensity-model", "'both'"]),
    ("base_subsets_flair", 64, ["--base-subsets 'T1w+FLAIR' includes FLAIR"]),
    ("base_subsets_unknown", 64, ["--base-subsets 'PDw' is not a subset", "T1w, FLAIR, T2w"]),
    ("base_subsets_adapted", 64, ["--base-subsets", "needs --flair-subsets base"]),
])
def test_bad_input_fails_clearly(case, code, messages, base_model, tmp_path, capsys):
    subjects = {"01": ("T1w", "T2w"), "02": ("T2w",)} if case == "no_flair" else \
        {"01": ("T1w", "FLAIR")}
    bids, _ = write_bids_dataset(tmp_path, subjects, masks=set())
    if case == "unreadable":
        (bids / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz").write_bytes(b"\x1f\x8b truncated")
    model = {"not_a_model": _bad_model(tmp_path), "no_model": tmp_path / "nowhere"}.get(
        case, base_model)
    extra = {"confidence": ["--confidence", "0.4"],
             "lesion_share": ["--lesion-share", "1"],
             "mask_with_share": ["--targets", "mask", "--lesion-share", "0.5"],
             "intensity_model": ["--intensity-model", "both"],
             "base_subsets_flair": ["--base-subsets", "T1w+FLAIR"],
             "base_subsets_unknown": ["--base-subsets", "PDw"],
             "base_subsets_adapted": ["--base-subsets", "T1w", "--flair-subsets", "adapted"],
             }.get(case, [])
    status, err = run_cli(["adapt", bids, tmp_path / "out", "--model", model, *QUICK, *extra],
                          capsys)
    assert status == code, err
    for message in messages:
        assert message in err


def test_the_teacher_averages_the_network_with_the_intensity_model(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import nibabel as nib
    import numpy as np

    import bids_mdpp.atlas_priors as atlas_priors
    import bids_mdpp.intensity_model as intensity_model
    from bids_mdpp.adapt.sessions import TEACHER_NAME, teacher_cache
    from bids_mdpp.errors import InputDataError

    shape = (12, 12, 12)
    blob = np.zeros(shape, bool)
    blob[4:8, 4:8, 4:8] = True
    paths = {}
    for name in ("T1w", "FLAIR", "brain"):
        paths[name] = tmp_path / f"{name}.nii.gz"
        data = np.ones(shape, np.uint8) if name == "brain" else np.random.default_rng(0).normal(
            size=shape).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(paths[name]))
    preproc = SimpleNamespace(images={"T1w": paths["T1w"], "FLAIR": paths["FLAIR"]},
                              brain_mask=paths["brain"])
    weight = {"T1w+FLAIR": 0.5}
    card = SimpleNamespace(contrasts=("T1w", "FLAIR", "T2w"), threshold_for=lambda c: 0.5,
                           network_weight_for=lambda c: weight["+".join(c)])
    base = SimpleNamespace(card=card, sha256="0" * 64)
    network = SimpleNamespace(predict=lambda volumes, brain: np.full(shape, 0.4, np.float32))
    seen = []

    def posterior(volumes, brain, priors):
        seen.append((sorted(volumes), priors))
        return np.where(blob, 1.0, 0.0).astype(np.float32)

    monkeypatch.setattr(atlas_priors, "session_priors", lambda images, mask, cache_dir: "priors")
    monkeypatch.setattr(intensity_model, "session_fit",
                        lambda volumes, brain, priors: (posterior(volumes, brain, priors), None))
    folder = tmp_path / "adapt" / "sub-01"

    def teach(mode, predictor=network):
        cache, entry = teacher_cache("sub-01", "01", preproc, base, predictor, folder,
                                     intensity_model=mode, templates_dir=tmp_path)
        return cache, entry, np.load(folder / TEACHER_NAME).astype(np.float32)

    cache, entry, teacher = teach("combine")
    assert seen == [(["FLAIR", "T1w"], "priors")] and entry["Mode"] == "combine"
    assert np.allclose(teacher[blob], 0.7, atol=1e-3) and np.allclose(teacher[~blob], 0.2, atol=1e-3)
    assert np.array_equal(np.load(folder / "label.npy") > 0, blob)  # 0.7 ≥ 0.5 > 0.2
    assert cache.lesion_slices

    # cached: neither model runs again, and the entry comes back with the map
    broken = SimpleNamespace(predict=lambda volumes, brain: pytest.fail("predicted again"))
    assert teach("combine", broken)[1] == entry and len(seen) == 1

    # a card that gives the network no weight for the teacher's contrasts: another teacher,
    # recomputed, the posterior alone
    weight["T1w+FLAIR"] = 0.0
    _, entry, teacher = teach("combine", broken)  # the network does not run
    assert entry["NetworkWeight"] == 0.0 and len(seen) == 2
    assert np.allclose(teacher[blob], 1.0) and np.allclose(teacher[~blob], 0.0)
    weight["T1w+FLAIR"] = 0.5

    # the network alone is another teacher: recomputed, and its 0.4 is no lesion
    cache, entry, teacher = teach("off")
    assert entry == {"Mode": "off"} and np.allclose(teacher, 0.4, atol=1e-3)
    assert not (np.load(folder / "label.npy") > 0).any() and len(seen) == 2

    # a template fit that fails leaves the network's map, with the reason
    def failing(images, mask, cache_dir):
        raise InputDataError(images["FLAIR"], "registration to the template failed")

    monkeypatch.setattr(atlas_priors, "session_priors", failing)
    (folder / "cache.json").unlink()
    _, entry, teacher = teach("combine")
    assert entry["Mode"] == "off" and "registration to the template failed" in entry["Skipped"]
    assert np.allclose(teacher, 0.4, atol=1e-3)


def test_inputs_without_flair_learn_only_from_confident_voxels():
    from tiny_networks import tiny_network

    from bids_mdpp.adapt.objective import AgreementLoss

    student, teacher = tiny_network(3), tiny_network(3)
    loss = AgreementLoss(student, teacher, anchor_index=1, confidence=0.8, ssim_weight=0.0)
    image = torch.randn(2, 9, 16, 16)
    available = torch.ones(2, 3)
    drop = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])   # no FLAIR
    uncertain = torch.full((2, 1, 16, 16), 0.5)
    terms = loss(image, available, drop, uncertain)
    assert terms.n_adapted == 2 and terms.n_anchored == 0 and terms.adapted == 0.0
    terms.total.backward()
    assert all(p.grad is None or not p.grad.any() for p in student.parameters())
    confident = uncertain.clone()
    confident[:, :, 4:8, 4:8] = 1.0
    terms = loss(image, available, drop, confident)
    assert terms.adapted > 0
    with_flair = torch.ones(2, 3)
    terms = loss(image, available, with_flair, confident)
    assert terms.n_anchored == 2 and terms.adapted == 0.0 and terms.anchored > 0


def test_the_lesion_share_weighs_the_teachers_lesion_voxels_apart_from_the_background():
    from tiny_networks import tiny_network

    from bids_mdpp.adapt.objective import AgreementLoss

    student, teacher = tiny_network(3), tiny_network(3)
    target = torch.zeros(1, 1, 16, 16)
    target[:, :, 4:6, 4:6] = 0.9            # 4 confident lesion voxels among 256
    target[:, :, 8:10, 8:10] = 0.5          # uncertain: never taught
    losses = torch.rand(1, 1, 16, 16)
    pooled = AgreementLoss(student, teacher, anchor_index=1, confidence=0.8, ssim_weight=0.0)
    lesion, background = target >= 0.8, target <= 0.2
    expected = float(losses[lesion | background].mean())
    assert float(pooled.confident_mean(losses, target)) == pytest.approx(expected, rel=1e-6)
    for share in (0.25, 0.5, 0.9):
        balanced = AgreementLoss(student, teacher, anchor_index=1, confidence=0.8,
                                 ssim_weight=0.0, lesion_share=share)
        expected = share * float(losses[lesion].mean()) + \
            (1 - share) * float(losses[background].mean())
        assert float(balanced.confident_mean(losses, target)) == pytest.approx(expected, rel=1e-6)
    # a batch with no confident lesion voxel takes the background's mean alone
    no_lesion = torch.where(target >= 0.8, torch.tensor(0.5), target)
    assert float(balanced.confident_mean(losses, no_lesion)) == pytest.approx(
        float(losses[no_lesion <= 0.2].mean()), rel=1e-6)
    with pytest.raises(ValueError, match="lesion_share"):
        AgreementLoss(student, teacher, anchor_index=1, confidence=0.8, ssim_weight=0.0,
                      lesion_share=1.0)


def test_mask_targets_train_the_inputs_without_flair_with_the_base_models_loss_everywhere():
    from tiny_networks import tiny_network

    from bids_mdpp.adapt.objective import AgreementLoss
    from bids_mdpp.nn.losses import FocalLoss
    from bids_mdpp.nn.moddrop import apply_code

    student, teacher = tiny_network(3), tiny_network(3)
    focal = FocalLoss(gamma=2.0, alpha=0.25)
    loss = AgreementLoss(student, teacher, anchor_index=1, confidence=0.8, ssim_weight=0.0,
                         mask_loss=focal)
    image = torch.randn(2, 9, 16, 16)
    available = torch.ones(2, 3)
    drop = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])   # no FLAIR
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:8, 4:8] = 1.0
    terms = loss(image, available, drop, mask)
    with torch.no_grad():
        expected = focal(student(apply_code(image, drop, 3), drop), mask)
    assert terms.adapted == pytest.approx(float(expected), rel=1e-5)
    # unlike the soft targets, a target the teacher is unsure of is still a label here
    soft = AgreementLoss(student, teacher, anchor_index=1, confidence=0.8, ssim_weight=0.0)
    assert soft(image, available, drop, torch.full_like(mask, 0.5)).adapted == 0.0
    assert loss(image, available, drop, torch.zeros_like(mask)).adapted > 0


def test_the_sidecar_of_a_model_that_was_not_adapted_has_no_adaptation():
    from bids_mdpp.outputs import model_provenance

    model = model_provenance({"name": "m", "version": "1", "mode": "moddrop++",
                              "training": {}}, "ab" * 32)
    assert model == {"Name": "m", "Version": "1", "Mode": "moddrop++", "SHA256": "ab" * 32}
