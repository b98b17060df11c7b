"""The container check (tools/check_container.sh) without a container engine.

The output checker runs on hand-made outputs; the shell script's own logic runs with its
functions sourced; the podman commands it runs are the ones docs/containers.md shows.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "check_container.sh"
DOCS = ROOT / "docs" / "containers.md"
SUB = "sub-26"
TAG = "bids_mdpp:0.1.0"


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_container_outputs",
                                                  ROOT / "tools" / "check_container_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = _load_checker()


def _write_tsv(path: Path, rows: list[dict]) -> None:
    header = list(rows[0])
    lines = ["\t".join(header)] + ["\t".join(str(r[h]) for h in header) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def make_outputs(tmp_path: Path, *, dsc: float = 0.64) -> tuple[Path, Path]:
    """A raw dataset with a FLAIR and the outputs participant + group would write for it."""
    affine = np.diag([1.0, 1.2, 1.5, 1.0])
    affine[:3, 3] = (-8, -9, -6)
    bids = tmp_path / "bids"
    (bids / SUB / "anat").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((8, 9, 7), np.float32), affine),
             bids / SUB / "anat" / f"{SUB}_FLAIR.nii.gz")
    out = tmp_path / "out"
    anat = out / SUB / "anat"
    anat.mkdir(parents=True)
    mask = np.zeros((8, 9, 7), np.uint8)
    mask[2:4, 2:4, 2:4] = 1
    nib.save(nib.Nifti1Image(mask, affine), anat / f"{SUB}_label-lesion_mask.nii.gz")
    nib.save(nib.Nifti1Image(mask * np.float32(0.9), affine), anat / f"{SUB}_label-lesion_probseg.nii.gz")
    (anat / f"{SUB}_label-lesion_mask.json").write_text(json.dumps({"LesionCount": 1}))
    (anat / f"{SUB}_label-lesion_probseg.json").write_text("{}")
    _write_tsv(anat / f"{SUB}_label-lesion_stats.tsv",
               [dict.fromkeys(checker.LESION_TABLE_COLUMNS, 1)])
    for page in (f"{SUB}.html", "group_lesions.html"):
        (out / page).write_text("<!DOCTYPE html><html><body>report</body></html>")
    _write_tsv(out / "group_lesions.tsv", [{"participant_id": SUB, "lesion_count": 1}])
    _write_tsv(out / "group_scores.tsv", [{"participant_id": SUB, "dsc": dsc}])
    (out / "dataset_description.json").write_text(json.dumps(
        {"GeneratedBy": [{"Name": "bids_mdpp", "Container": {"Type": "docker", "Tag": TAG}}]}))
    (out / "logs").mkdir()
    (out / "logs" / "bids_mdpp_participant_20261205-120000_1.log").write_text(
        "… INFO bids_mdpp.validation: BIDS validation passed\n")
    return out, bids


def run_checker(out: Path, bids: Path, **changes) -> tuple[int, str]:
    options = {"--participant": "26", "--uid": str(os.getuid()), "--container-tag": TAG, **changes}
    argv = [str(out), str(bids), *[str(x) for pair in options.items() for x in pair]]
    done = subprocess.run(["python", str(ROOT / "tools" / "check_container_outputs.py"), *argv],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"})
    return done.returncode, done.stdout + done.stderr


def test_checker_accepts_complete_outputs(tmp_path):
    out, bids = make_outputs(tmp_path)
    code, text = run_checker(out, bids)
    assert code == 0, text
    assert "DSC against the manual mask: 0.640" in text


@pytest.mark.parametrize("damage, message", [
    (lambda out: nib.save(nib.Nifti1Image(np.zeros((8, 9, 6), np.uint8), np.eye(4)),
                          out / SUB / "anat" / f"{SUB}_label-lesion_mask.nii.gz"),
     "label-lesion_mask.nii.gz: shape (8, 9, 6), the reference sub-26_FLAIR.nii.gz has (8, 9, 7)"),
    (lambda out: (out / SUB / "anat" / f"{SUB}_label-lesion_probseg.nii.gz").write_bytes(b"\x1f\x8b"),
     "label-lesion_probseg.nii.gz: cannot be read"),
    (lambda out: (out / SUB / "anat" / f"{SUB}_label-lesion_mask.json").write_text('{"LesionCount": 3}'),
     "label-lesion_stats.tsv: 1 rows, but sub-26_label-lesion_mask.json says LesionCount 3"),
    (lambda out: (out / "group_lesions.html").unlink(), "group_lesions.html: missing or not an HTML page"),
    (lambda out: _write_tsv(out / "group_scores.tsv", [{"participant_id": SUB, "dsc": 0.2}]),
     "group_scores.tsv: DSC 0.200 < 0.55"),
    (lambda out: (out / "dataset_description.json").write_text(
        json.dumps({"GeneratedBy": [{"Name": "bids_mdpp"}]})), "GeneratedBy.Container is None"),
    (lambda out: next((out / "logs").iterdir()).write_text("validation skipped\n"),
     "no run log says 'BIDS validation passed'"),
])
def test_checker_names_the_file_and_the_problem(tmp_path, damage, message):
    out, bids = make_outputs(tmp_path)
    damage(out)
    code, text = run_checker(out, bids)
    assert code == 1
    assert message in text, text
    assert "FAILED:" in text


def test_checker_reports_files_of_another_owner(tmp_path):
    out, bids = make_outputs(tmp_path)
    code, text = run_checker(out, bids, **{"--uid": str(os.getuid() + 1)})
    assert code == 1
    assert f"not owned by uid {os.getuid() + 1}" in text


def test_script_parses():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _script(body: str, **env) -> subprocess.CompletedProcess:
    """Run ``body`` in bash after sourcing the check script (its functions only)."""
    return subprocess.run(["bash", "-c", f"set -euo pipefail; source {shlex.quote(str(SCRIPT))}\n{body}"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_a_local_torch_wheel_folder_is_mounted_into_the_build(tmp_path):
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    done = _script('args=(); wheel_args; printf "%s\\n" "${args[@]}"', BIDS_MDPP_WHEELS=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["-v", f"{tmp_path}:/wheels:ro", "--build-arg",
                                            "PIP_FIND_LINKS=/wheels"]


def test_no_wheel_folder_leaves_the_build_on_the_package_index(tmp_path):
    done = _script('args=(); wheel_args; echo "${#args[@]}"', BIDS_MDPP_WHEELS="")
    assert done.stdout.strip() == "0"
    wrong = _script("args=(); wheel_args", BIDS_MDPP_WHEELS=str(tmp_path))
    assert wrong.returncode == 1
    assert f"BIDS_MDPP_WHEELS={tmp_path} holds no torch-2.13.0 wheel" in wrong.stderr


def test_an_unknown_engine_is_refused():
    done = _script("choose_engine", BIDS_MDPP_ENGINE="lxc")
    assert done.returncode == 1
    assert "BIDS_MDPP_ENGINE must be docker or podman, not 'lxc'" in done.stderr


def test_the_image_tag_follows_the_build_inputs():
    tags = [_script(f"cd {shlex.quote(str(ROOT))}; args=({extra}); inputs_tag").stdout.strip()
            for extra in ("--build-arg VERSION=1", "--build-arg VERSION=1", "--build-arg VERSION=2")]
    assert re.fullmatch(r"bids_mdpp:check-[0-9a-f]{12}", tags[0])
    assert tags[0] == tags[1] != tags[2]


def _docs_command(start: str) -> list[str]:
    """The tokens of the docs' command line that begins with ``start`` (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCS.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(start)]
    assert lines, f"docs/containers.md shows no command starting with {start!r}"
    return shlex.split(lines[0], comments=True)


