"""BIDS validation of the input dataset with the schema-based validator (bids-validator-deno).

The validator's JSON report is summarised in plain words: one line per kind of error, with how
many files it concerns and a few of their names.  Warnings are logged at debug level only.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bids_mdpp.errors import BidsValidationError, NoInputError

LOGGER = logging.getLogger("bids_mdpp.validation")

#: Plain-word explanations of the validator codes users meet most often.
PLAIN_WORDS = {
    "MISSING_DATASET_DESCRIPTION": "the folder has no dataset_description.json, so it is not a BIDS dataset",
    "NOT_INCLUDED": "files that BIDS does not allow at this place (wrong name or folder)",
    "JSON_INVALID": "a JSON file that cannot be parsed",
    "NIFTI_HEADER_UNREADABLE": "a NIfTI file whose header cannot be read (empty or truncated?)",
    "EMPTY_FILE": "an empty file",
    "INVALID_JSON_ENCODING": "a JSON file that is not UTF-8",
    "FILENAME_MISMATCH": "file names that do not follow the BIDS naming rules",
    "SIDECAR_KEY_REQUIRED": "a JSON sidecar that lacks a required key",
    "JSON_KEY_REQUIRED": "a JSON file that lacks a required key",
    "DATATYPE_MISMATCH": "a file in the wrong datatype folder",
    "ENTITY_WITH_NO_LABEL": "a file name with an entity but no label",
    "INVALID_ENTITY_LABEL": "a file name with an invalid entity label",
    "SUBJECT_FOLDERS": "no sub-* folder",
}


@dataclass(frozen=True)
class ValidationIssue:
    """One kind of error: its code, a plain-word explanation and the files concerned."""

    code: str
    explanation: str
    files: tuple[str, ...]

    def __str__(self) -> str:
        shown = ", ".join(self.files[:3]) + (" …" if len(self.files) > 3 else "")
        where = f" ({len(self.files)} file{'s' if len(self.files) != 1 else ''}: {shown})" if self.files else ""
        return f"{self.code}: {self.explanation}{where}"


def validator_command() -> list[str]:
    """The validator executable: beside the running Python first, then on PATH."""
    local = Path(sys.executable).parent / "bids-validator-deno"
    if local.exists():
        return [str(local)]
    found = shutil.which("bids-validator-deno")
    if found:
        return [found]
    raise NoInputError(
        "bids-validator-deno is not installed; install it (pip install bids-validator-deno) "
        "or run with --skip-bids-validation"
    )


def summarise(report: dict) -> list[ValidationIssue]:
    """Group the errors of a validator JSON report by code (warnings are dropped)."""
    messages = {m.get("code"): m.get("message", "") for m in
                report.get("issues", {}).get("codeMessages", []) if isinstance(m, dict)}
    grouped: dict[str, list[str]] = {}
    for issue in report.get("issues", {}).get("issues", []):
        if issue.get("severity") != "error":
            continue
        files = grouped.setdefault(issue["code"], [])
        for location in [issue.get("location"), *issue.get("affects", [])]:
            if location and location not in files:
                files.append(location)
    out = []
    for code, files in grouped.items():
        first_line = (messages.get(code) or "").strip().splitlines()[:1]
        text = PLAIN_WORDS.get(code) or (first_line[0] if first_line else code.replace("_", " ").lower())
        out.append(ValidationIssue(code, text, tuple(files)))
    return out


@contextlib.contextmanager
def _usable_home(env: dict[str, str]):
    """Point ``env["HOME"]`` at a scratch folder while the validator runs when HOME is not a
    writable folder (a read-only container): the validator reads ``$HOME/.npmrc`` and stops
    when HOME is not a directory."""
    home = env.get("HOME")
    if home and os.path.isdir(home) and os.access(home, os.W_OK | os.X_OK):
        yield env
        return
    with tempfile.TemporaryDirectory(prefix="bids_mdpp-validator-") as scratch:
        env["HOME"] = scratch
        yield env


def validate_bids(bids_dir: os.PathLike | str, *, timeout: float = 600.0) -> list[ValidationIssue]:
    """Validate ``bids_dir``; raise :class:`BidsValidationError` (exit 16) on any error.

    Returns the (empty) list of errors on success so callers can log it.
    """
    bids_dir = Path(bids_dir)
    cmd = [*validator_command(), str(bids_dir), "--format", "json", "--ignoreWarnings"]
    LOGGER.info("Validating %s with bids-validator-deno", bids_dir)
    env = {**os.environ, "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}
    try:
        with _usable_home(env):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise BidsValidationError(
            f"{bids_dir}: BIDS validation did not finish in {timeout:.0f} s; "
            "use --skip-bids-validation to go on without it"
        ) from exc
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise BidsValidationError(
            f"{bids_dir}: the BIDS validator failed to run (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[:500]}"
        ) from exc
    issues = summarise(report)
    if issues:
        lines = "\n".join(f"  - {issue}" for issue in issues)
        raise BidsValidationError(
            f"{bids_dir} is not a valid BIDS dataset ({len(issues)} kind(s) of error):\n{lines}\n"
            "Fix the dataset, or run with --skip-bids-validation at your own risk."
        )
    LOGGER.info("BIDS validation passed")
    return issues
