"""How far a model agrees with the teacher, per contrast subset, before and after adaptation.

No label is available, so the yardstick is the teacher itself: the base model's mask with all of
a session's contrasts (its probability ≥ the card's threshold for them).  For every non-empty
subset of each cohort session's contrasts, both the base and the adapted model segment the
session from that subset alone (whole volumes, three orientations, the card's threshold for the
subset), and the result is compared:

* ``before``, ``after``: the DSC of the base and of the adapted model's mask against the teacher's
  mask, averaged over the sessions that have the subset;
* ``drift_dsc``: the DSC between the adapted and the base model's masks on the same input (1 when
  nothing changed; for the subsets with FLAIR, the guard's measure);
* ``drift_probability``: the mean absolute difference of their probabilities inside the brain.

The full subset's ``before`` is 1 by construction.  The numbers are measured on the sessions
adapted on: they say what adaptation changed, not how accurate either model is.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from bids_mdpp.adapt import ANCHOR_CONTRAST
from bids_mdpp.contrasts import subset_name

LOGGER = logging.getLogger("bids_mdpp.adapt")


def agreement(base, adapted, sessions: Sequence, *, device: str, precision: str,
              num_threads: int | None = None) -> dict[str, dict]:
    """Per subset name: ``before``, ``after``, ``drift_dsc``, ``drift_probability`` (means over
    sessions), ``sessions`` (how many) and ``with_flair``; ``base`` and ``adapted`` are
    :class:`~bids_mdpp.model.LoadedModel`, ``sessions`` the :class:`CohortSession` list."""
    from bids_mdpp.inference import Predictor
    from bids_mdpp.training.trainer import contrast_subsets, dice

    predictors = [Predictor(m, device=device, precision=precision, num_threads=num_threads)
                  for m in (base, adapted)]
    card = base.card
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    for session in sessions:
        volumes = session.cache.volumes()
        brain = np.asarray(session.cache.brain()) > 0
        teacher = np.load(session.teacher_path).astype(np.float32)
        present = [c for c in card.contrasts if c in volumes]
        reference = teacher >= card.threshold_for(present)
        for subset in contrast_subsets(present, "all"):
            threshold = card.threshold_for(subset)
            before, after = (p.predict({c: volumes[c] for c in subset}, brain)
                             for p in predictors)
            scores = (dice(before >= threshold, reference), dice(after >= threshold, reference),
                      dice(after >= threshold, before >= threshold),
                      float(np.abs(after - before)[brain].mean()))
            rows.setdefault(subset_name(subset), []).append(scores)
            LOGGER.info("%s, %s: agreement with the teacher %.3f before, %.3f after (drift DSC "
                        "%.3f)", session.key, subset_name(subset), *scores[:3])
    return {name: {"before": round(float(np.mean([r[0] for r in values])), 4),
                   "after": round(float(np.mean([r[1] for r in values])), 4),
                   "drift_dsc": round(float(np.mean([r[2] for r in values])), 4),
                   "drift_probability": round(float(np.mean([r[3] for r in values])), 5),
                   "sessions": len(values),
                   "with_flair": ANCHOR_CONTRAST in name.split("+")}
            for name, values in rows.items()}


def summary(table: dict[str, dict]) -> dict[str, float | None]:
    """Means over the subsets without FLAIR (before, after) and the smallest drift DSC of the
    subsets with FLAIR; None where there is no such subset."""
    adapted = [v for v in table.values() if not v["with_flair"]]
    anchored = [v for v in table.values() if v["with_flair"]]
    return {
        "without_flair_before": round(float(np.mean([v["before"] for v in adapted])), 4)
        if adapted else None,
        "without_flair_after": round(float(np.mean([v["after"] for v in adapted])), 4)
        if adapted else None,
        "with_flair_min_drift_dsc": min(v["drift_dsc"] for v in anchored) if anchored else None,
    }
