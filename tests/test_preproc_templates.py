"""Templates are found offline: a pre-filled TEMPLATEFLOW_HOME first, nilearn's otherwise."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_mdpp.errors import NoInputError
from bids_mdpp.templates import get_template, template_source, templateflow_files

NAME = "MNI152NLin2009cAsym"


def _fill_templateflow(home, name=NAME, res="01", empty=False):
    folder = home / f"tpl-{name}"
    folder.mkdir(parents=True)
    paths = []
    for suffix in ("T1w", "desc-brain_mask"):
        path = folder / f"tpl-{name}_res-{res}_{suffix}.nii.gz"
        if empty:
            path.touch()  # TemplateFlow's package ships empty placeholders like this
        else:
            nib.save(nib.Nifti1Image(np.ones((9, 9, 9), np.float32), np.eye(4)), str(path))
        paths.append(path)
    return tuple(paths)


def test_prefilled_templateflow_home_is_used(tmp_path, monkeypatch):
    expected = _fill_templateflow(tmp_path / "tf")
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "tf"))
    assert get_template(NAME, 1, cache_dir=tmp_path / "cache") == expected
    assert template_source(expected[0]) == "TemplateFlow"
    assert not (tmp_path / "cache").exists()  # nothing written, nothing fetched


def test_resolution_spelled_without_zero_padding(tmp_path, monkeypatch):
    expected = _fill_templateflow(tmp_path / "tf", res="1")
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "tf"))
    assert templateflow_files(NAME, 1) == expected


def test_empty_placeholders_fall_back_to_nilearn(tmp_path, monkeypatch):
    _fill_templateflow(tmp_path / "tf", empty=True)
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "tf"))
    t1, mask = get_template(NAME, 1, cache_dir=tmp_path / "cache")
    assert t1.parent == tmp_path / "cache" and template_source(t1) == "nilearn"
    t1_img, mask_img = nib.load(t1), nib.load(mask)
    assert t1_img.shape == mask_img.shape == (197, 233, 189)
    brain = np.asarray(mask_img.dataobj) > 0
    assert 1500 < brain.sum() / 1000 < 2200  # ml: an adult MNI brain
    assert np.asarray(t1_img.dataobj)[brain].mean() > 0.3


def test_nilearn_fallback_is_written_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "empty"))
    t1, mask = get_template(cache_dir=tmp_path / "cache")
    stamps = (t1.stat().st_mtime_ns, mask.stat().st_mtime_ns)
    assert get_template(cache_dir=tmp_path / "cache") == (t1, mask)
    assert (t1.stat().st_mtime_ns, mask.stat().st_mtime_ns) == stamps


def test_unknown_template_without_files_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "empty"))
    with pytest.raises(NoInputError, match="OASIS30ANTs.*TEMPLATEFLOW_HOME"):
        get_template("OASIS30ANTs", 1, cache_dir=tmp_path / "cache")
