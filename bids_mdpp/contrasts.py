"""The MRI contrasts bids_mdpp knows, their canonical order and their BIDS spelling.

The canonical order is the one of the ModDrop++ authors' code (T1w, FLAIR, T2w, PDw,
ce-T1w) so that their released weights map onto ours.  A model stores its own order in its
model card; :func:`modality_code` always uses the model's order.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

#: Canonical contrast names.  ``ceT1w`` is a T1w image with a ``ce-<agent>`` entity.
CONTRASTS: tuple[str, ...] = ("T1w", "FLAIR", "T2w", "PDw", "ceT1w")

#: Human-readable names, for logs and reports.
LABELS: dict[str, str] = {
    "T1w": "T1-weighted",
    "FLAIR": "FLAIR",
    "T2w": "T2-weighted",
    "PDw": "proton-density-weighted",
    "ceT1w": "contrast-enhanced T1-weighted",
}

#: Which contrast becomes the registration reference (first one available wins).
#: FLAIR is the contrast lesions are delineated on; T2w and PDw share its geometry and
#: lesion conspicuity more than T1w does.
REFERENCE_ORDER: tuple[str, ...] = ("FLAIR", "T2w", "PDw", "T1w", "ceT1w")

#: Contrasts whose white-matter peak is the highest-intensity KDE peak, as in the authors'
#: normalisation (the others take the darkest of the tallest peaks: see
#: :func:`bids_mdpp.preproc.normalize.white_matter_peak`).
T1_LIKE: frozenset[str] = frozenset({"T1w", "ceT1w"})


def parse_contrasts(text: str | Iterable[str]) -> tuple[str, ...]:
    """Parse ``"T1w,FLAIR"`` (or a list) into canonical names; accepts ``ce-T1w``/``T1CE``.

    Raises ``ValueError`` naming the unknown entry.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    aliases = {c.lower(): c for c in CONTRASTS}
    aliases.update({"ce-t1w": "ceT1w", "t1ce": "ceT1w", "t1c": "ceT1w", "pd": "PDw", "flair": "FLAIR"})
    out: list[str] = []
    for item in items:
        key = item.strip().lower()
        if not key:
            continue
        if key not in aliases:
            raise ValueError(
                f"unknown contrast {item.strip()!r}; known contrasts are {', '.join(CONTRASTS)}"
            )
        if aliases[key] not in out:
            out.append(aliases[key])
    if not out:
        raise ValueError("no contrast given")
    return tuple(out)


def choose_reference(available: Iterable[str]) -> str:
    """The registration reference among ``available`` (see :data:`REFERENCE_ORDER`)."""
    available = set(available)
    for name in REFERENCE_ORDER:
        if name in available:
            return name
    raise ValueError("no known contrast available")


def modality_code(available: Iterable[str], model_contrasts: Sequence[str]) -> tuple[int, ...]:
    """Binary modality code ``m`` in the model's order: 1 where the contrast is present.

    >>> modality_code(["FLAIR", "T1w"], ("T1w", "FLAIR", "T2w", "PDw", "ceT1w"))
    (1, 1, 0, 0, 0)
    """
    available = set(available)
    return tuple(int(c in available) for c in model_contrasts)


def code_to_string(code: Sequence[int]) -> str:
    """``(1, 1, 0, 0, 0)`` → ``"11000"`` (used in file names, tables and reports)."""
    return "".join(str(int(b)) for b in code)


def subset_name(contrasts: Iterable[str]) -> str:
    """A stable, readable name of a subset, e.g. ``"T1w+FLAIR"`` in canonical order."""
    present = set(contrasts)
    return "+".join(c for c in CONTRASTS if c in present)


def is_subset_name(name: object, contrasts: Sequence[str]) -> bool:
    """Whether ``name`` names a non-empty subset of ``contrasts`` as :func:`subset_name` writes
    it (canonical order, joined by ``+``).

    >>> is_subset_name("T1w+FLAIR", ("T1w", "FLAIR")), is_subset_name("FLAIR+T1w", ("T1w", "FLAIR"))
    (True, False)
    """
    parts = name.split("+") if isinstance(name, str) else []
    return bool(parts) and all(p in contrasts for p in parts) and subset_name(parts) == name


def and_those_alone(subsets: Iterable[str]) -> str:
    """The clause for inputs that also use a model's anchor weights, after "inputs with
    FLAIR": ``", and those of T1w alone,"`` for ``["T1w"]``; ``""`` for none.

    >>> and_those_alone(["T1w", "T1w+T2w"])
    ', and those of T1w or T1w + T2w alone,'
    """
    names = [s.replace("+", " + ") for s in subsets]
    return f", and those of {' or '.join(names)} alone," if names else ""
