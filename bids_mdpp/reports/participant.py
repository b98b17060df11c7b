"""One self-contained HTML report per participant (``OUTPUT_DIR/sub-X.html``), fMRIPrep-style.

Sections: Summary; per session the inputs (contrasts found, used, missing, ignored, modality
code, reference, which file was chosen and why), the preprocessing checks (figures from
:attr:`PreprocResult.qc`), the lesions over every contrast used, and the lesion table; About
(software versions, command line, date); Methods (the boilerplate with citations); Errors.
Figures are written to ``OUTPUT_DIR/sub-X/figures/`` and embedded in the HTML as base64 data
URIs with the CSS inline, so the file opens anywhere without a network.
"""
from __future__ import annotations

import base64
import datetime as _dt
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bids_mdpp import __version__
from bids_mdpp.contrasts import CONTRASTS, and_those_alone
from bids_mdpp.imageio import atomic_path, write_text
from bids_mdpp.outputs import SessionOutputs, figure_path
from bids_mdpp.reports.boilerplate import methods_text
from bids_mdpp.session import PreprocResult, SessionInputs

#: Lesion-table rows shown in the HTML (all rows are in the TSV).
MAX_TABLE_ROWS = 100

#: Distributions whose versions the About section lists (display name → distribution).
SOFTWARE: dict[str, str] = {
    "bids_mdpp": "bids_mdpp", "PyTorch": "torch", "Nipype": "nipype", "SimpleITK": "SimpleITK",
    "PyBIDS": "pybids", "NiBabel": "nibabel", "nilearn": "nilearn", "NumPy": "numpy",
    "SciPy": "scipy",
}

#: How discovery ranks several files of one contrast (see :mod:`bids_mdpp.bids`).
SELECTION_RULE = ("finest voxel first, then the latest run, then the file name; "
                  "a --bids-filter-file overrides it")

