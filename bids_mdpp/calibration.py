"""Per-subset decision thresholds chosen on labelled sessions (``bids_mdpp calibrate``).

A network's probabilities are not equally calibrated for every contrast subset: with one weak
contrast (T1w alone, say) lesions may sit consistently below 0.5.  Calibration runs a model on
labelled sessions with every non-empty subset of their contrasts, measures the DSC against the
reference mask at each threshold of :data:`THRESHOLD_GRID` on the model grid, and keeps, per
subset, the threshold with the best mean DSC over the sessions.  The chosen thresholds go to
the model card's ``thresholds`` (:meth:`~bids_mdpp.model.ModelCard.threshold_for`), which the
participant level uses for the contrasts a session has.

With ``--probabilities`` it first fits a logistic recalibration of the probabilities (a scale
and a bias on their logits, :mod:`bids_mdpp.recalibration`) by maximum likelihood over the brain
voxels of every scored session and subset, writes it to the card's ``probability_calibration``,
and chooses the thresholds on the recalibrated probabilities (``--no-thresholds``: none are
chosen, and every subset uses the card's ``threshold`` on the recalibrated probabilities).

The sessions should be independent of those the model was trained on and resemble the scans it
will see; the card records which sessions were used.

API::

    result = calibrate(config)             # CalibrationConfig → CalibrationResult
    curves = dice_curve(probability, label)  # DSC at every threshold of THRESHOLD_GRID
    threshold, dsc = best_threshold(mean_curve, default=0.5)
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_mdpp.contrasts import subset_name
from bids_mdpp.errors import UsageError

LOGGER = logging.getLogger("bids_mdpp.calibration")

#: Thresholds tried: 0.05, 0.10, …, 0.95.
THRESHOLD_GRID = np.round(np.arange(1, 20) * 0.05, 2)
#: Subset choices of ``--subsets``.
SUBSET_CHOICES = ("all", "single", "full")


def dice_curve(probability: np.ndarray, label: np.ndarray,
               thresholds: Sequence[float] = THRESHOLD_GRID) -> np.ndarray:
    """DSC of ``probability >= t`` against ``label`` for every ``t`` in ``thresholds``.

    ``probability`` (X, Y, Z) in [0, 1]; ``label`` boolean of the same shape.  A threshold at
    which both masks are empty scores 1.  Returns float64 of ``len(thresholds)``.
    """
    probability = np.asarray(probability)
    label = np.asarray(label) > 0
    if probability.shape != label.shape:
        raise ValueError(f"probability {probability.shape} and label {label.shape} differ in shape")
    lowest = float(np.min(thresholds))
    candidates = probability >= lowest
    lesion_p = probability[label]
    other_p = probability[candidates & ~label]
    n_label = lesion_p.size
    out = np.empty(len(thresholds))
    for i, t in enumerate(thresholds):
        tp = int(np.count_nonzero(lesion_p >= t))
        fp = int(np.count_nonzero(other_p >= t))
        total = tp + fp + n_label
        out[i] = 1.0 if total == 0 else 2.0 * tp / total
    return out


def best_threshold(mean_curve: np.ndarray, default: float = 0.5,
                   thresholds: Sequence[float] = THRESHOLD_GRID) -> tuple[float, float]:
    """(threshold, DSC) of the curve's maximum; ties go to the threshold nearest ``default``."""
    mean_curve = np.asarray(mean_curve, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    best = np.flatnonzero(mean_curve >= mean_curve.max() - 1e-12)
    pick = best[np.argmin(np.abs(thresholds[best] - default))]
    return float(thresholds[pick]), float(mean_curve[pick])


def subsets_of(present: Sequence[str], which: str) -> list[tuple[str, ...]]:
    """The subsets of ``present`` to calibrate: ``all`` non-empty ones, each ``single``
    contrast, or the ``full`` set."""
    from bids_mdpp.training.trainer import contrast_subsets

    if which == "single":
        return [(c,) for c in present]
    return contrast_subsets(present, which)


@dataclass(frozen=True)
class CalibrationConfig:
    """One ``bids_mdpp calibrate`` run (paths absolute)."""

    bids_dir: Path
    output_dir: Path
    labels_dir: Path
    model_dir: Path | None = None
    subsets: str = "all"
    participant_labels: tuple[str, ...] = ()
    work_dir: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    nprocs: int = 1
    omp_nthreads: int = 1
    overwrite: bool = False
    probabilities: bool = False
    thresholds: bool = True
    command_line: str = ""

    def __post_init__(self) -> None:
        if self.subsets not in SUBSET_CHOICES:
            raise UsageError(f"--subsets must be one of {', '.join(SUBSET_CHOICES)}, got {self.subsets!r}")
        if not self.thresholds and not self.probabilities:
            raise UsageError("--no-thresholds leaves nothing to calibrate without --probabilities")
        if self.nprocs < 1 or self.omp_nthreads < 1:
            raise UsageError("--nprocs and --omp-nthreads must be at least 1")

    @property
    def effective_work_dir(self) -> Path:
        """Preprocessing cache (default ``OUTPUT_DIR/calibration/work``)."""
        return self.work_dir or self.output_dir / "calibration" / "work"


@dataclass(frozen=True)
class CalibrationResult:
    """What calibration chose: per subset name, the threshold, its mean DSC, the mean DSC at
    the model's previous threshold, and how many sessions were scored; with
    ``--probabilities``, the fitted recalibration (:func:`fit_probability_calibration`)."""

    output_dir: Path
    chosen: dict[str, dict]
    probability_fit: dict | None = None


def check_output(config: CalibrationConfig, model_dir: Path) -> None:
    """OUTPUT_DIR must be a new folder (or ``--overwrite``), not the input model's own."""
    from bids_mdpp.model import CARD_NAME

    output = config.output_dir
    if output.resolve() == model_dir.resolve():
        raise UsageError(f"OUTPUT_DIR {output} is the model being calibrated; choose a new folder "
                         "(the calibrated model is written there, the input model is left as it is)")
    if output == config.bids_dir or config.bids_dir in output.parents:
        raise UsageError(f"OUTPUT_DIR {output} lies inside BIDS_DIR; choose a folder outside it")
    if (output / CARD_NAME).exists() and not config.overwrite:
        raise UsageError(f"{output} already holds a model; use --overwrite to replace it")


def score_sessions(config: CalibrationConfig, loaded, predictor,
                   keep_probabilities: bool = False) -> list[dict]:
    """DSC curves of every labelled session and subset: rows of session, subset, curve.

    With ``keep_probabilities`` each row also holds the probabilities and labels of the brain's
    voxels (``brain_probability`` float32, ``brain_label`` bool, 1-D) and the number of
    reference voxels outside the brain (``label_outside``), what a recalibration is fitted on.
    """
    import nibabel as nib

    from bids_mdpp.training.data import find_labelled_sessions, prepare_session
    from bids_mdpp.workflows.preproc import nipype_plugin

    card = loaded.card
    sessions = find_labelled_sessions(
        config.bids_dir, config.labels_dir, model_contrasts=card.contrasts,
        participant_labels=config.participant_labels or None,
    )
    plugin, plugin_args = nipype_plugin(config.nprocs)
    rows = []
    for session in sessions:
        prepared = prepare_session(
            session, config.effective_work_dir, grid_mm=card.grid_mm, plugin=plugin,
            plugin_args=plugin_args, omp_nthreads=config.omp_nthreads, bids_dir=config.bids_dir,
        )
        volumes = {c: np.asarray(nib.load(str(p)).dataobj, dtype=np.float32)
                   for c, p in prepared.images.items()}
        brain = np.asarray(nib.load(str(prepared.brain_mask)).dataobj) > 0
        label = prepared.label_on_grid() > 0
        present = [c for c in card.contrasts if c in volumes]
        for subset in subsets_of(present, config.subsets):
            probability = predictor.predict({c: volumes[c] for c in subset}, brain)
            curve = dice_curve(probability, label)
            rows.append({"session": prepared.key, "subset": subset_name(subset), "curve": curve,
                         "provenance": prepared.provenance})
            if keep_probabilities:
                rows[-1].update(brain_probability=probability[brain].astype(np.float32),
                                brain_label=label[brain],
                                label_outside=int(np.count_nonzero(label & ~brain)))
            LOGGER.info("%s, %s: DSC %.3f at %.2f, best %.3f", prepared.key, subset_name(subset),
                        float(np.interp(card.threshold_for(subset), THRESHOLD_GRID, curve)),
                        card.threshold_for(subset), float(curve.max()))
    return rows


#: Brain voxels per scored prediction drawn for the recalibration fit (all when fewer).
FIT_VOXELS_PER_PREDICTION = 200_000


def fit_probability_calibration(rows: Sequence[dict], seed: int = 0) -> dict:
    """Fit a logistic recalibration on the brain voxels of ``rows`` and recompute their curves.

    ``rows`` come from :func:`score_sessions` with ``keep_probabilities``; from each, at most
    :data:`FIT_VOXELS_PER_PREDICTION` brain voxels are drawn at random (every prediction
    weighs the same, lesion-free sessions included).  Each row's ``curve`` is replaced by the
    DSC curve of its recalibrated probabilities.  Returns the fit's record: ``scale``,
    ``bias``, the negative log-likelihood (nats per voxel) and the expected calibration error
    over the drawn voxels before and after, and the voxel counts.
    """
    from bids_mdpp import reliability
    from bids_mdpp.recalibration import apply_logistic, fit_logistic

    rng = np.random.default_rng(seed)
    drawn_p, drawn_label = [], []
    for row in rows:
        n = row["brain_probability"].size
        pick = (np.arange(n) if n <= FIT_VOXELS_PER_PREDICTION
                else rng.choice(n, FIT_VOXELS_PER_PREDICTION, replace=False))
        drawn_p.append(row["brain_probability"][pick])
        drawn_label.append(row["brain_label"][pick])
    p, label = np.concatenate(drawn_p), np.concatenate(drawn_label)
    try:
        fit = fit_logistic(p, label)
    except ValueError as exc:
        raise UsageError(f"cannot fit a probability calibration on these sessions: {exc}") from exc
    for row in rows:
        recalibrated = apply_logistic(row["brain_probability"], fit.scale, fit.bias)
        outside = row["label_outside"]
        row["curve"] = dice_curve(np.concatenate([recalibrated, np.zeros(outside, np.float32)]),
                                  np.concatenate([row["brain_label"], np.ones(outside, bool)]))
    ece = {when: reliability.expected_calibration_error(reliability.reliability_curve(q, label))
           for when, q in (("before", p), ("after", apply_logistic(p, fit.scale, fit.bias)))}
    return {"scale": round(fit.scale, 4), "bias": round(fit.bias, 4),
            "nll_before": round(fit.nll_before, 5), "nll_after": round(fit.nll_after, 5),
            "ece_before": round(ece["before"], 4), "ece_after": round(ece["after"], 4),
            "voxels": fit.voxels, "lesion_voxels": fit.lesion_voxels,
            "predictions": len(rows)}


def choose_thresholds(rows: Sequence[dict], card) -> dict[str, dict]:
    """Per subset: the best threshold of the mean DSC curve over its sessions."""
    by_subset: dict[str, list[np.ndarray]] = {}
    for row in rows:
        by_subset.setdefault(row["subset"], []).append(row["curve"])
    chosen = {}
    for name, curves in by_subset.items():
        mean = np.mean(curves, axis=0)
        previous = card.threshold_for(name.split("+"))
        threshold, dsc = best_threshold(mean, default=previous)
        chosen[name] = {"threshold": threshold, "dsc": round(dsc, 4),
                        "dsc_at_previous": round(float(np.interp(previous, THRESHOLD_GRID, mean)), 4),
                        "previous_threshold": previous, "sessions": len(curves)}
    return chosen


def write_curves(rows: Sequence[dict], path: Path) -> Path:
    """Every session's DSC curve as a TSV: session, subset, then one column per threshold."""
    from bids_mdpp.imageio import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, delimiter="\t", lineterminator="\n")
        writer.writerow(["session", "subset", *(f"dsc_{t:.2f}" for t in THRESHOLD_GRID)])
        for row in rows:
            writer.writerow([row["session"], row["subset"], *(f"{v:.4f}" for v in row["curve"])])
    return path


