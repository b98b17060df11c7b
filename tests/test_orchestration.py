"""Orchestration helpers that need no model: plugin settings, usable inputs, exit codes, allocator."""
from __future__ import annotations

from pathlib import Path

import pytest

from bids_mdpp.allocator import GLIBC_TUNING, MARKER, tuned_environment
from bids_mdpp.config import RunConfig
from bids_mdpp.errors import InputDataError, NoInputError, UsageError
from bids_mdpp.participant import exit_code, plugin_settings, usable_inputs
from bids_mdpp.session import SessionInputs
from bids_mdpp.validation import summarise


def _config(tmp_path, **kwargs) -> RunConfig:
    return RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="participant",
                     **kwargs)


def test_plugin_settings(tmp_path):
    assert plugin_settings(_config(tmp_path)) == ("Linear", {})
    plugin, args = plugin_settings(_config(tmp_path, nprocs=4, mem_gb=8.0))
    assert plugin == "MultiProc" and args["n_procs"] == 4 and args["memory_gb"] == 8.0
    yml = tmp_path / "slurm.yml"
    yml.write_text("plugin: SLURM\nplugin_args:\n  sbatch_args: --time=1:00:00\n")
    assert plugin_settings(_config(tmp_path, plugin_file=yml)) == (
        "SLURM", {"sbatch_args": "--time=1:00:00"})
    yml.write_text("plugin_args: {}\n")
    with pytest.raises(UsageError, match="plugin:"):
        plugin_settings(_config(tmp_path, plugin_file=yml))


def test_usable_inputs_drops_unknown_contrasts_and_explains_empty(tmp_path):
    files = {"T1w": tmp_path / "sub-01_T1w.nii.gz", "PDw": tmp_path / "sub-01_PDw.nii.gz"}
    inputs = SessionInputs("01", None, files)
    kept = usable_inputs(inputs, ("T1w", "FLAIR", "T2w", "ceT1w"))
    assert kept.contrasts == ("T1w",) and files["PDw"] in kept.ignored
    with pytest.raises(NoInputError, match="only has PDw"):
        usable_inputs(SessionInputs("01", None, {"PDw": files["PDw"]}), ("T1w", "FLAIR"))
    seen = SessionInputs("02", "1", {}, ignored=(tmp_path / "sub-02_ses-1_T2starw.nii.gz",))
    with pytest.raises(NoInputError, match="sub-02_ses-1_T2starw.nii.gz") as info:
        usable_inputs(seen, ("T1w",))
    assert "sub-02_ses-1" in str(info.value)


def test_exit_codes_for_failures():
    assert exit_code([], 3) == 0
    assert exit_code([InputDataError(Path("x"), "bad")], 1) == 65
    assert exit_code([NoInputError("none")], 1) == 66
    assert exit_code([InputDataError(Path("x"), "bad")], 2) == 1  # the other one finished
    assert exit_code([InputDataError(Path("x"), "bad"), NoInputError("n")], 2) == 1
    assert exit_code([RuntimeError("boom")], 1) == 1


def test_allocator_environment():
    env = tuned_environment({"PATH": "/bin"})
    assert env is not None and env[MARKER] in ("jemalloc", "glibc-mmap-threshold")
    if env[MARKER] == "jemalloc":
        assert env["LD_PRELOAD"].endswith("libjemalloc.so.2") and "MALLOC_CONF" in env
    else:
        assert env["GLIBC_TUNABLES"] == GLIBC_TUNING
    assert tuned_environment({MARKER: "system"}) is None  # the user's opt-out
    assert tuned_environment({"LD_PRELOAD": "/x.so"}) is None  # the user's own choice wins


def test_validator_summary_in_plain_words():
    report = {"issues": {"issues": [
        {"code": "NOT_INCLUDED", "severity": "error", "location": "/a.txt"},
        {"code": "NOT_INCLUDED", "severity": "error", "location": "/b.txt"},
        {"code": "SOMETHING_NEW", "severity": "error", "location": "/c"},
        {"code": "JSON_KEY_RECOMMENDED", "severity": "warning", "location": "/d.json"},
    ], "codeMessages": [{"code": "SOMETHING_NEW", "message": "A new rule.\nMore text."}]}}
    issues = {i.code: i for i in summarise(report)}
    assert set(issues) == {"NOT_INCLUDED", "SOMETHING_NEW"}
    assert issues["NOT_INCLUDED"].files == ("/a.txt", "/b.txt")
    assert "wrong name or folder" in str(issues["NOT_INCLUDED"])
    assert str(issues["SOMETHING_NEW"]).startswith("SOMETHING_NEW: A new rule. (1 file: /c)")


def test_reexec_runs_the_console_module_or_the_given_script(monkeypatch):
    import os
    import sys

    from bids_mdpp import allocator

    calls = []
    monkeypatch.setattr(os, "execve", lambda path, args, env: calls.append((path, args, env)))
    monkeypatch.setattr(allocator, "tuned_environment", lambda: {MARKER: "jemalloc"})
    allocator.reexec_with_tuned_allocator(["participant", "-v"])
    allocator.reexec_with_tuned_allocator(["--quick"], program=["benchmarks/inference.py"])
    assert [args for _, args, _ in calls] == [
        [sys.executable, "-m", "bids_mdpp", "participant", "-v"],
        [sys.executable, "benchmarks/inference.py", "--quick"]]
    assert all(path == sys.executable and env == {MARKER: "jemalloc"} for path, _, env in calls)
    monkeypatch.setattr(allocator, "tuned_environment", lambda: None)
    allocator.reexec_with_tuned_allocator(["x"])
    assert len(calls) == 2
