"""benchmarks/adapt.py without networks: subsets, volumes read from sidecars, the tables."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "adapt.py"


@pytest.fixture(scope="module")
def bench():
    """The benchmark script imported as a module."""
    spec = importlib.util.spec_from_file_location("adapt_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["adapt_benchmark"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("adapt_benchmark", None)


def test_every_subset_is_listed_largest_first(bench):
    text = bench.all_subsets(("T1w", "FLAIR", "T2w"))
    assert text.split(",") == ["T1w+FLAIR+T2w", "T1w+FLAIR", "T1w+T2w", "FLAIR+T2w", "T1w",
                               "FLAIR", "T2w"]
    assert len(bench.all_subsets(bench.CROSS_SUBSETS).split(",")) == 15
    assert bench.real_scans_module() is bench.real_scans_module()


def test_session_volumes_and_their_agreement(bench, tmp_path):
    for key, volume in (("sub-01_ses-1", 1000.0), ("sub-01_ses-2", 1500.0)):
        anat = tmp_path / "sub-01" / key.split("_")[1] / "anat"
        anat.mkdir(parents=True)
        (anat / f"{key}_label-lesion_mask.json").write_text(json.dumps(
            {"TotalLesionVolume": volume}))
        (anat / f"{key}_space-MNI_label-lesion_mask.json").write_text(json.dumps(
            {"TotalLesionVolume": 1.0}))
    volumes = bench.session_volumes(tmp_path)
    assert volumes == {"sub-01_ses-1": 1000.0, "sub-01_ses-2": 1500.0}
    assert bench.volume_agreement(volumes) == 0.4
    assert bench.volume_agreement({"a": 0.0, "b": 0.0}) == 0.0
    assert bench.volume_agreement({"a": 1.0}) is None


def test_markdown_tables(bench):
    long = {"volumes_mm3": {"sub-01_ses-1": 900.0, "sub-01_ses-2": 1100.0},
            "relative_difference": 0.2}
    result = {
        "mslub_long_to_cross": {"base": {"T1w": {"dsc": 0.1}, "FLAIR": {"dsc": None}},
                                "adapted": {"T1w": {"dsc": 0.25}, "FLAIR": {"dsc": 0.5}}},
        "mslub_cross_to_long": {"base": {"T1w": long},
                                "adapted": {"T1w": {"volumes_mm3": {}, "relative_difference": None}}},
    }
    text = bench.markdown(result)
    assert "| T1w | 0.100 | 0.250 | +0.150 |" in text
    assert "| FLAIR | n/a | 0.500 | n/a |" in text
    assert "| T1w | 900 / 1100 | 0.200 | none | n/a |" in text
