"""The synthetic-data benchmark scripts' own logic (no preprocessing, no rendering)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synth_vs_real():
    yield _load("synth_vs_real")
    sys.modules.pop("synth_vs_real", None)


def _session(name, caps_median, with_lesion=True):
    stats = {"caps": {"n": 500, "p50": caps_median}, "septum": {"n": 0},
             "choroid": {"n": 40, "p50": 0.1}}
    if with_lesion:
        stats["lesion"] = {"n": 300, "p50": 1.4}
    return {"session": name, "statistics": {"FLAIR": stats}}


def test_real_range_spans_the_medians_and_skips_small_masks(synth_vs_real):
    sessions = [_session("a", 1.05), _session("b", 1.2, with_lesion=False)]
    assert synth_vs_real.real_range(sessions) == {"FLAIR": {"caps": [1.05, 1.2],
                                                            "lesion": [1.4, 1.4]}}


def test_markdown_has_a_row_per_session_and_contrast(synth_vs_real):
    table = synth_vs_real.markdown([_session("a", 1.05), _session("b", 1.2, with_lesion=False)])
    rows = table.splitlines()
    assert len(rows) == 4 and rows[0].startswith("| session | contrast | GM_cortex")
    assert "| a | FLAIR |" in rows[2] and "1.05" in rows[2] and rows[3].endswith("| – |")


def test_synthetic_sessions_need_a_t1w(tmp_path, synth_vs_real):
    manifest = {"subjects": {"s001": {"spec": {"kind": "clean"}, "sessions": [
        {"session": None, "files": {"T1w": "a_T1w.nii.gz", "FLAIR": "a_FLAIR.nii.gz"},
         "mask": "m.nii.gz"},
        {"session": "2", "files": {"FLAIR": "b_FLAIR.nii.gz"}, "mask": "n.nii.gz"}]}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    [(inputs, mask, kind)] = synth_vs_real.synthetic_sessions(tmp_path)
    assert inputs.contrasts == ("T1w", "FLAIR") and mask == tmp_path / "m.nii.gz"
    assert kind == "synthetic (clean)"


def test_the_real_sessions_are_those_of_the_shared_data(synth_vs_real):
    sessions = synth_vs_real.real_sessions()
    assert [s[0].key for s in sessions] == ["sub-26", "sub-01_ses-1", "sub-01_ses-2"]
    assert sessions[0][1] is not None and sessions[1][1] is None
