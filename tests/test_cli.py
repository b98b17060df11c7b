"""The command line: options, dispatch, and the exit codes of the BIDS-Apps specification."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bids_mdpp import __version__
from bids_mdpp.cli import main
from bids_mdpp.config import RunConfig, parse_memory_gb
from bids_mdpp.errors import UsageError


def run_cli(args, capsys=None):
    """Run ``bids_mdpp args…`` in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out = capsys.readouterr() if capsys else None
    return info.value.code, (out.out if out else ""), (out.err if out else "")


@pytest.fixture
def captured(monkeypatch):
    """Replace the participant/group levels by a recorder of the RunConfig they get."""
    seen: list[RunConfig] = []

    def record(config):
        seen.append(config)
        return 0

    monkeypatch.setattr("bids_mdpp.participant.run_participant_level", record)
    monkeypatch.setattr("bids_mdpp.participant.run_group_level", record)
    return seen


def test_version_and_help_are_instant_and_work(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"bids_mdpp {__version__}"
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for option in ("--participant-label", "--session-label", "--bids-filter-file",
                   "--skip-bids-validation", "--work-dir", "--nprocs", "--omp-nthreads", "--mem",
                   "--model", "--device", "--use-plugin", "--verbose", "--notrack", "train",
                   "average-weights"):
        assert option in out, option
    # --help must not import the heavy libraries
    probe = "import sys; from bids_mdpp.cli import cli; sys.argv=['x','--help']\n" \
            "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit: pass\n" \
            "print(sorted(m for m in ('torch','nipype','bids','nilearn') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_every_option_reaches_the_run_config(tmp_path, captured, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    filt = tmp_path / "filter.json"
    filt.write_text(json.dumps({"flair": {"acquisition": "3D"}}))
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: MultiProc\nplugin_args: {n_procs: 2}\n")
    model = tmp_path / "model"
    model.mkdir()
    code, _, _ = run_cli([
        bids, tmp_path / "out", "participant",
        "--participant-label", "sub-01", "--participant_label", "02,03", "04", "05",
        "--session-label", "ses-1", "2", "--bids-filter-file", filt, "--skip_bids_validation",
        "-w", tmp_path / "work", "--n_cpus", "3", "--omp-nthreads", "2", "--mem", "16G",
        "--model", model, "--device", "cuda:1", "--use-plugin", plugin, "-vv", "--notrack",
        "--threshold", "0.4", "--min-lesion-size", "12.5", "--overwrite", "--precision", "fp32", "--tta",
    ], capsys)
    assert code == 0
    (config,) = captured
    assert config.participant_labels == ("sub-01", "02", "03", "04", "05")
    assert config.session_labels == ("ses-1", "2")
    assert config.bids_filters["FLAIR"] == {"acquisition": "3D"}
    assert config.skip_validation and config.overwrite
    assert config.work_dir == tmp_path / "work" and config.nprocs == 3 and config.omp_nthreads == 2
    assert config.inference_nthreads == 2  # an explicit --omp-nthreads holds for PyTorch too
    assert config.mem_gb == 16.0 and config.model_dir == model and config.device == "cuda:1"
    assert config.plugin_file == plugin and config.verbose == 2
    assert config.threshold == 0.4 and not config.threshold_from_model
    assert config.min_lesion_mm3 == 12.5 and config.precision == "fp32" and config.flip_tta


def test_defaults(tmp_path, captured, capsys):
    (tmp_path / "bids").mkdir()
    code, _, _ = run_cli([tmp_path / "bids", tmp_path / "out", "group"], capsys)
    assert code == 0
    (config,) = captured
    assert config.analysis_level == "group" and config.device == "auto"
    assert config.nprocs >= 1 and config.inference_nthreads == config.nprocs
    assert config.omp_nthreads == max(1, min(config.nprocs - 1, 8))
    assert config.effective_work_dir == tmp_path / "out" / "work"
    assert config.threshold_from_model and not config.skip_validation and not config.flip_tta
    assert config.min_lesion_mm3 == 3.0  # specks of one or two 1 mm voxels are not lesions


def test_min_lesion_size_zero_keeps_every_component(tmp_path, captured, capsys):
    (tmp_path / "bids").mkdir()
    code, _, _ = run_cli([tmp_path / "bids", tmp_path / "out", "participant",
                          "--min-lesion-size", "0"], capsys)
    assert code == 0
    (config,) = captured
    assert config.min_lesion_mm3 == 0.0


@pytest.mark.parametrize("args,message", [
    ([], "Usage"),
    (["{bids}"], "Missing argument"),
    (["{bids}", "{out}", "everything"], "Invalid value"),
    (["{bids}", "{out}", "participant", "--no-such-option"], "No such option"),
    (["{bids}", "{out}", "participant", "--mem", "lots"], "invalid --mem"),
    (["{bids}", "{out}", "participant", "--device", "tpu"], "invalid --device"),
    (["{bids}", "{out}", "participant", "--nprocs", "0"], "Invalid value"),
    (["{bids}", "{bids}", "participant"], "must differ"),
    (["{bids}", "{out}", "participant", "--labels", "{bids}"], "only used at the group level"),
    (["{bids}", "{out}", "participant", "--model", "{bids}/nope"], "no such file"),
    (["{bids}", "{out}", "participant", "--bids-filter-file", "{bids}/nope.json"], "does not exist"),
])
def test_usage_errors_exit_64(tmp_path, captured, capsys, args, message):
    bids = tmp_path / "bids"
    bids.mkdir()
    args = [a.format(bids=bids, out=tmp_path / "out") for a in args]
    code, out, err = run_cli(args, capsys)
    if not args:
        assert code == 0 and "Usage" in out  # a bare call shows the help
        return
    assert code == 64, (out, err)
    assert message in err
    assert not captured


def test_missing_bids_dir_exits_66(tmp_path, capsys):
    code, _, err = run_cli([tmp_path / "nope", tmp_path / "out", "participant"], capsys)
    assert code == 66 and "no such directory" in err


def test_not_a_bids_dataset_exits_16(tmp_path, capsys):
    folder = tmp_path / "notbids"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    code, _, err = run_cli([folder, tmp_path / "out", "participant"], capsys)
    assert code == 16
    assert "dataset_description.json" in err and "not a valid BIDS dataset" in err
    code, _, err = run_cli([folder, tmp_path / "out2", "participant", "--skip-bids-validation"], capsys)
    assert code == 16 and "not a BIDS dataset" in err


def test_invalid_bids_names_are_summarised_in_plain_words(bids_factory, tmp_path, capsys):
    root = bids_factory(["sub-01/anat/sub-01_T1w.nii.gz"])
    (root / "sub-01" / "anat" / "sub-01_bogus.nii.gz").write_bytes(b"x")
    code, _, err = run_cli([root, tmp_path / "out", "participant"], capsys)
    assert code == 16
    assert "sub-01_bogus.nii.gz" in err


def test_unknown_participant_exits_66(bids_factory, tmp_path, capsys):
    root = bids_factory(["sub-01/anat/sub-01_T1w.nii.gz"])
    code, _, err = run_cli([root, tmp_path / "out", "participant", "--participant-label", "42",
                            "--skip-bids-validation"], capsys)
    assert code == 66 and "sub-42" in err


def test_output_that_cannot_be_created_exits_73(bids_factory, tmp_path, capsys):
    root = bids_factory(["sub-01/anat/sub-01_T1w.nii.gz"])
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code, _, err = run_cli([root, blocker / "out", "participant"], capsys)
    assert code == 73 and str(blocker / "out") in err


def test_parse_memory():
    assert parse_memory_gb("16G") == 16 and parse_memory_gb("16GB") == 16
    assert parse_memory_gb("1536M") == 1.5 and parse_memory_gb("8") == 8
    assert parse_memory_gb("1T") == 1024 and parse_memory_gb(None) is None
    with pytest.raises(UsageError):
        parse_memory_gb("-3G")


def test_console_script_runs_as_a_program(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bids_mdpp", "--version"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout
    result = subprocess.run([sys.executable, "-m", "bids_mdpp", str(tmp_path), str(tmp_path / "o"),
                             "participant", "--bogus"], capture_output=True, text=True)
    assert result.returncode == 64


def test_label_list_without_value_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "bids").mkdir()
    code, _, err = run_cli([tmp_path / "bids", tmp_path / "out", "participant",
                            "--participant-label", "--skip-bids-validation"], capsys)
    assert code == 64 and "--participant-label" in err
