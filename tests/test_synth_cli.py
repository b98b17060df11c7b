"""``bids_mdpp synth``: help, a tiny run, and clear errors with BIDS-App exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bids_mdpp.cli import main
from bids_mdpp.cli.synth import synth
from bids_mdpp.errors import EXIT_USAGE

TINY = ["--n", "1", "--scale", "0.2", "--contrasts", "T2w,FLAIR", "--no-progress"]


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code


def test_help_is_instant_and_lists_the_options():
    code = ("import sys; from bids_mdpp.cli import main\n"
            "try:\n    main(['synth', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'nilearn' not in sys.modules, 'heavy import'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for option in ("--n", "--seed", "--contrasts", "--sessions-fraction", "--clean-fraction",
                   "--skull-fraction", "--nprocs", "--overwrite", "--complete", "--load-mix",
                   "--hard-negatives", "--no-hard-negatives", "--lesion-floor",
                   "--normal-ceiling"):
        assert option in run.stdout


def test_a_tiny_run_writes_a_dataset_and_cites(tmp_path):
    out = tmp_path / "synthetic"
    result = CliRunner().invoke(synth, [str(out), *TINY, "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "Wrote 1 subject (1 session)" in result.output and "Lesjak" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 4 and manifest["options"]["contrasts"] == ["FLAIR", "T2w"]
    session = manifest["subjects"]["s001"]["sessions"][0]
    assert set(session["contrasts"]) <= {"FLAIR", "T2w"}
    assert (out / session["mask"]).exists()


def test_complete_gives_every_session_every_contrast(tmp_path):
    out = tmp_path / "complete"
    result = CliRunner().invoke(synth, [str(out), *TINY, "--seed", "4", "--complete"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["complete"] is True
    session = manifest["subjects"]["s001"]["sessions"][0]
    assert session["contrasts"] == ["FLAIR", "T2w"]


def test_a_non_empty_folder_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert _exit_code(["synth", str(out), *TINY]) == 0
    capsys.readouterr()
    assert _exit_code(["synth", str(out), *TINY]) == EXIT_USAGE
    assert "not empty" in capsys.readouterr().err
    assert _exit_code(["synth", str(out), *TINY, "--overwrite", "--seed", "9"]) == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 9


def test_overwrite_never_deletes_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    assert _exit_code(["synth", str(tmp_path), *TINY, "--overwrite"]) == EXIT_USAGE
    assert "refusing" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("argv, message", [
    (["--contrasts", "T1w,DWI"], "unknown contrast 'DWI'"),
    (["--clean-fraction", "1.5"], "--clean-fraction"),
    (["--n", "0"], "--n"),
    (["--nprocs", "0"], "--nprocs"),
    (["--load-mix", "severe=1"], "--load-mix: unknown load class 'severe'"),
    (["--load-mix", "free=0.5,high=0.2"], "--load-mix: the shares must add up to 1"),
    (["--load-mix", "high=x"], "--load-mix: the share of 'high' is not a number"),
    (["--lesion-floor", "T1w=1.3"], "lesions are darker than white matter on T1w"),
    (["--normal-ceiling", "FLAIR=0.8"], "ceiling of FLAIR must be above white matter"),
    (["--lesion-floor", "FLAIR=1.3", "--normal-ceiling", "FLAIR=1.4"],
     "the normal-tissue ceiling of FLAIR (1.4) must be below its lesion floor (1.3)"),
])
def test_bad_options_exit_64_with_a_message(tmp_path, capsys, argv, message):
    assert _exit_code(["synth", str(tmp_path / "out"), *argv]) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_output_path_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("x")
    assert _exit_code(["synth", str(target), *TINY]) == EXIT_USAGE
    assert "a_file" in capsys.readouterr().err


def test_load_mix_and_hard_negatives_reach_the_dataset(tmp_path):
    out = tmp_path / "lesion_free"
    result = CliRunner().invoke(synth, [str(out), *TINY, "--load-mix", "free=1",
                                        "--no-hard-negatives"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["load_mix"] == {"free": 1.0, "low": 0.0, "typical": 0.0, "high": 0.0}
    assert manifest["options"]["hard_negatives"] is False
    session = manifest["subjects"]["s001"]["sessions"][0]
    assert session["lesion_load"] == "free" and session["lesion_volume_mm3"] == 0
    assert manifest["subjects"]["s001"]["spec"]["sessions"][0]["scene"]["mimics"] is None
    row = (out / "participants.tsv").read_text().splitlines()[1].split("\t")
    assert row[3:] == ["free", "0.0"]


def test_intensity_bounds_reach_the_manifest(tmp_path):
    out = tmp_path / "bounded"
    result = CliRunner().invoke(synth, [str(out), *TINY, "--lesion-floor", "flair=1.5",
                                        "--normal-ceiling", "FLAIR=1.2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["lesion_floor"] == {"FLAIR": 1.5}
    assert manifest["options"]["normal_ceiling"] == {"FLAIR": 1.2}
    flair = manifest["subjects"]["s001"]["spec"]["sessions"][0]["contrast_params"]["FLAIR"]
    assert flair["lesion"] >= 1.5 and flair["gm"] <= 1.2


def test_the_default_load_mix_is_the_library_default():
    from bids_mdpp.synth.load import DEFAULT_LOAD_MIX, format_load_mix

    option = next(p for p in synth.params if p.name == "load_mix")
    assert option.default == format_load_mix(DEFAULT_LOAD_MIX)
