"""The cohort report ``OUTPUT_DIR/group_lesions.html`` (self-contained, one file).

Figures are matplotlib SVG drawn inline (text kept as text, no external file); every point
of a participant is a link to that participant's report ``sub-X.html`` beside it, and the
tables next to the figures carry the same links.  Figures:

* the cohort: total lesion volume (mm³) and lesion count, box plot + jittered points;
* modality codes: sessions per code (bars), lesion volume and count per code;
* longitudinal data: one line per participant with two or more sessions, sessions in natural
  label order on the x axis (omitted when no participant has two sessions);
* with reference masks: predicted vs reference lesion volume, with the identity line and Corr.
"""
from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bids_mdpp import __version__  # noqa: E402
from bids_mdpp.bids import natural_key  # noqa: E402
from bids_mdpp.imageio import write_text  # noqa: E402

REPORT_NAME = "group_lesions.html"
#: Colour of the points of strip and scatter plots (lines use matplotlib's default cycle).
POINT_COLOUR = "#1f77b4"
#: With more modality codes than this, their tick labels show only the code, rotated.
WIDE_CODES = 6
#: Seed of the horizontal jitter of strip plots (the figure is the same on every run).
JITTER_SEED = 0
#: Text stays text in the SVG (no glyph paths) and element ids are stable between runs.
RC = {"svg.fonttype": "none", "svg.hashsalt": "bids_mdpp", "font.size": 9}
#: No RDF block (creation date, tool) in the SVG: the report is the same on every run.
NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


def participant_link(participant_id: str) -> str:
    """Relative link of a participant's report: ``sub-01`` → ``sub-01.html``."""
    return f"{participant_id}.html"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _svg(fig) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog), figure closed."""
    from matplotlib import pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata=NO_METADATA)
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _strip(ax, groups: Sequence[tuple[str, np.ndarray, list[str]]], ylabel: str,
           gid: str, *, integer: bool = False) -> None:
    """Box plot + jittered points linking to ``urls``; ``groups`` = (name, values, urls)."""
    rng = np.random.default_rng(JITTER_SEED)
    ax.boxplot([values for _, values, _ in groups], positions=range(len(groups)), widths=0.5,
               showfliers=False, medianprops={"color": "#333"})
    for i, (_name, values, urls) in enumerate(groups):
        x = i + rng.uniform(-0.15, 0.15, len(values))
        points = ax.scatter(x, values, s=22, color=POINT_COLOUR, alpha=0.8, zorder=3)
        points.set_urls(urls)
        points.set_gid(f"{gid}-{i}")
    ax.set_xticks(range(len(groups)), [name for name, _, _ in groups])
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    if integer:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _load_panels(axes, groups: Sequence[tuple[str, object]], gid: str) -> None:
    """Volume and count strip plots of ``groups`` = (name, lesion-table rows) on two axes."""
    for ax, column, ylabel, integer in (
            (axes[0], "total_lesion_volume_mm3", "Total lesion volume (mm³)", False),
            (axes[1], "lesion_count", "Lesion count", True)):
        _strip(ax, [(name, rows[column].to_numpy(float),
                     [participant_link(p) for p in rows["participant_id"]])
                    for name, rows in groups], ylabel, f"{gid}-{column}", integer=integer)


def cohort_figure(lesions) -> str:
    """Lesion volume and count over the cohort (one point per participant/session)."""
    from matplotlib import pyplot as plt

    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
        _load_panels(axes, [("cohort", lesions)], "cohort")
        fig.suptitle(f"{len(lesions)} session(s) of {lesions['participant_id'].nunique()} "
                     "participant(s)")
        return _svg(fig)


def code_groups(lesions) -> list[tuple[str, object]]:
    """``(code and contrasts, rows)`` per modality code, most frequent first."""
    keys = lesions["modality_code"] + "\n" + lesions["contrasts_used"].str.replace(",", "+")
    counts = keys.value_counts()
    order = sorted(counts.index, key=lambda k: (-counts[k], k))
    return [(key, lesions[keys == key]) for key in order]


def _code_tick(key: str, n_codes: int) -> str:
    """Tick label of a modality code: the code, and its contrasts two per line when few."""
    code, _, contrasts = key.partition("\n")
    if n_codes > WIDE_CODES:
        return code
    names = contrasts.split("+")
    return "\n".join([code, *(" ".join(names[i:i + 2]) for i in range(0, len(names), 2))])


def code_figure(lesions) -> str:
    """Sessions per modality code (bars), lesion volume and count per code (box + points)."""
    from matplotlib import pyplot as plt

    groups = code_groups(lesions)
    ticks = [_code_tick(key, len(groups)) for key, _ in groups]
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 3, figsize=(min(16, max(9.5, 2.8 * len(groups))), 3.8))
        axes[0].bar(range(len(groups)), [len(rows) for _, rows in groups], color="#8fb9dc")
        axes[0].set_ylabel("Sessions")
        axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
        _load_panels(axes[1:], groups, "code")
        for ax in axes:
            ax.set_xticks(range(len(groups)), ticks)
            if len(groups) > WIDE_CODES:
                ax.tick_params(axis="x", labelrotation=90)
        fig.tight_layout()
        return _svg(fig)


def longitudinal_series(lesions) -> dict[str, list[tuple[str, float, int]]]:
    """Participants with ≥ 2 sessions → [(session_id, volume mm³, count)] in natural order."""

    series: dict[str, list[tuple[str, float, int]]] = {}
    with_sessions = lesions[~lesions["session_id"].isna()]
    for participant, rows in with_sessions.groupby("participant_id", sort=False):
        if len(rows) < 2:
            continue
        points = [(r["session_id"], float(r["total_lesion_volume_mm3"]), int(r["lesion_count"]))
                  for _, r in rows.iterrows()]
        series[participant] = sorted(points, key=lambda p: natural_key(p[0][4:]))
    return series


def longitudinal_figure(series: Mapping[str, list[tuple[str, float, int]]]) -> str | None:
    """Lesion volume and count over sessions, one line per participant (None if no series)."""
    from matplotlib import pyplot as plt


    if not series:
        return None
    sessions = sorted({p[0] for points in series.values() for p in points},
                      key=lambda s: natural_key(s[4:]))
    position = {s: i for i, s in enumerate(sessions)}
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.2 * len(sessions) + 4), 3.4))
        for participant, points in series.items():
            x = [position[p[0]] for p in points]
            volumes, counts = [p[1] for p in points], [p[2] for p in points]
            for ax, values in ((axes[0], volumes), (axes[1], counts)):
                (line,) = ax.plot(x, values, marker="o", label=participant)
                line.set_gid(f"longitudinal-{participant}")
                line.set_url(participant_link(participant))
        axes[1].yaxis.set_major_locator(MaxNLocator(integer=True))
        for ax, ylabel in ((axes[0], "Total lesion volume (mm³)"), (axes[1], "Lesion count")):
            ax.set_xticks(range(len(sessions)), sessions)
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        if len(series) <= 12:
            axes[1].legend(fontsize=7, loc="best")
        return _svg(fig)


def agreement_figure(scores) -> str:
    """Predicted vs reference total lesion volume (mm³), identity line, cohort Corr."""
    from matplotlib import pyplot as plt

    reference = scores["reference_volume_mm3"].to_numpy(float)
    predicted = scores["predicted_volume_mm3"].to_numpy(float)
    corr = float(scores["corr"].iloc[0]) if len(scores) else math.nan
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(4.2, 4))
        top = max(1.0, float(np.max(np.concatenate([reference, predicted]))) * 1.05)
        ax.plot([0, top], [0, top], color="#999", linestyle="--", linewidth=1)
        points = ax.scatter(reference, predicted, s=24, color=POINT_COLOUR, zorder=3)
        points.set_urls([participant_link(p) for p in scores["participant_id"]])
        points.set_gid("agreement")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("Reference lesion volume (mm³)")
        ax.set_ylabel("Predicted lesion volume (mm³)")
        ax.set_title("Corr = n/a" if math.isnan(corr) else f"Corr = {corr:.3f}")
        return _svg(fig)


def _is_count(column: str) -> bool:
    return column == "n" or column.endswith(("_count", "_lesions"))


def _cell(column: str, value) -> dict:
    """A table cell ``{"text", "num"}``: n/a for missing, mm³ with 1 decimal, counts as
    integers, other numbers with 3 decimals."""
    if _missing(value):
        return {"text": "n/a", "num": False}
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if _is_count(column):
            return {"text": str(int(value)), "num": True}
        return {"text": f"{value:.1f}" if column.endswith("_mm3") else f"{value:.3f}", "num": True}
    return {"text": str(value), "num": False}


def _records(frame, existing: set[str]) -> list[dict]:
    """Rows for the template: formatted cells plus the participant's link when it exists."""
    rows = []
    for _, row in frame.iterrows():
        participant = row.get("participant_id")
        rows.append({
            "cells": {column: _cell(column, value) for column, value in row.items()},
            "link": participant_link(participant) if participant in existing else None,
        })
    return rows