_MIME = {".png": "image/png", ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class SessionReport:
    """Everything the report shows about one session.

    ``preproc`` and ``outputs`` are None when the session failed before producing them;
    ``boilerplate`` is the preprocessing description (prose); ``error`` the failure message;
    ``caution`` a warning about the model's measured accuracy for these contrasts.
    """

    inputs: SessionInputs
    preproc: PreprocResult | None = None
    outputs: SessionOutputs | None = None
    boilerplate: str = ""
    error: str | None = None
    shipped_model: bool = False
    caution: str | None = None

    @property
    def methods(self) -> str:
        """Full methods text with references (Markdown); empty when nothing was segmented."""
        if self.outputs is None:
            return ""
        return methods_text(self.boilerplate, self.outputs.summary, shipped_model=self.shipped_model)


@dataclass(frozen=True)
class Figure:
    """A figure of the report: file, title and caption."""

    path: Path
    title: str
    caption: str

    @property
    def uri(self) -> str:
        """The file as a ``data:`` URI (base64)."""
        mime = _MIME.get(self.path.suffix.lower(), "application/octet-stream")
        return f"data:{mime};base64," + base64.b64encode(self.path.read_bytes()).decode("ascii")


def _qc_caption(name: str, reference: str) -> tuple[str, str]:
    if name.startswith("reg_"):
        moving = name.removeprefix("reg_")
        return (f"Co-registration of {moving} to {reference}",
                f"Edges of the {reference} image drawn over the {moving} image after rigid "
                f"registration: they should follow the anatomy (ventricles, cortex).")
    if "mask" in name:
        return ("Brain mask", f"Contour of the brain mask over the {reference} image: it should "
                              f"enclose the whole brain, lesions included, and no skull.")
    return name.replace("_", " ").capitalize(), "Preprocessing check."


def qc_figures(output_dir: Path, report: SessionReport) -> list[Figure]:
    """Copy the preprocessing QC figures into ``sub-X/figures/``; one Figure each."""
    if report.preproc is None:
        return []
    figures = []
    for name, source in sorted(report.preproc.qc.items()):
        source = Path(source)
        dest = figure_path(output_dir, report.inputs, report.preproc.reference, desc=name,
                           suffix="qc", extension=source.suffix.lower())
        if source.resolve() != dest.resolve():
            with atomic_path(dest) as tmp:
                shutil.copyfile(source, tmp)
        figures.append(Figure(dest, *_qc_caption(name, report.preproc.reference)))
    return figures


def lesion_figures(output_dir: Path, report: SessionReport) -> list[Figure]:
    """Lesion contours over every contrast used, and the probability over the reference."""
    from bids_mdpp.reports.reportlets import lesion_contours, lesion_probability

    if report.preproc is None or report.outputs is None:
        return []
    preproc, outputs = report.preproc, report.outputs
    where = report.inputs.key
    figures = []
    for contrast in outputs.summary["ContrastsUsed"]:
        dest = figure_path(output_dir, report.inputs, preproc.reference, desc="lesions",
                           suffix=contrast)
        lesion_contours(preproc.images[contrast], outputs.mask, dest, title=f"{where} {contrast}")
        figures.append(Figure(dest, f"Lesions over {contrast}",
                              "Lesion mask contours (red) over the preprocessed image; rows: "
                              "axial, coronal and sagittal slices through the lesions."))
    dest = figure_path(output_dir, report.inputs, preproc.reference, desc="probability",
                       suffix=preproc.reference)
    lesion_probability(preproc.images[preproc.reference], outputs.probseg, outputs.mask, dest,
                       title=f"{where} probability")
    figures.append(Figure(dest, "Lesion probability",
                          f"Probability (0.1–1, filled) and mask contours over the "
                          f"{preproc.reference} image."))
    return figures


def _files(inputs: SessionInputs) -> list[dict]:
    rows = []
    for contrast in CONTRASTS:
        if contrast not in inputs.files:
            continue
        candidates = inputs.candidates.get(contrast, ())
        if len(candidates) > 1:
            others = ", ".join(p.name for p in candidates if p != inputs.files[contrast])
            why = f"{len(candidates)} candidates ({SELECTION_RULE}); not used: {others}"
        else:
            why = "the only file of this contrast"
        rows.append({"contrast": contrast, "name": inputs.files[contrast].name, "why": why})
    return rows


def _session_context(output_dir: Path, report: SessionReport) -> dict:
    inputs, outputs = report.inputs, report.outputs
    label = inputs.key.replace("_", " ")
    summary = outputs.summary if outputs is not None else {}
    used = summary.get("ContrastsUsed") or (list(report.preproc.images) if report.preproc else [])
    ignored = list(summary.get("ContrastsIgnored", [])) + [p.name for p in inputs.ignored]
    facts = [
        ("Contrasts found", ", ".join(inputs.contrasts) or "none"),
        ("Contrasts used", ", ".join(used) or ("not determined: the session failed"
                                               if report.error else "none")),
    ]
    if summary:
        facts += [
            ("Contrasts missing (zero-filled)", ", ".join(summary["ContrastsMissing"]) or "none"),
            ("Modality code", f"{summary['ModalityCode']} (model order: "
                              f"{', '.join(summary['ModelContrasts'])})"),
        ]
    facts.append(("Ignored", ", ".join(ignored) or "nothing"))
    if report.preproc is not None:
        facts.append(("Reference contrast", f"{report.preproc.reference} (registration target; "
                                            f"outputs are on its native grid)"))
    if summary:
        facts.append(("Model", model_fact(summary["Model"])))
    rows = list(outputs.lesions.rows) if outputs is not None else None
    return {
        "anchor": inputs.key, "label": label, "facts": facts, "files": _files(inputs),
        "used": used, "code": summary.get("ModalityCode"), "error": report.error,
        "caution": report.caution,
        "count": summary.get("LesionCount"), "volume": summary.get("TotalLesionVolume"),
        "connectivity": summary.get("Connectivity"), "threshold": summary.get("Threshold"),
        "min_size": summary.get("MinimumLesionSize"),
        "stats_name": outputs.stats.name if outputs is not None else "",
        "rows": rows[:MAX_TABLE_ROWS] if rows is not None else None,
        "hidden_rows": max(len(rows) - MAX_TABLE_ROWS, 0) if rows is not None else 0,
        "qc_figures": qc_figures(output_dir, report),
        "lesion_figures": lesion_figures(output_dir, report),
    }


def model_fact(model: dict) -> str:
    """``default 0.1.0 (moddrop++)``, and for an adapted model what it was adapted from and on."""
    text = f"{model['Name']} {model['Version']} ({model['Mode']})"
    base, cohort = model.get("AdaptedFrom"), model.get("AdaptedOn")
    if base and cohort:
        sessions = cohort.get("Sessions") or []
        text += (f"; adapted with bids_mdpp adapt from {base.get('Name')} {base.get('Version')} "
                 f"(sha256 {str(base.get('SHA256'))[:12]}…) on {len(sessions)} unlabelled "
                 f"session(s) of {cohort.get('Dataset')}: {', '.join(sessions)}")
    anchor = model.get("AnchorWeights")
    if anchor:
        also = and_those_alone(anchor.get("Subsets") or [])
        text += f"; inputs with {anchor.get('Contrast')}{also} use the base model's own weights"
    return text


def software_versions() -> list[tuple[str, str]]:
    """(name, version) of Python and of the libraries in :data:`SOFTWARE`."""
    from importlib.metadata import PackageNotFoundError, version

    rows = [("Python", platform.python_version())]
    for name, dist in SOFTWARE.items():
        try:
            rows.append((name, version(dist)))
        except PackageNotFoundError:
            rows.append((name, __version__ if dist == "bids_mdpp" else "not installed"))
    return rows


def render_participant_report(output_dir: os.PathLike | str, subject: str,
                              sessions: list[SessionReport], *,
                              command_line: str | None = None) -> str:
    """The HTML text of the report (figures are written to ``sub-X/figures/`` on the way)."""
    import jinja2

    output_dir = Path(output_dir)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined,
    )
    contexts = [_session_context(output_dir, report) for report in sessions]
    methods = list(dict.fromkeys(r.methods for r in sessions if r.methods))
    about = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line if command_line is not None else " ".join(sys.argv),
        "versions": software_versions(),
    }
    errors = [(c["label"], r.error) for c, r in zip(contexts, sessions) if r.error]
    return env.get_template("participant.html").render(
        version=__version__, subject=subject, sessions=contexts, about=about, methods=methods,
        errors=errors,
    )


def write_participant_report(output_dir: os.PathLike | str, subject: str,
                             sessions: list[SessionReport], *,
                             command_line: str | None = None) -> Path:
    """Write ``OUTPUT_DIR/sub-<subject>.html`` (atomically) and its figures; returns the path."""
    subject = subject.removeprefix("sub-")
    html = render_participant_report(output_dir, subject, sessions, command_line=command_line)
    return write_text(html, Path(output_dir) / f"sub-{subject}.html")