def _script_array(name: str) -> list[str]:
    return _script(f'printf "%s\\n" "${{{name}[@]}}"').stdout.splitlines()


def _in_order(needle: list[str], haystack: list[str]) -> bool:
    """``needle`` appears in ``haystack`` as one unbroken run of tokens."""
    return any(haystack[i:i + len(needle)] == needle for i in range(len(haystack)))


def test_docs_show_the_podman_build_the_check_runs():
    docs = _docs_command("podman --runtime runc build")
    assert _in_order(_script_array("PODMAN_BUILD"), docs), docs
    for words in (["--build-arg", "BASE_IMAGE=localhost/debian:bookworm"],
                  ["--build-arg", "TEMPLATEFLOW_TEMPLATES="], ["--build-arg", "PIP_FIND_LINKS=/wheels"]):
        assert _in_order(words, docs), words
    assert any(token.endswith(":/etc/pip.conf:ro") for token in docs)


def test_docs_show_the_podman_run_the_check_runs():
    for level in ("participant", "group"):
        runs = [shlex.split(line, comments=True) for line in
                re.sub(r"\\\n\s*", " ", DOCS.read_text()).splitlines()
                if line.strip().startswith("podman --runtime runc run") and f" {level}" in line]
        assert runs, f"docs/containers.md shows no podman run of {level}"
        docs = runs[0]
        assert _in_order(_script_array("RUN_FLAGS") + _script_array("PODMAN_LIMITS"), docs), docs
        assert "-u" in docs and docs[docs.index("-u") + 1].split(":")[0] not in ("0", "root")
        assert any(token.endswith(":/data:ro") for token in docs)
