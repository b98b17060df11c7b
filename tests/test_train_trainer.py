"""The Trainer on cached tiny subjects: modes, checkpoints and resume, the model directory."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_support import normalised_subject

from bids_mdpp.errors import UsageError
from bids_mdpp.model import load_model, save_model
from bids_mdpp.training import NETWORK_SIZES, TrainingConfig
from bids_mdpp.training.distributed import init_distributed
from bids_mdpp.training.slabs import write_subject_cache
from bids_mdpp.training.trainer import Trainer, contrast_subsets, dice, lr_factor

CONTRASTS = ("T1w", "FLAIR", "T2w")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (and the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    out = []
    for seed, contrasts in ((1, CONTRASTS), (2, ("T1w", "FLAIR")), (3, CONTRASTS)):
        volumes, label, brain = normalised_subject(seed, contrasts)
        out.append(write_subject_cache(root / f"sub-{seed}", key=f"sub-{seed}", subject=str(seed),
                                       volumes=volumes, label=label, brain=brain,
                                       contrasts=CONTRASTS))
    return out


def config(tmp_path: Path, **changes) -> TrainingConfig:
    base = TrainingConfig(
        bids_dir=tmp_path / "bids", output_dir=tmp_path / "model", labels_dir=tmp_path / "labels",
        contrasts=CONTRASTS, mode="moddrop++", epochs=2, batch_size=4, crop=32,
        steps_per_epoch=2, network=NETWORK_SIZES["tiny"], precision="fp32", seed=1,
        command_line="bids_mdpp train bids model --labels labels",
    )
    return dataclasses.replace(base, **changes)


def trainer(cfg: TrainingConfig, caches, *, validation=True) -> Trainer:
    ctx = init_distributed(torch.device("cpu"))
    return Trainer(cfg, cfg.contrasts, caches[:2], caches[2:] if validation else [], ctx=ctx,
                   data_card={"dataset": "tiny", "subjects": {"training": ["1", "2"]}})


def test_learning_rate_is_constant_then_decays_linearly():
    factors = [lr_factor(e, 10, 4) for e in range(10)]
    assert factors[:6] == [1.0] * 6
    assert factors[6:] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert [lr_factor(e, 3, 0) for e in range(3)] == [1.0, 1.0, 1.0]


def test_validation_subsets_are_every_non_empty_subset():
    assert len(contrast_subsets(CONTRASTS)) == 7
    assert contrast_subsets(CONTRASTS)[0] == CONTRASTS
    assert contrast_subsets(["FLAIR"], "full") == [("FLAIR",)]


@pytest.mark.parametrize("mode", ["moddrop", "moddrop+", "moddrop++", "independent"])
def test_each_mode_trains_a_step(tmp_path, caches, mode):
    cfg = config(tmp_path, mode=mode, epochs=1, steps_per_epoch=1,
                 contrasts=("T1w", "FLAIR") if mode == "independent" else CONTRASTS)
    run = trainer(cfg, caches, validation=False)
    assert run.network.config.dynamic_head == (mode in ("moddrop+", "moddrop++"))
    assert run.network.config.n_contrasts == len(cfg.contrasts)
    before = {k: v.clone() for k, v in run.network.state_dict().items()}
    row = run.train_epoch(0)
    assert np.isfinite(row["train_loss"]) and row["slices_per_s"] > 0
    after = run.network.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    if mode == "independent":  # no drop-out: every sample keeps what the subject has
        assert all(run.dataset.params(i).drop == (1, 1) for i in range(len(run.dataset)))


def test_training_writes_checkpoint_metrics_and_a_loadable_model(tmp_path, caches):
    from bids_mdpp.inference import Predictor

    cfg = config(tmp_path)
    directory = trainer(cfg, caches).fit()
    assert directory == cfg.output_dir
    state = torch.load(cfg.training_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert {"model", "optimizer", "scheduler", "rng", "best"} <= set(state)
    with open(cfg.training_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "slices_per_s", "val_mean_dsc", "val_dsc_T1w+FLAIR+T2w",
            "val_dsc_FLAIR"} <= set(rows[0])
    loaded = load_model(directory)
    card = loaded.card
    assert card.contrasts == CONTRASTS and card.mode == "moddrop++"
    assert card.network["growth_rate"] == 4 and card.network["dynamic_head"] is True
    assert card.training["dataset"] == "tiny" and card.training["epochs"] == 2
    assert card.training["command_line"].startswith("bids_mdpp train")
    assert set(card.metrics["dsc"]) == {"T1w+FLAIR+T2w", "T1w+FLAIR", "T1w+T2w", "FLAIR+T2w",
                                        "T1w", "FLAIR", "T2w"}
    assert card.metrics["validation_sessions"] == ["sub-3"]
    assert card.software["torch"] == torch.__version__
    best = torch.load(cfg.training_dir / "best.pt", weights_only=True)
    assert all(torch.equal(best[k], v) for k, v in loaded.network.state_dict().items())
    volumes, _, brain = normalised_subject(9, ("FLAIR",))
    probability = Predictor(loaded, device="cpu").predict(volumes, brain)
    assert probability.shape == (40, 40, 40) and 0 <= probability.min() <= probability.max() <= 1


def test_resume_continues_the_epoch_count_and_matches_an_uninterrupted_run(tmp_path, caches):
    whole = config(tmp_path / "whole", epochs=3, num_workers=1)
    trainer(whole, caches).fit()

    parts = config(tmp_path / "parts", epochs=3, num_workers=1)
    first = trainer(parts, caches)

    def interrupt(run, row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    first.hooks.append(interrupt)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert not (parts.output_dir / "model.pt").exists()
    torch.manual_seed(12345)  # a new process would start from another RNG state
    second = trainer(dataclasses.replace(parts, resume=True), caches)
    seen = []
    second.hooks.append(lambda run, row: seen.append(row["epoch"]))
    second.fit()
    assert seen == [2, 3]
    a = torch.load(whole.output_dir / "model.pt", weights_only=True)
    b = torch.load(parts.output_dir / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = torch.load(parts.training_dir / "checkpoint.pt", weights_only=True)["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_resume_with_other_settings_is_refused(tmp_path, caches):
    cfg = config(tmp_path, epochs=1)
    trainer(cfg, caches, validation=False).fit()
    other = dataclasses.replace(cfg, mode="moddrop+", resume=True)
    with pytest.raises(UsageError, match="mode"):
        trainer(other, caches, validation=False).fit()


def test_early_stopping_after_patience_epochs(tmp_path, caches):
    cfg = config(tmp_path, epochs=6, patience=1)
    run = trainer(cfg, caches)
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    run.validate = lambda: {"val_mean_dsc": next(scores)}
    run.fit()
    assert [row["epoch"] for row in run.history] == [1, 2]
    assert run.best_epoch == 1
    assert load_model(cfg.output_dir).card.metrics["epoch"] == 1


def test_fine_tuning_starts_from_the_given_model(tmp_path, caches):
    base = config(tmp_path / "base", epochs=1)
    trainer(base, caches, validation=False).fit()
    tuned = config(tmp_path / "tuned", epochs=1, init_from=base.output_dir,
                   network=NETWORK_SIZES["default"])
    run = trainer(tuned, caches, validation=False)
    start = load_model(base.output_dir).network.state_dict()
    assert all(torch.equal(start[k], v) for k, v in run.network.state_dict().items())
    run.fit()
    card = load_model(tuned.output_dir).card
    assert card.training["fine_tuned_from"]["directory"] == str(base.output_dir)
    wrong = dataclasses.replace(tuned, output_dir=tmp_path / "x", mode="moddrop")
    with pytest.raises(UsageError, match="dynamic head"):
        trainer(wrong, caches, validation=False)
    anchored = load_model(tuned.output_dir)
    save_model(tmp_path / "anchored", anchored.network, anchored.card,
               anchor=("FLAIR", anchored.network))
    from_anchored = dataclasses.replace(tuned, output_dir=tmp_path / "y",
                                        init_from=tmp_path / "anchored")
    with pytest.raises(UsageError, match="separate weights for the inputs with FLAIR"):
        trainer(from_anchored, caches, validation=False)


def test_set_training_mode_can_keep_batchnorm_in_evaluation_mode():
    from bids_mdpp.training.trainer import set_training_mode

    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2),
                                  torch.nn.Dropout2d(0.5)).eval()
    set_training_mode(network)
    assert all(m.training for m in network.modules())
    set_training_mode(network, freeze_batchnorm=True)
    assert network.training and network[0].training and network[2].training
    assert not network[1].training


def test_fine_tuning_with_frozen_batchnorm_keeps_its_running_statistics(tmp_path, caches):
    base = config(tmp_path / "base", epochs=1)
    trainer(base, caches, validation=False).fit()
    start = load_model(base.output_dir).network.state_dict()
    statistics = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert statistics
    tuned = {}
    for freeze in (False, True):
        cfg = config(tmp_path / f"tuned-{freeze}", epochs=1, init_from=base.output_dir,
                     freeze_batchnorm=freeze)
        trainer(cfg, caches, validation=False).fit()
        tuned[freeze] = load_model(cfg.output_dir)
    kept = tuned[True].network.state_dict()
    assert all(torch.equal(kept[k], start[k]) for k in statistics)
    assert not all(torch.equal(kept[k], v) for k, v in start.items())  # the weights learned
    updated = tuned[False].network.state_dict()
    assert not all(torch.equal(updated[k], start[k]) for k in statistics)
    assert tuned[True].card.training["fine_tuned_from"]["batchnorm"] == \
        "running statistics kept (--freeze-batchnorm)"
    assert tuned[False].card.training["fine_tuned_from"]["batchnorm"] == \
        "running statistics updated"
    resumed = config(tmp_path / "tuned-True", epochs=2, init_from=base.output_dir, resume=True)
    with pytest.raises(UsageError, match="freeze_batchnorm"):
        trainer(resumed, caches, validation=False).fit()
    with pytest.raises(UsageError, match="--freeze-batchnorm keeps the running statistics"):
        config(tmp_path, freeze_batchnorm=True)


def test_the_model_card_records_the_single_contrast_share(tmp_path, caches):
    cfg = config(tmp_path, epochs=1, single_contrast_p=0.5)
    run = trainer(cfg, caches, validation=False)
    assert run.dataset.single_contrast_p == 0.5
    run.fit()
    card = load_model(cfg.output_dir).card
    assert card.training["modality_dropout"] == {"single_contrast_p": 0.5}
    with pytest.raises(UsageError, match="needs modality drop-out"):
        config(tmp_path, mode="independent", single_contrast_p=0.5)
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        config(tmp_path, single_contrast_p=-0.2)


def test_negative_slices_reach_the_dataset_and_the_card(tmp_path, caches):
    cfg = config(tmp_path, epochs=1, negative_slice_p=0.3)
    run = trainer(cfg, caches, validation=False)
    assert len(run.dataset) > run.dataset.n_lesion_slices > 0
    run.fit()
    training = load_model(cfg.output_dir).card.training
    assert training["lesion_slices"] == run.dataset.n_lesion_slices
    assert training["negative_slices"] == {"share": 0.3, "candidates": len(run.dataset.negative_pool)}
    assert training["negative_slices"]["candidates"] > 0
    with pytest.raises(UsageError, match=r"--negative-slice-p must lie in \[0, 1\)"):
        config(tmp_path, negative_slice_p=1.0)


def test_domain_randomisation_reaches_the_dataset_and_the_card(tmp_path, caches):
    cfg = config(tmp_path, epochs=1, randomise_p=0.4)
    run = trainer(cfg, caches, validation=False)
    assert run.dataset.settings.randomisation.p == 0.4
    assert any(any(run.dataset.params(i).randomised) for i in range(len(run.dataset)))
    run.fit()
    recorded = load_model(cfg.output_dir).card.training["domain_randomisation"]
    assert recorded["p"] == 0.4 and recorded["slice_max"] > 1 and recorded["bias_log_max"] > 0
    with pytest.raises(UsageError, match=r"--randomise-p must lie in \[0, 1\]"):
        config(tmp_path, randomise_p=1.5)


def test_metrics_log_the_peak_resident_memory_of_each_epoch(tmp_path, caches):
    cfg = config(tmp_path, epochs=2, steps_per_epoch=1)
    trainer(cfg, caches).fit()
    with open(cfg.training_dir / "metrics.csv") as handle:
        peaks = [float(r["peak_rss_gb"]) for r in csv.DictReader(handle)]
    assert len(peaks) == 2 and 0.05 < peaks[0] <= peaks[1] < 64


def test_free_memory_goes_back_to_the_kernel_every_few_steps_and_after_validation(
        tmp_path, caches, monkeypatch):
    from bids_mdpp.training import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "RELEASE_EVERY_STEPS", 2)
    monkeypatch.setattr(trainer_module, "release_free_memory", lambda: calls.append("release"))
    cfg = config(tmp_path, epochs=2, steps_per_epoch=5)
    run = trainer(cfg, caches)
    steps_seen = []  # releases so far, at the start of each step
    original_step = run.train_step

    def counting_step(batch):
        steps_seen.append(len(calls))
        return original_step(batch)

    monkeypatch.setattr(run, "train_step", counting_step)
    run.fit()
    # steps 2 and 4 of each epoch, then once after each epoch's validation
    assert len(calls) == 2 * (2 + 1)
    assert steps_seen == [0, 0, 1, 1, 2, 3, 3, 4, 4, 5]


def test_lesion_free_validation_sessions_are_scored_by_volume_not_dsc(tmp_path, caches):
    volumes, label, brain = normalised_subject(4, CONTRASTS)
    free = write_subject_cache(tmp_path / "sub-4", key="sub-4", subject="4", volumes=volumes,
                               label=np.zeros_like(label), brain=brain, contrasts=CONTRASTS)
    ctx = init_distributed(torch.device("cpu"))
    cfg = config(tmp_path, val_subsets="full")
    run = Trainer(cfg, cfg.contrasts, caches[:2], [caches[2], free], ctx=ctx,
                  data_card={"dataset": "tiny", "grid_mm": 1.0})
    # a network that calls every brain voxel lesion
    with torch.no_grad():
        run.network.final_conv.bias.fill_(20.0)
    scores = run.validate()
    expected = dice(np.asarray(caches[2].brain()) > 0, np.asarray(caches[2].label()) > 0)
    assert scores["val_dsc_T1w+FLAIR+T2w"] == pytest.approx(expected)
    assert scores["val_mean_dsc"] == pytest.approx(expected)  # the lesion-free session is not in it
    assert scores["val_lesion_free_mm3"] == pytest.approx(float((np.asarray(brain) > 0).sum()))

    alone = Trainer(cfg, cfg.contrasts, caches[:2], [free], ctx=ctx,
                    data_card={"dataset": "tiny", "grid_mm": 1.0})
    with torch.no_grad():
        alone.network.final_conv.bias.fill_(-20.0)
    assert alone.validate() == {"val_lesion_free_mm3": 0.0}  # no DSC: nothing to choose by


def test_keep_last_writes_the_last_epoch_and_resume_rewrites_only_the_model(tmp_path, caches):
    cfg = config(tmp_path, epochs=3)
    run = trainer(cfg, caches)
    scores = iter([0.5, 0.4, 0.3])  # the first epoch is the best by validation
    run.validate = lambda: {"val_mean_dsc": next(scores)}
    run.fit()
    best = torch.load(cfg.training_dir / "best.pt", weights_only=True)
    written = torch.load(cfg.output_dir / "model.pt", weights_only=True)
    assert all(torch.equal(best[k], written[k]) for k in best)
    assert load_model(cfg.output_dir).card.metrics["epoch"] == 1

    # --resume --keep last after the last epoch: no training, the last epoch's weights written
    again = trainer(dataclasses.replace(cfg, resume=True, keep="last"), caches)
    seen = []
    again.hooks.append(lambda run, row: seen.append(row["epoch"]))
    again.fit()
    assert seen == []
    last = torch.load(cfg.training_dir / "checkpoint.pt", weights_only=True)["model"]
    written = torch.load(cfg.output_dir / "model.pt", weights_only=True)
    assert all(torch.equal(last[k], written[k]) for k in last)
    assert not all(torch.equal(best[k], written[k]) for k in best)
    metrics = load_model(cfg.output_dir).card.metrics
    assert metrics["epoch"] == 3 and metrics["kept"] == "last" and metrics["mean_dsc"] == 0.3


def test_keep_must_be_best_or_last(tmp_path):
    with pytest.raises(UsageError, match="--keep"):
        config(tmp_path, keep="median")
