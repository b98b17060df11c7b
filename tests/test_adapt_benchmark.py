"""benchmarks/adapt.py without networks: volume agreement, arguments and the tables."""
from __future__ import annotations

import pytest
from benchmark_scripts import load_script


@pytest.fixture(scope="module")
def bench():
    """The benchmark script imported as a module."""
    return load_script("adapt")


def test_the_lesion_volumes_of_two_sessions_agree_by_their_relative_difference(bench):
    assert bench.volume_agreement({"sub-01_ses-1": 1000.0, "sub-01_ses-2": 1500.0}) == 0.4
    assert bench.volume_agreement({"a": 0.0, "b": 0.0}) == 0.0
    assert bench.volume_agreement({"a": 1.0}) is None
    assert bench.real_scans_module() is bench.real_scans_module()


def test_markdown_tables(bench):
    long = {"volumes_mm3": {"sub-01_ses-1": 900.0, "sub-01_ses-2": 1100.0},
            "relative_difference": 0.2}
    result = {
        "mslub_long_to_cross": {"base": {"T1w": {"dsc": 0.1}, "FLAIR": {"dsc": None}},
                                "adapted": {"T1w": {"dsc": 0.25}, "FLAIR": {"dsc": 0.5}},
                                "summary": {"without_flair": {"subsets": ["T1w"], "base": 0.1,
                                                              "adapted": 0.25, "change": 0.15}}},
        "mslub_cross_to_long": {"base": {"T1w": long},
                                "adapted": {"T1w": {"volumes_mm3": {}, "relative_difference": None}}},
    }
    text = bench.markdown(result)
    assert "| T1w | 0.100 | 0.250 | +0.150 |" in text
    assert "| FLAIR | n/a | 0.500 | n/a |" in text
    assert "| T1w | 900 / 1100 | 0.200 | none | n/a |" in text
    assert "| mean, without flair (1) | 0.100 | 0.250 | +0.150 |" in text


def test_mean_dsc_without_and_with_flair(bench):
    base = {"T1w": {"dsc": 0.0, "with_flair": False}, "T2w": {"dsc": 0.2, "with_flair": False},
            "FLAIR": {"dsc": 0.6, "with_flair": True}, "ceT1w": {"dsc": None, "with_flair": False}}
    adapted = {"T1w": {"dsc": 0.3}, "T2w": {"dsc": 0.3}, "FLAIR": {"dsc": 0.59},
               "ceT1w": {"dsc": 0.1}}
    summary = bench.dsc_summary(base, adapted)
    assert summary["without_flair"] == {"subsets": ["T1w", "T2w"], "base": 0.1, "adapted": 0.3,
                                        "change": 0.2}
    assert summary["with_flair"]["change"] == -0.01


def test_the_adapt_options_are_passed_on(bench):
    args = bench.parse_args(["--targets", "mask", "--epochs", "2", "--nprocs", "2"])
    assert bench.adapt_options(args) == [
        "--epochs", "2", "--steps-per-epoch", "50", "--seed", "0", "--agreement-sessions", "1",
        "--targets", "mask", "--intensity-model", "off", "--nprocs", "2"]
    args = bench.parse_args(["--targets", "soft", "--confidence", "0.6", "--lesion-share", "0.1",
                             "--resume"])
    options = bench.adapt_options(args)
    assert options[options.index("--confidence") + 1] == "0.6"
    assert options[options.index("--lesion-share") + 1] == "0.1"
    assert options[-1] == "--resume" and options[options.index("--targets") + 1] == "soft"
    options = bench.adapt_options(bench.parse_args(["--teacher-intensity-model", "combine"]))
    assert options[options.index("--intensity-model") + 1] == "combine"