def calibrated_card(card, chosen: dict[str, dict], rows: Sequence[dict], config: CalibrationConfig,
                    probability_fit: dict | None = None):
    """The card with the chosen thresholds (and the fitted ``probability_fit``, if any), what
    they were chosen on, and without real-scan scores measured at other thresholds or on other
    probabilities."""
    from bids_mdpp.training.data import dataset_name

    metrics = dict(card.metrics)
    calibration = dict(card.probability_calibration)
    previous_thresholds = dict(card.thresholds)
    if probability_fit is not None:
        calibration = {"method": "logistic", "scale": probability_fit["scale"],
                       "bias": probability_fit["bias"], "dataset": dataset_name(config.bids_dir),
                       "sessions": len({row["session"] for row in rows})}
        metrics["probability_calibration"] = probability_fit
        stale = sorted(set(previous_thresholds) - set(chosen))
        if stale:
            LOGGER.warning("Thresholds of subsets not scored here (%s) were chosen on the "
                           "previous probabilities; they are left out", ", ".join(stale))
        previous_thresholds = {k: v for k, v in previous_thresholds.items() if k in chosen}
    thresholds = {**previous_thresholds, **{name: c["threshold"] for name, c in chosen.items()}}
    changed = {name for name, c in chosen.items() if c["threshold"] != c["previous_threshold"]}
    real = metrics.get("real_scans")
    if isinstance(real, dict) and (probability_fit is not None or changed & set(real.get("dsc", {}))):
        LOGGER.warning("The card's real-scan scores (metrics.real_scans) were measured at the "
                       "previous thresholds or probabilities; they are left out of the calibrated card")
        metrics.pop("real_scans")
    views = metrics.get("views")
    if views and (probability_fit is not None or changed):
        LOGGER.warning("The card's views (metrics.views: %s) were measured at the previous "
                       "thresholds or probabilities; they are left out of the calibrated card",
                       ", ".join(views))
        metrics.pop("views")
    if chosen:
        metrics["calibration"] = chosen
    elif probability_fit is not None:
        metrics.pop("calibration", None)  # chosen on the previous probabilities
    sessions = {row["session"]: row["provenance"] for row in rows}
    training = {**card.training, "calibration": {
        "dataset": dataset_name(config.bids_dir), "labels": config.labels_dir.name,
        "subsets": config.subsets, "thresholds_tried": [float(t) for t in THRESHOLD_GRID],
        "criterion": "mean DSC over the sessions on the model grid (ties: nearest the previous "
                     "threshold)",
        "sessions": list(sessions.values()), "command_line": config.command_line,
    }}
    return dataclasses.replace(card, thresholds=thresholds, metrics=metrics, training=training,
                               probability_calibration=calibration, created="", software={})