def write_group_report(
    output_dir: os.PathLike | str,
    lesions,
    *,
    scores=None,
    summary=None,
    not_processed: Sequence[str] = (),
    excluded: Mapping[str, str] | None = None,
    unscored: Mapping[str, str] | None = None,
) -> Path:
    """Render ``OUTPUT_DIR/group_lesions.html`` and write it atomically; returns its path.

    ``lesions``, ``scores`` and ``summary`` are the DataFrames of ``group_lesions.tsv``,
    ``group_scores.tsv`` and ``group_scores_summary.tsv`` (see :mod:`bids_mdpp.group`).
    """
    import jinja2

    output_dir = Path(output_dir)
    existing = {p.name[:-5] for p in output_dir.glob("sub-*.html")}
    series = longitudinal_series(lesions)
    scored = scores is not None and len(scores) > 0
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
    )
    html = environment.get_template("group.html").render(
        version=__version__,
        n_participants=lesions["participant_id"].nunique(),
        n_sessions=len(lesions),
        models=sorted({" ".join(str(x) for x in (m, v) if not _missing(x))
                       for m, v in zip(lesions["model"], lesions["model_version"])}),
        cohort_svg=cohort_figure(lesions),
        code_svg=code_figure(lesions),
        code_counts=[(*key.split("\n"), len(rows)) for key, rows in code_groups(lesions)],
        longitudinal_svg=longitudinal_figure(series),
        n_longitudinal=len(series),
        lesion_columns=[c for c in lesions.columns if c not in ("mask_file", "model_contrasts")],
        lesion_rows=_records(lesions, existing),
        agreement_svg=agreement_figure(scores) if scored else None,
        score_columns=[c for c in scores.columns if c not in ("reference_mask",)] if scored else [],
        score_rows=_records(scores, existing) if scored else [],
        summary_columns=list(summary.columns) if scored else [],
        summary_rows=_records(summary, existing) if scored else [],
        not_processed=list(not_processed),
        excluded=dict(excluded or {}),
        unscored=dict(unscored or {}),
    )
    return write_text(html, output_dir / REPORT_NAME)
