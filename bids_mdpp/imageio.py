"""Reading NIfTI images with checks, and writing any output atomically.

Every image that enters the pipeline goes through :func:`load_image`, which turns each kind
of broken input into an :class:`~bids_mdpp.errors.InputDataError` naming the file.  Every
file that leaves it is written to a temporary name in the destination folder and renamed,
so an interrupted run never leaves a half-written output behind.
"""
from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_mdpp.errors import InputDataError, OutputError

#: Voxel sizes outside this range (mm) are rejected as absurd.
MIN_VOXEL_MM = 0.05
MAX_VOXEL_MM = 20.0
#: Images with fewer voxels along an axis than this are not brain images.
MIN_AXIS_VOXELS = 8

_UMASK = os.umask(0)
os.umask(_UMASK)


def load_image(path: os.PathLike | str, *, check_data: bool = True) -> nib.Nifti1Image:
    """Load a 3D NIfTI image and check that it is usable.

    Checks, each raising :class:`InputDataError` with the file name: the file exists and is
    not empty; it is a readable NIfTI (not truncated); it is 3D (a 4D image with a single
    volume is squeezed); its affine is finite and invertible and its voxel sizes lie within
    [0.05, 20] mm; with ``check_data``, its voxels are finite and not all equal.

    Returns the image with its data loaded (a ``Nifti1Image``; NIfTI-2 is converted).
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise InputDataError(path, "file is empty (0 bytes)")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad headers
        raise InputDataError(path, f"not a readable NIfTI image ({exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputDataError(path, f"not a NIfTI image ({type(img).__name__})")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputDataError(
            path, f"expected a 3D image but it has shape {tuple(img.shape)} ({len(img.shape)}D)"
        )
    if min(shape) < MIN_AXIS_VOXELS:
        raise InputDataError(path, f"image of shape {shape} is too small to be a brain image")
    affine = img.affine
    if not np.all(np.isfinite(affine)):
        raise InputDataError(path, "the affine (qform/sform) holds NaN or infinite values")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputDataError(path, "the affine (qform/sform) is singular (e.g. all zeros)")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if np.any(zooms < MIN_VOXEL_MM) or np.any(zooms > MAX_VOXEL_MM):
        raise InputDataError(
            path,
            f"absurd voxel size {tuple(round(float(z), 4) for z in zooms)} mm "
            f"(expected between {MIN_VOXEL_MM} and {MAX_VOXEL_MM} mm)",
        )
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputDataError(path, f"the file is truncated or corrupt ({exc})") from exc
    data = data.reshape(shape)
    if check_data:
        if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
            raise InputDataError(path, f"unsupported voxel type {data.dtype}")
        finite = np.isfinite(data)
        if not finite.all():
            n_bad = int(finite.size - finite.sum())
            raise InputDataError(path, f"{n_bad} voxels are NaN or infinite")
        if data.max() == data.min():
            raise InputDataError(path, f"every voxel has the same value ({data.flat[0]})")
    out = nib.Nifti1Image(data, affine, header=_nifti1_header(img))
    out.set_qform(affine, code=int(img.header["qform_code"]) or 1)
    out.set_sform(affine, code=int(img.header["sform_code"]) or 1)
    return out


def _nifti1_header(img: nib.spatialimages.SpatialImage) -> nib.Nifti1Header:
    if isinstance(img, nib.Nifti1Image):
        hdr = img.header.copy()
    else:
        hdr = nib.Nifti1Header()
    hdr.set_data_shape(img.shape[:3])
    return hdr


@contextlib.contextmanager
def atomic_path(dest: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it to ``dest`` on success.

    The temporary name keeps ``dest``'s suffixes (so nibabel picks the right format) and
    starts with ``.`` so that a crash leaves only a hidden file that the next run removes.
    On failure the temporary file is deleted and the exception is re-raised; a full disk or
    an unwritable folder becomes an :class:`OutputError` (exit 74 or 73).
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{dest.name.split('.')[0]}.", suffix="".join(dest.suffixes) or ".tmp",
            dir=dest.parent,
        )
        os.close(fd)
    except OSError as exc:
        raise _output_error(dest, exc) from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared like any file
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _output_error(dest, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _output_error(dest: Path, exc: OSError) -> OutputError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"{dest}: no space left on the output disk", disk_full=True)
    return OutputError(f"{dest}: cannot write output ({exc.strerror or exc})")


def save_image(img: nib.Nifti1Image, dest: os.PathLike | str) -> Path:
    """Write a NIfTI image atomically; returns ``dest``."""
    with atomic_path(dest) as tmp:
        nib.save(img, str(tmp))
    return Path(dest)


def write_text(text: str, dest: os.PathLike | str) -> Path:
    """Write a text file atomically (UTF-8); returns ``dest``."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_json(obj: object, dest: os.PathLike | str) -> Path:
    """Write JSON atomically, indented and with sorted-insertion order kept."""
    return write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", dest)


def _json_default(obj: object) -> object:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def remove_stale_temporaries(folder: os.PathLike | str) -> int:
    """Delete hidden temporaries left by an interrupted run under ``folder``; returns count."""
    count = 0
    for path in Path(folder).rglob(".*"):
        if path.is_file() and path.name.count(".") >= 2 and not path.name.startswith(".bids"):
            path.unlink(missing_ok=True)
            count += 1
    return count
