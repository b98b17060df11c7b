"""The model directory: the contract between training and inference.

A model directory holds two files (three for a model adapted with ``bids_mdpp adapt``):

``model_card.json``
    A :class:`ModelCard`: the contrasts in the network's channel order, the training mode, the
    grid (mm) and intensity normalisation preprocessing must produce, slices per contrast, the
    probability threshold, the network's hyper-parameters, and what the model was trained on
    and how well it did.  Preprocessing and inference read everything from it, so they can
    never drift from what the network was trained with.
``model.pt``
    The network's weights: a plain state dict written with ``torch.save`` and read with
    ``torch.load(..., weights_only=True)`` (no code is ever unpickled).
``anchor.pt`` (only when the card has an ``anchor``)
    A second state dict of the same network, used for every input that includes the card's
    ``anchor.contrast`` and for the inputs of exactly one of the card's ``anchor.subsets``: an
    adapted model keeps its base model's weights there, so the subsets with FLAIR (and any the
    adaptation was chosen not to change) are segmented exactly as the base model segments them.

API::

    save_model(directory, network, card, anchor=None) -> Path
    load_model(path, device="cpu") -> LoadedModel(network, card, directory, sha256, …)
    LoadedModel.network_for(contrasts) -> FCDenseNet   # the weights an input of these contrasts uses
    default_model_dir() -> Path            # the model shipped in bids_mdpp/data/models/default

Every problem with a model directory raises :class:`~bids_mdpp.errors.ModelError` naming the file.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bids_mdpp.config import DEFAULT_NETWORK_WEIGHT
from bids_mdpp.contrasts import CONTRASTS, is_subset_name, subset_name
from bids_mdpp.errors import ModelError
from bids_mdpp.imageio import atomic_path, write_json
from bids_mdpp.nn import MODES, FCDenseNet, NetworkConfig, check_mode
from bids_mdpp.recalibration import apply_logistic, check_probability_calibration

CARD_NAME = "model_card.json"
WEIGHTS_NAME = "model.pt"
ANCHOR_WEIGHTS_NAME = "anchor.pt"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "data" / "models" / "default"

#: The intensity normalisation of the authors (FLEXCONN's KDE white-matter peak).
KDE_WM_PEAK: dict[str, Any] = {"method": "kde-wm-peak", "background": -1.0, "wm_peak": -0.5}

#: Card keys that change what a model computes: a card without them is rejected.
REQUIRED_KEYS = ("name", "version", "contrasts", "mode", "grid_mm", "slices_per_contrast",
                 "threshold", "network", "normalisation")


@dataclass(frozen=True)
class ModelCard:
    """What a model is and how to feed it (``model_card.json``).

    Attributes
    ----------
    name, version, description : str
        Identity of the model, shown in logs, reports and provenance.
    contrasts : tuple[str, ...]
        The contrasts of the network's input, in channel order (canonical names).
    mode : str
        Training mode: ``independent``, ``moddrop``, ``moddrop+`` or ``moddrop++``.
    grid_mm : float
        Isotropic voxel size (mm) of the grid the images must be resampled to.
    slices_per_contrast : int
        Adjacent slices per contrast in the 2.5D input (3 = ``[i−1, i, i+1]``).
    threshold : float
        Probability at or above which a voxel is lesion.
    thresholds : dict[str, float]
        Thresholds for particular contrast subsets, keyed by
        :func:`~bids_mdpp.contrasts.subset_name` (``"T1w+FLAIR"``), as ``bids_mdpp calibrate``
        chooses them on labelled sessions; a subset without an entry uses ``threshold``.
    probability_calibration : dict
        ``{}`` (probabilities as the network gives them) or a logistic recalibration applied to
        every prediction before the threshold (:mod:`bids_mdpp.recalibration`): ``method``
        (``logistic``), ``scale`` > 0 and ``bias``, plus where ``bids_mdpp calibrate
        --probabilities`` fitted them.
    network : dict
        :class:`~bids_mdpp.nn.NetworkConfig` as a dict (incl. ``dynamic_head``).
    normalisation : dict
        Intensity normalisation: ``method`` (``kde-wm-peak``), ``background`` (−1) and
        ``wm_peak`` (−0.5), the values the normalised image takes there.
    training : dict
        Data (names, counts, hashes), epochs, and whether/how the model was fine-tuned.
    metrics : dict
        Validation results, e.g. ``{"dsc": {"T1w+FLAIR": 0.71, …}}`` keyed by subset name.
    software : dict
        Versions of bids_mdpp, torch and Python that produced the model.
    created : str
        ISO 8601 time the model was saved.
    anchor : dict
        ``{}`` (one set of weights, ``model.pt``), or ``contrast``, ``weights`` (a file name in
        the model directory) and its ``sha256``: every input that includes ``contrast`` is
        segmented with those weights instead of ``model.pt`` (:func:`save_model` fills it in);
        the optional ``subsets`` (names such as ``"T1w"``, without ``contrast``) are inputs
        of exactly those contrasts that use them too.
    network_weights : dict[str, float]
        Weight of the network's probability where the participant level combines it with the
        per-session intensity model (:func:`bids_mdpp.intensity_model.combine`), for
        particular contrast subsets keyed like ``thresholds``; a subset without an entry uses
        :data:`DEFAULT_NETWORK_WEIGHT` (the mean of the two).  0 segments those inputs with the
        intensity model alone: for subsets on which the network has no skill on real scans.
    """

    name: str
    version: str
    contrasts: tuple[str, ...]
    mode: str
    network: dict[str, Any]
    description: str = ""
    grid_mm: float = 1.0
    slices_per_contrast: int = 3
    threshold: float = 0.5
    thresholds: dict[str, float] = field(default_factory=dict)
    probability_calibration: dict[str, Any] = field(default_factory=dict)
    normalisation: dict[str, Any] = field(default_factory=lambda: dict(KDE_WM_PEAK))
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    software: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    anchor: dict[str, Any] = field(default_factory=dict)
    network_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.contrasts, str) or not isinstance(self.contrasts, (list, tuple)):
            raise ValueError(f"contrasts must be a list of contrast names, got {self.contrasts!r}")
        object.__setattr__(self, "contrasts", tuple(self.contrasts))
        if not self.contrasts:
            raise ValueError("contrasts is empty: a model needs at least one input contrast")
        for contrast in self.contrasts:
            if contrast not in CONTRASTS:
                raise ValueError(
                    f"unknown contrast {contrast!r} in contrasts; known contrasts are {', '.join(CONTRASTS)}"
                )
        if len(set(self.contrasts)) != len(self.contrasts):
            raise ValueError(f"contrasts {list(self.contrasts)} name a contrast twice")
        spec = check_mode(self.mode)
        if not (isinstance(self.grid_mm, (int, float)) and 0 < self.grid_mm <= 10):
            raise ValueError(f"grid_mm must be a voxel size in (0, 10] mm, got {self.grid_mm!r}")
        if not (isinstance(self.threshold, (int, float)) and 0 < self.threshold < 1):
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {self.threshold!r}")
        self._check_thresholds()
        self._check_anchor()
        self._check_network_weights()
        check_probability_calibration(self.probability_calibration)
        if not isinstance(self.normalisation, dict) or "method" not in self.normalisation:
            raise ValueError("normalisation must be a mapping with a 'method'")
        config = self.network_config
        if config.n_contrasts != len(self.contrasts):
            raise ValueError(
                f"network n_contrasts = {config.n_contrasts} but the card lists "
                f"{len(self.contrasts)} contrasts ({', '.join(self.contrasts)})"
            )
        if config.slices_per_contrast != self.slices_per_contrast:
            raise ValueError(
                f"network slices_per_contrast = {config.slices_per_contrast} but the card says "
                f"{self.slices_per_contrast}"
            )
        if config.dynamic_head != spec.dynamic_head:
            raise ValueError(
                f"mode {self.mode!r} {'needs' if spec.dynamic_head else 'has no'} dynamic head, "
                f"but network dynamic_head = {config.dynamic_head}"
            )

    def _check_subset_keys(self, field_name: str, values: Any, what: str) -> None:
        """Refuse a card entry that is not a mapping keyed by canonical subset names of the
        card's contrasts (``what``: what its values are, for the message)."""
        if not isinstance(values, dict):
            raise ValueError(f"{field_name} must map contrast subsets to {what}, got {values!r}")
        for name in values:
            if not is_subset_name(name, self.contrasts):
                raise ValueError(
                    f"{field_name} key {name!r} is not a subset of {', '.join(self.contrasts)} "
                    "written as in 'T1w+FLAIR' (canonical order, joined by '+')")

    def _check_thresholds(self) -> None:
        self._check_subset_keys("thresholds", self.thresholds, "thresholds")
        for name, value in self.thresholds.items():
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ValueError(f"thresholds[{name!r}] must lie strictly between 0 and 1, got {value!r}")

    def _check_anchor(self) -> None:
        if not isinstance(self.anchor, dict):
            raise ValueError(f"anchor must be a mapping (or {{}}), got {self.anchor!r}")
        if not self.anchor:
            return
        missing = [k for k in ("contrast", "weights", "sha256") if k not in self.anchor]
        if missing:
            raise ValueError(f"anchor misses {', '.join(missing)}")
        if self.anchor["contrast"] not in self.contrasts:
            raise ValueError(f"anchor contrast {self.anchor['contrast']!r} is not one of "
                             f"{', '.join(self.contrasts)}")
        weights = self.anchor["weights"]
        if (not isinstance(weights, str) or weights in ("", ".", "..", WEIGHTS_NAME, CARD_NAME)
                or Path(weights).name != weights):
            raise ValueError(f"anchor weights must name a file of the model directory other "
                             f"than {WEIGHTS_NAME} and {CARD_NAME}, got {weights!r}")
        digest = self.anchor["sha256"]
        if not (isinstance(digest, str) and len(digest) == 64
                and all(c in "0123456789abcdef" for c in digest)):
            raise ValueError(f"anchor sha256 must be 64 lower-case hex digits, got {digest!r}")
        subsets = self.anchor.get("subsets", [])
        if not isinstance(subsets, (list, tuple)):
            raise ValueError(f"anchor subsets must be a list of subset names, got {subsets!r}")
        for name in subsets:
            if not is_subset_name(name, self.contrasts):
                raise ValueError(
                    f"anchor subsets entry {name!r} is not a subset of "
                    f"{', '.join(self.contrasts)} written as in 'T1w+T2w' (canonical order, "
                    "joined by '+')")
            if self.anchor["contrast"] in name.split("+"):
                raise ValueError(f"anchor subsets entry {name!r} includes "
                                 f"{self.anchor['contrast']}, whose inputs use the anchor "
                                 "weights already")

    def _check_network_weights(self) -> None:
        self._check_subset_keys("network_weights", self.network_weights, "weights")
        for name, value in self.network_weights.items():
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"network_weights[{name!r}] must lie between 0 and 1, got {value!r}")

    def network_weight_for(self, contrasts) -> float:
        """The network's weight, against the intensity model's, for an input of exactly
        ``contrasts`` (any order): its entry in ``network_weights``, else
        :data:`DEFAULT_NETWORK_WEIGHT`."""
        return float(self.network_weights.get(subset_name(contrasts), DEFAULT_NETWORK_WEIGHT))

    def threshold_for(self, contrasts) -> float:
        """The threshold for an input of exactly ``contrasts`` (any order): its calibrated
        entry in ``thresholds``, else ``threshold``."""
        return float(self.thresholds.get(subset_name(contrasts), self.threshold))

    def recalibrated(self, probability):
        """``probability`` (any shape, in [0, 1]) through the card's ``probability_calibration``;
        unchanged (the same array) when the card has none."""
        if not self.probability_calibration:
            return probability
        return apply_logistic(probability, self.probability_calibration["scale"],
                              self.probability_calibration["bias"])

    def real_scan_dsc(self, contrasts, *, intensity_model: str = "off") -> float | None:
        """The DSC the card reports on real scans for exactly ``contrasts``, or None.

        ``metrics.real_scans.dsc`` (``benchmarks/real_scans.py``: the participant level on the
        native grid) is keyed like the validation metrics, by
        :func:`~bids_mdpp.contrasts.subset_name` (``"T1w+FLAIR"``); any order of ``contrasts``
        finds its entry.  A subset it lacks is looked up in the real-scan entries of
        ``metrics.views`` (``benchmarks/model_views.py --write-card``, ``"kind": "real"``, on
        the model grid), averaged over them.  Only entries measured with ``intensity_model``
        (their ``"intensity_model"`` key, ``"off"`` when absent) count.
        """
        name = subset_name(contrasts)
        metrics = self.metrics if isinstance(self.metrics, dict) else {}

        def measured_with(entry) -> bool:
            return isinstance(entry, dict) and entry.get("intensity_model", "off") == intensity_model

        real = metrics.get("real_scans")
        table = real.get("dsc") if measured_with(real) else None
        value = table.get(name) if isinstance(table, dict) else None
        if isinstance(value, (int, float)):
            return float(value)
        views = metrics.get("views")
        found = [entry["subsets"][name]["dsc"] for entry in
                 (views.values() if isinstance(views, dict) else ())
                 if measured_with(entry) and entry.get("kind") == "real"
                 and isinstance(entry.get("subsets"), dict)
                 and isinstance(entry["subsets"].get(name), dict)
                 and isinstance(entry["subsets"][name].get("dsc"), (int, float))]
        return float(sum(found) / len(found)) if found else None

    @property
    def network_config(self) -> NetworkConfig:
        """The network's hyper-parameters as a :class:`NetworkConfig`."""
        return NetworkConfig.from_dict(self.network)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``model_card.json`` holds)."""
        out = dataclasses.asdict(self)
        out["contrasts"] = list(self.contrasts)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelCard:
        """Build from a dict; ``KeyError`` lists missing required keys, ``ValueError`` bad values."""
        missing = [key for key in REQUIRED_KEYS if key not in values]
        if missing:
            raise KeyError(", ".join(missing))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference: the network in eval mode, its card, where it came from.

    ``sha256`` is that of ``model.pt``; ``anchor_network`` (the card's anchor weights) segments
    every input that includes ``anchor_contrast`` (both None when the card has no anchor) and
    the inputs of exactly one of ``anchor_subsets`` (subset names).
    """

    network: FCDenseNet
    card: ModelCard
    directory: Path
    sha256: str
    anchor_network: FCDenseNet | None = None
    anchor_contrast: str | None = None
    anchor_subsets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.anchor_network is None) != (self.anchor_contrast is None):
            raise ValueError("anchor_network and anchor_contrast go together")
        if self.anchor_subsets and self.anchor_network is None:
            raise ValueError("anchor_subsets need an anchor_network")

    def network_for(self, contrasts) -> FCDenseNet:
        """The network an input of exactly ``contrasts`` (names) is segmented with."""
        return pick_network(self.network, self.anchor_network, self.anchor_contrast, contrasts,
                            self.anchor_subsets)


