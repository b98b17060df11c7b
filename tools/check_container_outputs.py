"""Check what ``participant`` and ``group`` wrote in the container check (tools/check_container.sh).

    python tools/check_container_outputs.py OUT_DIR BIDS_DIR --participant 26 --uid 4321 \
        --container-tag bids_mdpp:0.1.0 [--min-dsc 0.55]

Run inside the image itself (it has nibabel), so the host needs nothing but the engine. Every
problem found is printed on its own line, naming the file; the exit status is 1 when there is
any, 0 otherwise. Only the standard library and nibabel/numpy are used.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

#: The reference contrast of the bundled sample (FLAIR is present): the masks lie on its grid.
REFERENCE_SUFFIX = "FLAIR"
LESION_TABLE_COLUMNS = ("lesion_id", "n_voxels", "volume_mm3",
                        "centroid_x_mm", "centroid_y_mm", "centroid_z_mm")


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def check_images(out_dir: Path, bids_dir: Path, sub: str) -> list[str]:
    """The mask (binary uint8) and probability map (0–1) exist, load, and share the reference
    image's shape and affine (to 1e-4 mm)."""
    import nibabel as nib
    import numpy as np

    problems = []
    reference = bids_dir / sub / "anat" / f"{sub}_{REFERENCE_SUFFIX}.nii.gz"
    ref = nib.load(reference)
    anat = out_dir / sub / "anat"
    for kind in ("mask", "probseg"):
        path = anat / f"{sub}_label-lesion_{kind}.nii.gz"
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        try:
            img = nib.load(path)
            data = np.asanyarray(img.dataobj)
        except Exception as exc:  # any reading error is a finding, reported with the file
            problems.append(f"{path}: cannot be read ({exc})")
            continue
        if img.shape != ref.shape:
            problems.append(f"{path}: shape {img.shape}, the reference {reference.name} has {ref.shape}")
        elif not np.allclose(img.affine, ref.affine, atol=1e-4):
            problems.append(f"{path}: affine differs from the reference {reference.name}")
        if kind == "mask" and not set(np.unique(data).tolist()) <= {0, 1}:
            problems.append(f"{path}: not binary")
        if kind == "mask" and not data.any():
            problems.append(f"{path}: empty (no lesion found in a patient with lesions)")
        if kind == "probseg" and (data.min() < 0 or data.max() > 1):
            problems.append(f"{path}: values outside 0–1 ({data.min()}–{data.max()})")
        if not (path.with_name(path.name.replace(".nii.gz", ".json"))).is_file():
            problems.append(f"{path}: no JSON sidecar")
    return problems


def check_tables_and_reports(out_dir: Path, sub: str, min_dsc: float) -> list[str]:
    """The lesion table matches the mask's sidecar; the reports and group tables exist; DSC."""
    problems = []
    anat = out_dir / sub / "anat"
    table = anat / f"{sub}_label-lesion_stats.tsv"
    sidecar = anat / f"{sub}_label-lesion_mask.json"
    if not table.is_file() or not sidecar.is_file():
        problems.append(f"{table if not table.is_file() else sidecar}: missing")
    else:
        rows = _read_tsv(table)
        missing = [c for c in LESION_TABLE_COLUMNS if rows and c not in rows[0]]
        count = json.loads(sidecar.read_text(encoding="utf-8")).get("LesionCount")
        if missing:
            problems.append(f"{table}: columns {missing} missing")
        if len(rows) != count:
            problems.append(f"{table}: {len(rows)} rows, but {sidecar.name} says LesionCount {count}")
    for name in (f"{sub}.html", "group_lesions.html"):
        report = out_dir / name
        if not report.is_file() or "<html" not in report.read_text(encoding="utf-8", errors="replace")[:2000].lower():
            problems.append(f"{report}: missing or not an HTML page")
    group = out_dir / "group_lesions.tsv"
    if not group.is_file() or sub not in [r.get("participant_id") for r in _read_tsv(group)]:
        problems.append(f"{group}: missing or has no row for {sub}")
    scores = out_dir / "group_scores.tsv"
    rows = [r for r in _read_tsv(scores) if r.get("participant_id") == sub] if scores.is_file() else []
    if not rows:
        problems.append(f"{scores}: missing or has no row for {sub} (group --labels)")
    elif float(rows[0]["dsc"]) < min_dsc:
        problems.append(f"{scores}: DSC {float(rows[0]['dsc']):.3f} < {min_dsc} against the manual mask")
    else:
        print(f"DSC against the manual mask: {float(rows[0]['dsc']):.3f}")
    return problems


def check_provenance(out_dir: Path, uid: int, container_tag: str) -> list[str]:
    """GeneratedBy.Container names the image; every file belongs to ``uid``; validation ran."""
    problems = []
    description = out_dir / "dataset_description.json"
    try:
        generated = json.loads(description.read_text(encoding="utf-8"))["GeneratedBy"][0]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        return [f"{description}: no GeneratedBy ({exc})"]
    container = generated.get("Container")
    if container != {"Type": "docker", "Tag": container_tag}:
        problems.append(f"{description}: GeneratedBy.Container is {container}, "
                        f"expected {{'Type': 'docker', 'Tag': '{container_tag}'}}")
    foreign = [p for p in out_dir.rglob("*") if p.lstat().st_uid != uid]
    if foreign:
        problems.append(f"{len(foreign)} output file(s) not owned by uid {uid}, e.g. {foreign[0]}")
    logs = sorted((out_dir / "logs").glob("bids_mdpp_*.log"))
    if not any("BIDS validation passed" in log.read_text(encoding="utf-8") for log in logs):
        problems.append(f"{out_dir / 'logs'}: no run log says 'BIDS validation passed' "
                        "(the input was not validated inside the container)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("--participant", required=True, help="label without sub-")
    parser.add_argument("--uid", type=int, required=True, help="the uid the run was given (-u)")
    parser.add_argument("--container-tag", required=True, help="e.g. bids_mdpp:0.1.0")
    parser.add_argument("--min-dsc", type=float, default=0.55,
                        help="lowest DSC accepted against the sample's manual mask (0.636 measured)")
    args = parser.parse_args(argv)
    sub = f"sub-{args.participant.removeprefix('sub-')}"
    problems = [*check_images(args.out_dir, args.bids_dir, sub),
                *check_tables_and_reports(args.out_dir, sub, args.min_dsc),
                *check_provenance(args.out_dir, args.uid, args.container_tag)]
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if not problems:
        print(f"outputs of {sub} checked: masks on the reference grid, lesion table, reports, "
              "group tables, provenance, ownership, validation")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
