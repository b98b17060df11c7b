"""The Boutiques descriptor: valid for ``bosh``, and its command lines are the real CLI's."""
from __future__ import annotations

import json
import random
import re
import shlex
from pathlib import Path

import click
import pytest

from bids_mdpp import __version__, errors
from bids_mdpp.cli.run import _labels, run

DESCRIPTOR = Path(__file__).resolve().parents[1] / "boutiques" / "descriptor.json"
boutiques = pytest.importorskip("boutiques", reason="boutiques is not installed (pip install boutiques)")


def descriptor() -> dict:
    return json.loads(DESCRIPTOR.read_text())


def simulate(invocation: dict | None, tmp_path: Path) -> list[str]:
    """The command line ``bosh exec simulate`` makes (a random complete one without invocation)."""
    args = ["exec", "simulate", str(DESCRIPTOR)]
    if invocation is None:
        args.insert(2, "-c")
    else:
        path = tmp_path / "invocation.json"
        path.write_text(json.dumps(invocation))
        args += ["-i", str(path)]
    output = boutiques.bosh(args)
    assert output.exit_code == 0, output.error_message
    tokens = shlex.split(output.shell_command)
    assert tokens[0] == "bids_mdpp"
    return tokens[1:]


def parse(args: list[str]) -> dict:
    """What the real ``bids_mdpp`` command parses from ``args`` (nothing is run)."""
    return run.make_context("bids_mdpp", list(args)).params


def test_bosh_validate_accepts_the_descriptor():
    boutiques.bosh(["validate", str(DESCRIPTOR)])  # raises DescriptorValidationError if not


def test_descriptor_names_this_version_and_its_image():
    desc = descriptor()
    assert desc["tool-version"] == __version__
    assert desc["container-image"] == {"type": "docker", "image": f"bids_mdpp:{__version__}"}


def test_descriptor_options_are_exactly_the_cli_options():
    flag_to_name = {opt: p.name for p in run.params if isinstance(p, click.Option) for opt in p.opts}
    described = set()
    for entry in descriptor()["inputs"]:
        tokens = [entry["command-line-flag"]] if "command-line-flag" in entry else []
        tokens += [c for c in entry.get("value-choices", []) if str(c).startswith("-")]
        for token in tokens:
            key = "-v" if re.fullmatch(r"-v+", token) else token  # -vv counts -v twice
            assert key in flag_to_name, f"{token} is not an option of bids_mdpp"
            described.add(flag_to_name[key])
    assert described == set(flag_to_name.values())
    positional = [e["value-key"] for e in descriptor()["inputs"] if "command-line-flag" not in e][:3]
    assert positional == ["[BIDS_DIR]", "[OUTPUT_DIR]", "[ANALYSIS_LEVEL]"]


def test_descriptor_error_codes_are_the_apps():
    codes = {e["code"] for e in descriptor()["error-codes"]}
    constants = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert codes == constants - {0}


def test_participant_invocation_becomes_the_expected_command(tmp_path):
    args = simulate({
        "bids_dir": "/data", "output_dir": "/out", "analysis_level": "participant",
        "participant_label": ["01", "sub-02"], "session_label": ["1"], "nprocs": 2,
        "omp_nthreads": 1, "mem": "8G", "precision": "fp32", "threshold": 0.4,
        "output_spaces": ["MNI152NLin2009cAsym", "MNI152NLin2009aSym"], "skip_bids_validation": True, "verbose": "-vv",
    }, tmp_path)
    params = parse(args)
    assert (params["bids_dir"], params["output_dir"], params["analysis_level"]) == (
        Path("/data"), Path("/out"), "participant")
    assert _labels(params["participant_label"]) == ("01", "sub-02")
    assert _labels(params["session_label"]) == ("1",)
    assert (params["nprocs"], params["omp_nthreads"], params["mem"]) == (2, 1, "8G")
    assert (params["precision"], params["threshold"], params["verbose"]) == ("fp32", 0.4, 2)
    assert _labels(params["output_spaces"]) == ("MNI152NLin2009cAsym", "MNI152NLin2009aSym")
    assert params["skip_bids_validation"]


def test_group_invocation_keeps_the_output_directory_and_labels(tmp_path):
    params = parse(simulate({"bids_dir": "/data", "output_dir": "/out", "analysis_level": "group",
                             "labels": "/labels"}, tmp_path))
    assert (params["output_dir"], params["analysis_level"], params["labels"]) == (
        Path("/out"), "group", Path("/labels"))


def test_random_complete_invocations_parse_with_the_cli(tmp_path):
    random.seed(7)  # bosh draws the values with the random module
    levels = {parse(simulate(None, tmp_path))["analysis_level"] for _ in range(8)}
    assert levels == {"participant", "group"}