def pick_network(network, anchor_network, anchor_contrast: str | None, contrasts,
                 anchor_subsets=()):
    """``anchor_network`` for an input whose ``contrasts`` include ``anchor_contrast`` or are
    exactly one of ``anchor_subsets`` (subset names; when there is an anchor), else
    ``network``: the one routing rule of a model with anchor weights."""
    contrasts = tuple(contrasts)
    if anchor_network is not None and (anchor_contrast in contrasts
                                       or subset_name(contrasts) in tuple(anchor_subsets)):
        return anchor_network
    return network


def software_versions() -> dict[str, str]:
    """Versions recorded in a card's ``software``."""
    from bids_mdpp import __version__

    return {"bids_mdpp": __version__, "torch": torch.__version__,
            "python": platform.python_version()}


def save_model(directory: os.PathLike | str, network: FCDenseNet, card: ModelCard,
               anchor: tuple[str, FCDenseNet | Path] | None = None,
               anchor_subsets: tuple[str, ...] = ()) -> Path:
    """Write ``model.pt`` and ``model_card.json`` into ``directory`` (atomically); returns it.

    ``anchor``: ``(contrast, network)`` whose weights segment every input that includes
    ``contrast``, or ``(contrast, path)`` of a weights file of this network to copy byte for
    byte (its sha256 is kept: a base model's ``model.pt``); they are written to ``anchor.pt``
    and the card's ``anchor`` is set to match, with ``anchor_subsets`` (subset names without
    ``contrast``: inputs of exactly those contrasts use them too; the card checks them).
    Without one the card's ``anchor`` is emptied,
    whatever the given card held, and a stale ``anchor.pt`` is removed.  ``created`` and
    ``software`` are filled in when the card leaves them empty.  The networks' configuration
    must be the card's (``ValueError`` otherwise).
    """
    directory = Path(directory)
    networks = [network] + ([anchor[1]] if anchor is not None
                            and not isinstance(anchor[1], (str, os.PathLike)) else [])
    for each in networks:
        if each.config != card.network_config:
            raise ValueError(
                f"the network's configuration {each.config} is not the card's {card.network_config}"
            )
    if not card.created:
        card = dataclasses.replace(
            card, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        )
    if not card.software:
        card = dataclasses.replace(card, software=software_versions())
    directory.mkdir(parents=True, exist_ok=True)
    if anchor is None:
        card = dataclasses.replace(card, anchor={})
        (directory / ANCHOR_WEIGHTS_NAME).unlink(missing_ok=True)
    else:
        contrast, source = anchor
        path = directory / ANCHOR_WEIGHTS_NAME
        if isinstance(source, (str, os.PathLike)):
            with atomic_path(path) as tmp:
                shutil.copyfile(source, tmp)
        else:
            _write_weights(source, path)
        card = dataclasses.replace(card, anchor={
            "contrast": contrast, "weights": path.name, "sha256": sha256_of(path),
            **({"subsets": sorted(anchor_subsets)} if anchor_subsets else {})})
    _write_weights(network, directory / WEIGHTS_NAME)
    write_json(card.to_dict(), directory / CARD_NAME)
    return directory


