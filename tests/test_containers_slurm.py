"""The cluster material in docs/: SLURM scripts (run against fake sbatch/srun/apptainer) and
the Nipype plugin files (loaded by the app; MultiProc really runs a workflow)."""
from __future__ import annotations

import inspect
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from bids_mdpp.cli.run import run
from bids_mdpp.participant import plugin_settings

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCRIPTS = sorted((DOCS / "slurm").iterdir())
PLUGIN_FILES = sorted((DOCS / "plugins").glob("*.yml"))

#: Stand-ins for the cluster's commands: each writes its arguments (NUL-separated) to $FAKE_LOG.
FAKES = {
    "apptainer": 'printf "%s\\0" "$@" > "$FAKE_LOG/apptainer"\n',
    "sbatch": 'n=$(ls "$FAKE_LOG" | grep -c sbatch || true)\n'
              'printf "%s\\0" "$@" > "$FAKE_LOG/sbatch$n"\necho "$((1000 + n));cluster1"\n',
    "srun": 'printf "%s\\0" "$@" > "$FAKE_LOG/srun"\n'
            'while [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n',
    "scontrol": 'echo node07\necho node08\nfor i in $(seq 1 "${FAKE_EXTRA_NODES:-0}"); do echo "extra$i"; done\n',
}


def run_script(script: Path, tmp_path: Path, env: dict[str, str], *args: str):
    """Run a docs/slurm script with the fakes first on PATH; returns (process, logged argv)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir(exist_ok=True)
    log.mkdir(exist_ok=True)
    for name, body in FAKES.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**clean, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), **env},
    )
    logged = {p.name: p.read_text().split("\0")[:-1] for p in log.iterdir()}
    return done, logged


def after(argv: list[str], marker: str) -> list[str]:
    return argv[argv.index(marker) + 1:]


@pytest.fixture
def study(tmp_path) -> dict[str, str]:
    bids = tmp_path / "study"
    for label in ("03", "01", "02"):
        (bids / f"sub-{label}" / "anat").mkdir(parents=True)
    return {"BIDS_DIR": str(bids), "OUTPUT_DIR": str(tmp_path / "derivatives" / "bids_mdpp"),
            "IMAGE": str(tmp_path / "bids_mdpp.sif")}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_slurm_scripts_are_valid_bash(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_array_task_segments_the_nth_participant(tmp_path, study):
    env = {**study, "SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_JOB_ID": "77", "SLURM_CPUS_PER_TASK": "4",
           "SLURM_MEM_PER_NODE": "8192", "TMPDIR": str(tmp_path)}
    done, logged = run_script(DOCS / "slurm" / "participant.sbatch", tmp_path, env, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    argv = logged["apptainer"]
    assert argv[:3] == ["run", "--cleanenv", "--containall"]
    assert f"{study['BIDS_DIR']}:/data:ro" in argv and f"{study['OUTPUT_DIR']}:/out" in argv
    app_args = after(argv, study["IMAGE"])
    params = run.make_context("bids_mdpp", app_args).params
    assert params["participant_label"] == ("02",)
    assert (params["nprocs"], params["mem"], params["device"]) == (4, "8192M", "cpu")
    assert str(params["work_dir"]) == "/work" and "--nv" not in argv
    assert not (tmp_path / "bids_mdpp_77_2").exists(), "a finished task removes its work directory"


def test_array_task_beyond_the_participants_fails_clearly(tmp_path, study):
    done, logged = run_script(DOCS / "slurm" / "participant.sbatch", tmp_path,
                              {**study, "SLURM_ARRAY_TASK_ID": "4"})
    assert done.returncode == 66
    assert "no participant number 4" in done.stderr and "apptainer" not in logged


def test_submit_queues_the_group_level_after_the_whole_array(tmp_path, study):
    done, logged = run_script(DOCS / "slurm" / "submit.sh", tmp_path, {**study, "MAX_PARALLEL": "2"},
                              "--device", "cpu")
    assert done.returncode == 0, done.stderr
    array, group = logged["sbatch0"], logged["sbatch1"]
    assert "--array=1-3%2" in array and array[-2:] == ["--device", "cpu"]
    assert array[-3].endswith("participant.sbatch")
    assert "--dependency=afterok:1000" in group and group[-1].endswith("group.sbatch")


def test_group_job_scores_against_labels_when_given(tmp_path, study):
    labels = tmp_path / "labels"
    labels.mkdir()
    Path(study["OUTPUT_DIR"]).mkdir(parents=True)
    done, logged = run_script(DOCS / "slurm" / "group.sbatch", tmp_path,
                              {**study, "LABELS_DIR": str(labels)})
    assert done.returncode == 0, done.stderr
    argv = logged["apptainer"]
    assert f"{labels}:/labels:ro" in argv
    params = run.make_context("bids_mdpp", after(argv, study["IMAGE"])).params
    assert params["analysis_level"] == "group" and str(params["labels"]) == "/labels"


@pytest.mark.parametrize("extra_nodes", [0, 20000], ids=["two-nodes", "long-host-list"])
def test_training_starts_one_torchrun_per_node_with_c10d_rendezvous(tmp_path, extra_nodes):
    """A long host list must not end the job: taking its first line may not SIGPIPE scontrol."""
    from torch.distributed.run import get_args_parser

    folders = {name: tmp_path / name for name in ("bids", "labels", "model")}
    for folder in folders.values():
        folder.mkdir()
    env = {"BIDS_DIR": str(folders["bids"]), "LABELS_DIR": str(folders["labels"]),
           "MODEL_DIR": str(folders["model"]), "IMAGE": "img.sif", "SLURM_JOB_ID": "555",
           "SLURM_JOB_NODELIST": "node[07-08]", "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "4",
           "SLURM_CPUS_PER_TASK": "32", "FAKE_EXTRA_NODES": str(extra_nodes)}
    done, logged = run_script(DOCS / "slurm" / "train.sbatch", tmp_path, env, "--epochs", "3")
    assert done.returncode == 0, done.stderr
    assert logged["srun"][0] == "--ntasks-per-node=1"
    argv = logged["apptainer"]
    assert argv[0] == "exec" and "--nv" in argv and "--cleanenv" in argv
    torchrun = get_args_parser().parse_args(after(argv, "torchrun"))
    assert (torchrun.nnodes, torchrun.nproc_per_node) == ("2", "4")
    assert (torchrun.rdzv_backend, torchrun.rdzv_endpoint, torchrun.rdzv_id) == (
        "c10d", "node07:29500", "555")
    assert torchrun.no_python and torchrun.training_script == "bids_mdpp"
    assert torchrun.training_script_args[:2] == ["train", "/data"]
    assert torchrun.training_script_args[-2:] == ["--epochs", "3"]
    assert after(torchrun.training_script_args, "--omp-nthreads")[0] == "8"


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: p.name)
def test_plugin_files_name_real_nipype_plugins(path):
    import nipype.pipeline.plugins as plugins

    name, args = plugin_settings(SimpleNamespace(plugin_file=path))
    plugin_class = getattr(plugins, f"{name}Plugin")
    source = "".join(inspect.getsource(cls) for cls in plugin_class.__mro__
                     if cls.__module__.startswith("nipype."))
    for key in args:
        assert f'"{key}"' in source or f"'{key}'" in source, f"{path.name}: {name} ignores {key}"


def test_multiproc_plugin_file_runs_a_workflow(tmp_path):
    from nipype import Node, Workflow
    from nipype.interfaces.utility import Function

    def double(x):
        return 2 * x

    name, args = plugin_settings(SimpleNamespace(plugin_file=DOCS / "plugins" / "multiproc.yml"))
    first = Node(Function(["x"], ["out"], double), name="first")
    first.inputs.x = 3
    second = Node(Function(["x"], ["out"], double), name="second")
    workflow = Workflow(name="plugin_check", base_dir=str(tmp_path))
    workflow.connect(first, "out", second, "x")
    workflow.config["execution"].update(
        {"poll_sleep_duration": 0.05, "crashdump_dir": str(tmp_path)})
    graph = workflow.run(plugin=name, plugin_args=args)
    result = next(n for n in graph.nodes() if n.name == "second").result
    assert result.outputs.out == 12