def write_model_dir(source: Path, output: Path, card) -> Path:
    """``output`` as a model directory: the weights of ``source`` (and its anchor weights, when
    the card names them) copied byte for byte (their sha256 is unchanged) and ``card`` as its
    model card."""
    import datetime

    from bids_mdpp.imageio import atomic_path, write_json
    from bids_mdpp.model import CARD_NAME, WEIGHTS_NAME, software_versions

    names = [WEIGHTS_NAME] + ([card.anchor["weights"]] if card.anchor else [])
    for name in names:
        with atomic_path(output / name) as tmp:
            shutil.copyfile(source / name, tmp)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    card = dataclasses.replace(card, created=now, software=software_versions())
    write_json(card.to_dict(), output / CARD_NAME)
    return output


def calibrate(config: CalibrationConfig) -> CalibrationResult:
    """Run the calibration ``config`` describes and write the calibrated model directory."""
    import torch

    from bids_mdpp.inference import Predictor, resolve_device
    from bids_mdpp.logs import setup_logging
    from bids_mdpp.model import default_model_dir, load_model
    from bids_mdpp.training import quiet_nipype

    model_dir = config.model_dir or default_model_dir()
    check_output(config, model_dir)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(config.output_dir / "calibration" / "logs", 0, tag="calibrate")
    quiet_nipype(0)
    LOGGER.info("bids_mdpp calibrate: %s", config.command_line)
    torch.set_num_threads(config.omp_nthreads)
    device = resolve_device(config.device)
    loaded = load_model(model_dir, device=device)
    predictor = Predictor(loaded, device=str(device), precision=config.precision,
                          num_threads=config.omp_nthreads, recalibrate=not config.probabilities)
    rows = score_sessions(config, loaded, predictor, keep_probabilities=config.probabilities)
    probability_fit = None
    if config.probabilities:
        probability_fit = fit_probability_calibration(rows)
        LOGGER.info("Probability calibration: logit × %.3f %+.3f (ECE %.4f → %.4f, NLL %.5f → "
                    "%.5f over %d voxels)", probability_fit["scale"], probability_fit["bias"],
                    probability_fit["ece_before"], probability_fit["ece_after"],
                    probability_fit["nll_before"], probability_fit["nll_after"],
                    probability_fit["voxels"])
    chosen = choose_thresholds(rows, loaded.card) if config.thresholds else {}
    for name, c in sorted(chosen.items()):
        LOGGER.info("%s: threshold %.2f (mean DSC %.3f; %.3f at %.2f) over %d session(s)", name,
                    c["threshold"], c["dsc"], c["dsc_at_previous"], c["previous_threshold"],
                    c["sessions"])
    write_curves(rows, config.output_dir / "calibration" / "dsc_curves.tsv")
    card = calibrated_card(loaded.card, chosen, rows, config, probability_fit)
    write_model_dir(loaded.directory, config.output_dir, card)
    return CalibrationResult(output_dir=config.output_dir, chosen=chosen,
                             probability_fit=probability_fit)