def _write_weights(network: FCDenseNet, path: Path) -> Path:
    """The network's state dict (on the CPU) saved to ``path`` atomically; returns ``path``.

    Written through a file object, so that the archive's inner name does not depend on the
    temporary file's: the same weights give the same bytes (and sha256) every time."""
    state = {key: value.detach().cpu() for key, value in network.state_dict().items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as stream:
        torch.save(state, stream)
    return path


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(card_path: Path) -> ModelCard:
    """Read and check ``model_card.json``; every problem is a :class:`ModelError` naming it."""
    if not card_path.is_file():
        raise ModelError(card_path, f"no model card: a model directory holds {CARD_NAME} and {WEIGHTS_NAME}")
    try:
        values = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(card_path, f"the model card is not valid JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise ModelError(card_path, "the model card must be a JSON object")
    try:
        return ModelCard.from_dict(values)
    except KeyError as exc:
        raise ModelError(card_path, f"the model card misses required key(s): {exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise ModelError(card_path, f"invalid model card: {exc}") from exc


def read_state_dict(weights_path: Path) -> dict[str, torch.Tensor]:
    """Load a plain state dict safely (``weights_only``); :class:`ModelError` if it is not one."""
    if not weights_path.is_file():
        raise ModelError(weights_path, "the weights file does not exist")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/pickle raise many types for foreign bytes
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(weights_path, f"not a PyTorch state dict ({detail})") from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(weights_path, f"holds a {type(state).__name__}, not a state dict of tensors")
    return state


def check_state_dict(state: dict[str, torch.Tensor], network: FCDenseNet,
                     weights_path: Path) -> None:
    """Raise :class:`ModelError` naming the first key whose presence or shape does not fit."""
    expected = network.state_dict()
    config = network.config
    described = (f"the card's network ({config.n_contrasts} contrasts × {config.slices_per_contrast} "
                 f"slices, {'dynamic' if config.dynamic_head else 'static'} head)")
    for key, tensor in expected.items():
        if key not in state:
            raise ModelError(weights_path, f"key {key!r} that {described} needs is missing")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelError(
                weights_path,
                f"key {key!r} has shape {list(state[key].shape)} but {described} needs {list(tensor.shape)}",
            )
    for key, tensor in state.items():
        if key not in expected:
            raise ModelError(weights_path, f"unexpected key {key!r}: {described} has no such parameter")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelError(weights_path, f"key {key!r} holds NaN or infinite values")


def load_model(path: os.PathLike | str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory (or its ``model_card.json``) onto ``device``, in eval mode."""
    path = Path(path)
    if not path.exists():
        raise ModelError(path, "the model directory does not exist")
    if path.is_file():
        if path.name != CARD_NAME:
            raise ModelError(
                path, f"is a file, not a model directory (a folder holding {CARD_NAME} and "
                f"{WEIGHTS_NAME}); the authors' .pth files are converted with `bids_mdpp import-weights`",
            )
        path = path.parent
    card = read_card(path / CARD_NAME)
    weights_path = path / WEIGHTS_NAME
    network = _read_network(card, weights_path, device)
    anchor_network, anchor_contrast = None, None
    if card.anchor:
        anchor_contrast = card.anchor["contrast"]
        anchor_path = path / card.anchor["weights"]
        if anchor_path.is_file() and sha256_of(anchor_path) != card.anchor["sha256"]:
            raise ModelError(anchor_path, f"its sha256 is not the one {CARD_NAME} records for the "
                             f"weights of the inputs with {card.anchor['contrast']} (the file was "
                             "changed or replaced)")
        anchor_network = _read_network(card, anchor_path, device)
    return LoadedModel(network=network, card=card, directory=path.resolve(),
                       sha256=sha256_of(weights_path), anchor_network=anchor_network,
                       anchor_contrast=anchor_contrast,
                       anchor_subsets=tuple(card.anchor.get("subsets", ())))


def _read_network(card: ModelCard, weights_path: Path, device) -> FCDenseNet:
    """The card's network with the checked weights of ``weights_path``, on ``device``, in eval."""
    state = read_state_dict(weights_path)
    network = FCDenseNet(card.network_config)
    check_state_dict(state, network, weights_path)
    network.load_state_dict(state)
    return network.to(torch.device(device)).eval()


def default_model_dir() -> Path:
    """The model shipped with bids_mdpp (``bids_mdpp/data/models/default``).

    Raises :class:`ModelError` when no model is installed there.
    """
    if not (DEFAULT_MODEL_DIR / CARD_NAME).is_file():
        raise ModelError(
            DEFAULT_MODEL_DIR,
            "no default model is installed; pass a model directory with --model (train one with "
            "`bids_mdpp train`, or convert the authors' weights with `bids_mdpp import-weights`)",
        )
    return DEFAULT_MODEL_DIR


__all__ = ["ANCHOR_WEIGHTS_NAME", "CARD_NAME", "KDE_WM_PEAK", "MODES", "WEIGHTS_NAME",
           "LoadedModel", "ModelCard", "default_model_dir", "load_model", "pick_network",
           "save_model"]
