"""Data classes that carry one participant/session through the pipeline.

Data flows one way: :class:`SessionInputs` (discovery) → :class:`PreprocResult`
(preprocessing) → a probability map (inference) → outputs and reports.  These classes are
the contracts between those stages; they hold paths and small metadata, never arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SessionInputs:
    """What discovery found for one participant (and session).

    Attributes
    ----------
    subject : str
        Label without ``sub-``.
    session : str | None
        Label without ``ses-``, or None for a dataset without sessions.
    files : dict[str, Path]
        The chosen file per canonical contrast name (``T1w``, ``FLAIR``, ``T2w``, ``PDw``,
        ``ceT1w``).
    candidates : dict[str, tuple[Path, ...]]
        Every file that matched each contrast, in the order the selection rule ranked them
        (the chosen one first).
    ignored : tuple[Path, ...]
        Anatomical images of a suffix bids_mdpp does not use (reported, not processed).
    """

    subject: str
    session: str | None
    files: dict[str, Path]
    candidates: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    ignored: tuple[Path, ...] = ()

    @property
    def key(self) -> str:
        """``sub-X`` or ``sub-X_ses-Y``: the prefix of every output file of this session."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def contrasts(self) -> tuple[str, ...]:
        """The contrasts found, in canonical order."""
        from bids_mdpp.contrasts import CONTRASTS

        return tuple(c for c in CONTRASTS if c in self.files)


@dataclass(frozen=True)
class PreprocResult:
    """What preprocessing produced for one session (all paths are files that exist).

    Attributes
    ----------
    reference : str
        Contrast used as the registration reference (FLAIR when present).
    reference_native : Path
        The reference image exactly as found in the input dataset: outputs are resampled
        back onto its grid.
    images : dict[str, Path]
        Per contrast: bias-corrected, co-registered, skull-stripped, intensity-normalised
        image on the model grid (float32; background −1, white-matter peak −0.5).
    brain_mask : Path
        Brain mask on the model grid (uint8).
    xfms : dict[str, Path]
        Per moving contrast: rigid transform (ITK text) from that contrast's native space to
        the reference's native space (``from-<contrast>_to-<reference>_mode-image_xfm.txt``).
    qc : dict[str, Path]
        QC figures (SVG or PNG) keyed by a short name (``reg_T1w``, ``brainmask`` …).
    """

    reference: str
    reference_native: Path
    images: dict[str, Path]
    brain_mask: Path
    xfms: dict[str, Path] = field(default_factory=dict)
    qc: dict[str, Path] = field(default_factory=dict)
