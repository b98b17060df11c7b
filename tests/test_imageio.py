"""Checked image loading (every bad input names the file) and atomic writes."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bids_mdpp.errors import InputDataError, OutputError
from bids_mdpp.imageio import atomic_path, load_image, remove_stale_temporaries, save_image, write_json
from bids_builders import write_nifti


def test_good_image_loads_and_4d_single_volume_is_squeezed(tmp_path):
    img = load_image(write_nifti(tmp_path / "a.nii.gz"))
    assert img.shape == (16, 16, 12)
    single = write_nifti(tmp_path / "b.nii.gz", np.random.rand(16, 16, 12, 1).astype("float32"))
    assert load_image(single).shape == (16, 16, 12)


def _zero_affine(path):
    """A NIfTI whose sform is all zeros and whose qform is unset (as broken converters write)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((16, 16, 12))
    hdr.set_data_dtype("float32")
    for row in ("srow_x", "srow_y", "srow_z"):
        hdr[row] = 0
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 12).astype("float32"), None, header=hdr), path)
    return path


def _bad_images(tmp_path):
    good = write_nifti(tmp_path / "good.nii.gz")
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.nii.gz"
    text.write_text("this is not an image")
    raw_truncated = tmp_path / "rawtrunc.nii"
    raw = gzip.decompress(good.read_bytes())
    raw_truncated.write_bytes(raw[: len(raw) - 500])
    nan = np.random.rand(16, 16, 12).astype("float32")
    nan[3, 3, 3] = np.nan
    inf = np.random.rand(16, 16, 12).astype("float32")
    inf[1, 2, 3] = np.inf
    return {
        "file is empty": empty,
        "truncated or corrupt|not a readable": truncated,
        "not a readable NIfTI": text,
        "truncated or corrupt": raw_truncated,
        "expected a 3D image": write_nifti(tmp_path / "4d.nii.gz", np.random.rand(16, 16, 12, 3).astype("float32")),
        "NaN or infinite": write_nifti(tmp_path / "nan.nii.gz", nan),
        "1 voxels are NaN or infinite": write_nifti(tmp_path / "inf.nii.gz", inf),
        "singular": _zero_affine(tmp_path / "zeroaff.nii.gz"),
        "absurd voxel size": write_nifti(tmp_path / "huge.nii.gz", zooms=(1, 1, 80)),
        "same value": write_nifti(tmp_path / "const.nii.gz", np.zeros((16, 16, 12), "float32")),
        "too small": write_nifti(tmp_path / "tiny.nii.gz", np.random.rand(16, 16, 2).astype("float32")),
        "does not exist": tmp_path / "missing.nii.gz",
    }


def test_each_bad_input_gives_a_clear_error_naming_the_file(tmp_path):
    for problem, path in _bad_images(tmp_path).items():
        with pytest.raises(InputDataError, match=problem) as info:
            load_image(path)
        assert str(path) in str(info.value), problem
        assert info.value.exit_code == 65


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path):
    dest = tmp_path / "out" / "mask.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed mid-write")
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_atomic_write_replaces_only_when_complete(tmp_path):
    dest = tmp_path / "x.json"
    write_json({"a": 1}, dest)
    write_json({"a": 2, "path": tmp_path, "n": np.int64(3)}, dest)
    assert '"a": 2' in dest.read_text() and '"n": 3' in dest.read_text()
    assert (dest.stat().st_mode & 0o777) == 0o666 & ~_current_umask()
    img = nib.Nifti1Image(np.ones((4, 4, 4), "uint8"), np.eye(4))
    save_image(img, tmp_path / "m.nii.gz")
    assert nib.load(tmp_path / "m.nii.gz").shape == (4, 4, 4)


def test_killed_writer_leaves_only_a_hidden_temporary_that_is_cleaned(tmp_path):
    dest = tmp_path / "big.nii.gz"
    code = (
        "import os, signal\n"
        "from bids_mdpp.imageio import atomic_path\n"
        f"with atomic_path({str(dest)!r}) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode != 0
    assert not dest.exists()
    leftovers = [p for p in tmp_path.iterdir()]
    assert leftovers and all(p.name.startswith(".") for p in leftovers)
    assert remove_stale_temporaries(tmp_path) == len(leftovers)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_folder_is_output_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(OutputError) as info:
        write_json({}, folder / "x.json")
    assert info.value.exit_code == 73


def test_full_disk_is_exit_74(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="no space left") as info:
        write_json({}, tmp_path / "x.json")
    assert info.value.exit_code == 74
    assert list(tmp_path.iterdir()) == []
