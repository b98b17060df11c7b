"""The cluster material in docs/: SLURM scripts (run against fake sbatch/srun/apptainer and a
fake installed bids_mdpp/torchrun) and the Nipype plugin files (loaded by the app; MultiProc
really runs a workflow).  tools/check_slurm.sh runs the same scripts on a real SLURM."""
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
#: The installed app and torchrun also log their own path ($0) first and exit with $FAKE_EXIT.
FAKES = {
    "apptainer": 'printf "%s\\0" "$@" > "$FAKE_LOG/apptainer"\nexit "${FAKE_EXIT:-0}"\n',
    "sbatch": 'n=$(ls "$FAKE_LOG" | grep -c "^sbatch" || true)\n'
              'printf "%s\\0" "$@" > "$FAKE_LOG/sbatch$n"\n'
              'printf "%s\\0" "${IMAGE-}" "${BIDS_MDPP-}" > "$FAKE_LOG/env_sbatch$n"\n'
              'echo "$((1000 + n));cluster1"\n',
    "srun": 'printf "%s\\0" "$@" > "$FAKE_LOG/srun"\n'
            'while [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n',
    "scontrol": 'echo node07\necho node08\nfor i in $(seq 1 "${FAKE_EXTRA_NODES:-0}"); do echo "extra$i"; done\n',
    "bids_mdpp": 'printf "%s\\0" "$0" "$@" > "$FAKE_LOG/bids_mdpp"\n'
                 'printf "%s\\0" "${TEMPLATEFLOW_HOME-}" > "$FAKE_LOG/templateflow_home"\nexit "${FAKE_EXIT:-0}"\n',
    "torchrun": 'printf "%s\\0" "$0" "$@" > "$FAKE_LOG/torchrun"\n',
}
#: Variables a developer's shell may hold that would change what the scripts do.
SCRIPT_VARIABLES = ("IMAGE", "BIDS_MDPP", "WORK_ROOT", "TEMPLATEFLOW_DIR", "LABELS_DIR", "WORK_DIR",
                    "SBATCH_OPTIONS", "MAX_PARALLEL", "CUDA_VISIBLE_DEVICES")
NO_APP_MESSAGE = "no IMAGE and no command"


def write_fakes(bin_dir: Path, names) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (bin_dir / name).write_text("#!/bin/bash\n" + FAKES[name])
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run_script(script: Path, tmp_path: Path, env: dict[str, str], *args: str,
               path: str | None = None):
    """Run a docs/slurm script with the fakes first on PATH (or with ``path`` as PATH);
    returns (process, logged argv)."""
    bin_dir, log = write_fakes(tmp_path / "bin", FAKES), tmp_path / "log"
    log.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("SLURM_") and k not in SCRIPT_VARIABLES}
    done = subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**clean, "PATH": path or f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), **env},
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


