"""tools/check_if_changed.sh: a slow end-to-end check runs only when its inputs changed since it passed."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "check_if_changed.sh"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository with the script, a check that counts its runs, and its inputs."""
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    (repo / ".ci" / "checked").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "tools" / "check_if_changed.sh")
    (repo / "tools" / "check_demo.sh").write_text(
        'echo run >> "$RUNS_LOG"\n[ ! -e FAIL ] || { echo "demo failed" >&2; exit 3; }\n')
    (repo / ".ci" / "checked" / "demo.inputs").write_text("# what the demo check reads\nDockerfile\ndocs/\n")
    (repo / "Dockerfile").write_text("FROM scratch\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "guide.md").write_text("how\n")
    (repo / "unrelated.txt").write_text("x\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    return repo


def check(repo: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    runs = repo.parent / "runs.log"
    done = subprocess.run(["bash", str(repo / "tools" / "check_if_changed.sh"), "demo", *args],
                          capture_output=True, text=True, env={"RUNS_LOG": str(runs), "PATH": "/usr/bin:/bin"})
    count = len(runs.read_text().splitlines()) if runs.exists() else 0
    return done, count


def test_runs_records_then_skips_until_an_input_changes(repo):
    done, runs = check(repo)
    assert done.returncode == 0 and runs == 1, done.stderr
    stamp = repo / ".ci" / "checked" / "demo.sha256"
    assert len(stamp.read_text().strip()) == 64

    done, runs = check(repo)
    assert done.returncode == 0 and runs == 1 and "skipped" in done.stdout

    (repo / "unrelated.txt").write_text("changed\n")
    done, runs = check(repo)
    assert runs == 1, "a file outside the inputs does not trigger the check"

    (repo / "docs" / "guide.md").write_text("how, changed\n")
    done, runs = check(repo)
    assert done.returncode == 0 and runs == 2, "an input under a listed folder triggers it"

    (repo / "tools" / "check_demo.sh").write_text((repo / "tools" / "check_demo.sh").read_text() + "\n")
    done, runs = check(repo)
    assert runs == 3, "the check script is always one of its inputs"


def test_force_runs_even_when_unchanged(repo):
    check(repo)
    done, runs = check(repo, "--force")
    assert done.returncode == 0 and runs == 2


def test_a_failed_check_fails_and_records_nothing(repo):
    (repo / "FAIL").write_text("")
    done, runs = check(repo)
    assert done.returncode == 3 and runs == 1 and "demo failed" in done.stderr
    assert not (repo / ".ci" / "checked" / "demo.sha256").exists()
    done, runs = check(repo)
    assert done.returncode == 3 and runs == 2, "still unverified: it runs again"


def test_unknown_check_is_a_clear_error(repo):
    done = subprocess.run(["bash", str(repo / "tools" / "check_if_changed.sh"), "nosuch"],
                          capture_output=True, text=True)
    assert done.returncode == 64 and ".ci/checked/nosuch.inputs: no such file" in done.stderr


def test_ci_runs_every_check_that_has_inputs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'for inputs in .ci/checked/*.inputs' in ci and "tools/check_if_changed.sh" in ci
    for inputs in (ROOT / ".ci" / "checked").glob("*.inputs"):
        assert (ROOT / "tools" / f"check_{inputs.stem}.sh").is_file(), f"{inputs} has no tools/check_{inputs.stem}.sh"


def test_outside_git_the_files_on_disk_are_the_inputs(repo):
    shutil.rmtree(repo / ".git")
    done, runs = check(repo)
    assert done.returncode == 0 and runs == 1, done.stderr
    done, runs = check(repo)
    assert runs == 1 and "skipped" in done.stdout
    (repo / "docs" / "new.md").write_text("more\n")
    done, runs = check(repo)
    assert runs == 2
