"""benchmarks/participant.py: the stages read from a run's log."""
from __future__ import annotations

import pytest

from benchmark_scripts import load_script

LOG = """\
2026-12-06 10:00:00,000 INFO    bids_mdpp 0.1.0: participant level
2026-12-06 10:00:02,000 INFO    sub-26: preprocessing T1w, FLAIR
2026-12-06 10:00:20,000 INFO    sub-26: segmenting (modality code 11000)
2026-12-06 10:00:30,000 INFO    sub-26: segmented in 10.0 s (bf16)
{intensity}2026-12-06 10:00:39,500 INFO    sub-26: writing outputs
2026-12-06 10:00:40,250 INFO    sub-26: outputs written in 0.7 s
2026-12-06 10:00:44,000 INFO    Finished: 1 session(s) done, 0 skipped, 0 failed
"""


@pytest.mark.parametrize("intensity", [
    "2026-12-06 10:00:39,400 INFO    sub-26: intensity model fitted and combined in 9.4 s\n", ""])
def test_stages_split_the_run_with_or_without_the_intensity_model(tmp_path, intensity):
    participant = load_script("participant")
    log = tmp_path / "run.log"
    log.write_text(LOG.format(intensity=intensity))
    assert participant.stage_seconds(log) == {
        "validation_discovery_model": 2.0, "preprocessing": 18.0, "inference": 10.0,
        "intensity_model": 9.5, "outputs_native_grid_masks_tables": 0.75,
        "report_and_rest": 3.75}