def test_array_task_without_image_runs_the_installed_app(tmp_path, study):
    """No IMAGE: the bids_mdpp on PATH, on the host's paths, with the same options."""
    env = {**study, "IMAGE": "", "SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_JOB_ID": "77",
           "SLURM_CPUS_PER_TASK": "2", "SLURM_MEM_PER_NODE": "6144", "WORK_ROOT": str(tmp_path / "work"),
           "TEMPLATEFLOW_DIR": str(tmp_path / "templateflow")}
    done, logged = run_script(DOCS / "slurm" / "participant.sbatch", tmp_path, env, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "apptainer" not in logged
    argv = logged["bids_mdpp"]
    assert argv[0] == str(tmp_path / "bin" / "bids_mdpp")
    params = run.make_context("bids_mdpp", argv[1:]).params
    assert (str(params["bids_dir"]), str(params["output_dir"])) == (study["BIDS_DIR"], study["OUTPUT_DIR"])
    assert params["analysis_level"] == "participant" and params["participant_label"] == ("02",)
    assert (params["nprocs"], params["mem"], params["device"]) == (2, "6144M", "cpu")
    assert params["work_dir"] == tmp_path / "work" / "sub-02"
    assert logged["templateflow_home"] == [str(tmp_path / "templateflow")]
    assert not (tmp_path / "work" / "sub-02").exists(), "a finished task removes its work directory"


@pytest.mark.parametrize("image", [True, False], ids=["image", "installed"])
def test_failed_task_keeps_its_work_directory_for_a_resubmission(tmp_path, study, image):
    env = {**study, "SLURM_ARRAY_TASK_ID": "1", "WORK_ROOT": str(tmp_path / "work"), "FAKE_EXIT": "1"}
    if not image:
        env["IMAGE"] = ""
    done, logged = run_script(DOCS / "slurm" / "participant.sbatch", tmp_path, env)
    assert done.returncode == 1
    assert ("apptainer" in logged) == image and ("bids_mdpp" in logged) != image
    assert (tmp_path / "work" / "sub-01").is_dir()


def test_installed_app_named_by_bids_mdpp(tmp_path, study):
    venv_bin = write_fakes(tmp_path / "venv" / "bin", ["bids_mdpp"])
    env = {**study, "IMAGE": "", "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_JOB_ID": "78",
           "TMPDIR": str(tmp_path), "BIDS_MDPP": "venv/bin/bids_mdpp"}
    done, logged = run_script(DOCS / "slurm" / "participant.sbatch", tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert Path(tmp_path, logged["bids_mdpp"][0]) == venv_bin / "bids_mdpp"
    assert run.make_context("bids_mdpp", logged["bids_mdpp"][1:]).params["participant_label"] == ("03",)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
@pytest.mark.parametrize("named", [None, "venv/bin/bids_mdpp"], ids=["path", "BIDS_MDPP"])
def test_no_image_and_no_installed_app_fails_clearly(tmp_path, study, script, named):
    """Without IMAGE and with no bids_mdpp to run, nothing is queued or run: exit 69 and how to fix it."""
    for name in ("labels", "model"):
        (tmp_path / name).mkdir()
    cluster_bin = write_fakes(tmp_path / "cluster_bin", ["sbatch", "srun", "scontrol", "apptainer"])
    env = {**study, "IMAGE": "", "SLURM_ARRAY_TASK_ID": "1", "LABELS_DIR": str(tmp_path / "labels"),
           "MODEL_DIR": str(tmp_path / "model"), "SLURM_JOB_NODELIST": "node07", "SLURM_NNODES": "1"}
    if named:
        env["BIDS_MDPP"] = named
    done, logged = run_script(script, tmp_path, env, path=f"{cluster_bin}:/usr/bin:/bin")
    assert done.returncode == 69
    assert f"{NO_APP_MESSAGE} {named or 'bids_mdpp'}" in done.stderr and "set IMAGE" in done.stderr
    assert not logged


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


def test_submit_without_image_passes_the_installed_app_by_absolute_path(tmp_path, study):
    write_fakes(tmp_path / "venv" / "bin", ["bids_mdpp"])
    env = {**study, "IMAGE": "", "BIDS_MDPP": "venv/bin/bids_mdpp",
           "SBATCH_OPTIONS": "--cpus-per-task=2 --mem=6G"}
    done, logged = run_script(DOCS / "slurm" / "submit.sh", tmp_path, env, "--nprocs", "2")
    assert done.returncode == 0, done.stderr
    for n in (0, 1):
        assert logged[f"env_sbatch{n}"] == ["", str(tmp_path / "venv" / "bin" / "bids_mdpp")]
        assert logged[f"sbatch{n}"][1:3] == ["--cpus-per-task=2", "--mem=6G"]
    assert "--array=1-3%50" in logged["sbatch0"] and logged["sbatch0"][-2:] == ["--nprocs", "2"]
    assert "--dependency=afterok:1000" in logged["sbatch1"]


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


def test_group_job_without_image_runs_the_installed_app(tmp_path, study):
    labels = tmp_path / "labels"
    labels.mkdir()
    Path(study["OUTPUT_DIR"]).mkdir(parents=True)
    done, logged = run_script(DOCS / "slurm" / "group.sbatch", tmp_path,
                              {**study, "IMAGE": "", "LABELS_DIR": str(labels)}, "-v")
    assert done.returncode == 0, done.stderr
    params = run.make_context("bids_mdpp", logged["bids_mdpp"][1:]).params
    assert params["analysis_level"] == "group" and params["labels"] == labels
    assert str(params["output_dir"]) == study["OUTPUT_DIR"] and params["verbose"] == 1


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
    params = train_params(torchrun.training_script_args)
    assert (str(params["bids_dir"]), str(params["output_dir"]), str(params["labels"])) == (
        "/data", "/model", "/labels")


def train_params(args: list[str]) -> dict:
    """What ``bids_mdpp train …`` makes of the arguments torchrun passes on."""
    from bids_mdpp.cli.train import train

    assert args[0] == "train"
    return train.make_context("train", args[1:]).params


def test_training_without_image_runs_torchrun_of_the_install(tmp_path):
    from torch.distributed.run import get_args_parser

    folders = {name: tmp_path / name for name in ("bids", "labels")}
    for folder in folders.values():
        folder.mkdir()
    venv_bin = write_fakes(tmp_path / "venv" / "bin", ["bids_mdpp", "torchrun"])
    env = {"BIDS_DIR": str(folders["bids"]), "LABELS_DIR": str(folders["labels"]),
           "MODEL_DIR": "model", "WORK_DIR": "cache", "BIDS_MDPP": str(venv_bin / "bids_mdpp"),
           "SLURM_JOB_ID": "556", "SLURM_JOB_NODELIST": "node07", "SLURM_NNODES": "1",
           "SLURM_CPUS_PER_TASK": "2"}
    done, logged = run_script(DOCS / "slurm" / "train.sbatch", tmp_path, env, "--epochs", "3")
    assert done.returncode == 0, done.stderr
    assert logged["srun"][0] == "--ntasks-per-node=1" and "apptainer" not in logged
    argv = logged["torchrun"]
    assert argv[0] == str(venv_bin / "torchrun"), "the torchrun beside the app, not the one on PATH"
    torchrun = get_args_parser().parse_args(argv[1:])
    assert (torchrun.nnodes, torchrun.nproc_per_node, torchrun.rdzv_endpoint) == ("1", "1", "node07:29500")
    assert torchrun.no_python and torchrun.training_script == str(venv_bin / "bids_mdpp")
    params = train_params(torchrun.training_script_args)
    assert (params["bids_dir"], params["labels"]) == (folders["bids"], folders["labels"])
    assert params["output_dir"] == tmp_path / "model" and (tmp_path / "model").is_dir()
    assert params["work_dir"] == tmp_path / "cache" and params["omp_nthreads"] == 2
    assert params["epochs"] == 3


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
