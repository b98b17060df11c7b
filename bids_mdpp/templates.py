"""The brain template used for brain extraction, found offline.

TemplateFlow (Ciric et al. 2022) is the source when its home folder (``TEMPLATEFLOW_HOME``,
else TemplateFlow's default cache folder) already holds the template's files, as on an HPC
system where it was filled beforehand.  Nothing is ever fetched: the files are looked up
on disk, never through ``templateflow.api.get`` (which downloads, and returns ``[]`` without
an error when nothing matches).  Without them, nilearn's bundled MNI152 2009 template and
brain mask (Fonov et al. 2011; symmetric 2009a, 1 mm) are written once into a cache folder
and used instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib

from bids_mdpp.errors import NoInputError
from bids_mdpp.imageio import save_image

DEFAULT_TEMPLATE = "MNI152NLin2009cAsym"
#: Templates nilearn's bundled MNI152 2009 image may stand in for.
NILEARN_STAND_IN = frozenset({"MNI152NLin2009cAsym", "MNI152NLin2009cSym", "MNI152NLin2009aSym",
                              "MNI152NLin2009aAsym"})
#: Name of nilearn's template in the cache folder.
NILEARN_NAME = "nilearn-MNI152NLin2009aSym"


def templateflow_home() -> Path:
    """``TEMPLATEFLOW_HOME``, else TemplateFlow's default cache folder (not created)."""
    if os.environ.get("TEMPLATEFLOW_HOME"):
        return Path(os.environ["TEMPLATEFLOW_HOME"]).absolute()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("templateflow")).absolute()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bids_mdpp/templates`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bids_mdpp" / "templates"


def templateflow_files(name: str, resolution: int, home: Path | None = None) -> tuple[Path, Path] | None:
    """The T1w image and brain mask of ``name`` in TemplateFlow's home, or None.

    Files count only when both exist and are non-empty (TemplateFlow's package installs
    empty placeholders).  Both spellings of the resolution (``res-01``, ``res-1``) are tried.
    """
    folder = (home or templateflow_home()) / f"tpl-{name}"
    for res in (f"{resolution:02d}", f"{resolution}"):
        t1 = folder / f"tpl-{name}_res-{res}_T1w.nii.gz"
        mask = folder / f"tpl-{name}_res-{res}_desc-brain_mask.nii.gz"
        if all(p.is_file() and p.stat().st_size > 0 for p in (t1, mask)):
            return t1, mask
    return None


def nilearn_files(resolution: int, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """nilearn's MNI152 2009 T1 (brain only, 0–1) and brain mask, written once to ``cache_dir``."""
    from nilearn import datasets

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    t1 = folder / f"tpl-{NILEARN_NAME}_res-{resolution:02d}_T1w.nii.gz"
    mask = folder / f"tpl-{NILEARN_NAME}_res-{resolution:02d}_desc-brain_mask.nii.gz"
    if not t1.is_file():
        template = datasets.load_mni152_template(resolution=resolution)
        save_image(nib.Nifti1Image(template.get_fdata(dtype="float32"), template.affine), t1)
    if not mask.is_file():
        brain = datasets.load_mni152_brain_mask(resolution=resolution)
        save_image(nib.Nifti1Image(brain.get_fdata().astype("uint8"), brain.affine), mask)
    return t1, mask


def get_template(name: str = DEFAULT_TEMPLATE, resolution: int = 1, *,
                 cache_dir: os.PathLike | str | None = None) -> tuple[Path, Path]:
    """``(t1_path, brain_mask_path)`` of a template, without any download.

    TemplateFlow's home first; for the MNI152 2009 family, nilearn's bundled template as a
    fallback (written into ``cache_dir``, default :func:`default_cache_dir`).  Raises
    :class:`NoInputError` when neither has the template.
    """
    found = templateflow_files(name, resolution)
    if found is not None:
        return found
    if name in NILEARN_STAND_IN:
        return nilearn_files(resolution, None if cache_dir is None else Path(cache_dir))
    raise NoInputError(
        f"template {name} (resolution {resolution}) is not in TEMPLATEFLOW_HOME "
        f"({templateflow_home()}) and no bundled template can stand in for it; fill "
        f"TEMPLATEFLOW_HOME with tpl-{name}_res-{resolution:02d}_T1w.nii.gz and "
        f"tpl-{name}_res-{resolution:02d}_desc-brain_mask.nii.gz")


def template_source(t1_path: os.PathLike | str) -> str:
    """``"TemplateFlow"`` or ``"nilearn"``: where a path from :func:`get_template` came from."""
    return "nilearn" if Path(t1_path).name.startswith(f"tpl-{NILEARN_NAME}") else "TemplateFlow"
