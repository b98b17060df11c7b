"""The Nipype workflow end to end: structure, Linear and MultiProc runs, cache, errors."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from test_preproc_support import dice, downsampled, ellipsoid

from bids_mdpp.errors import InputDataError
from bids_mdpp.session import SessionInputs
from bids_mdpp.workflows.preproc import (PREPROC_REFERENCES, boilerplate, grid_image,
                                         init_preproc_wf, probability_to_native,
                                         run_preprocessing, to_native)


def _session(tmp_path, folder, files: dict[str, tuple[str, tuple]], session=None) -> SessionInputs:
    """Downsampled copies of real scans (contrast → (file, downsampling factors))."""
    out = {}
    for contrast, (path, factors) in files.items():
        out[contrast] = tmp_path / "in" / f"sub-01_{contrast}.nii.gz"
        out[contrast].parent.mkdir(parents=True, exist_ok=True)
        nib.save(downsampled(nib.load(folder / path), factors), str(out[contrast]))
    return SessionInputs(subject="01", session=session, files=out)


def _result_stamps(work_dir):
    return {p: p.stat().st_mtime_ns for p in (work_dir / "preproc_wf").rglob("result_*.pklz")}


def test_workflow_contract_and_descriptions():
    wf = init_preproc_wf(contrasts=["T2w", "FLAIR", "T1w"], reference="FLAIR")
    assert set(wf.get_node("inputnode").inputs.copyable_trait_names()) == {"T1w", "FLAIR", "T2w"}
    fields = set(wf.get_node("outputnode").inputs.copyable_trait_names())
    assert {"preproc_T1w", "preproc_FLAIR", "preproc_T2w", "brain_mask", "xfm_T1w", "xfm_T2w",
            "qc_reg_T1w", "qc_reg_T2w", "qc_brainmask", "wm_peak_FLAIR"} <= fields
    assert "xfm_FLAIR" not in fields
    for name in ("bias_wf", "coreg_wf", "brainmask_wf", "normalize_wf"):
        assert wf.get_node(name).__desc__
    single = init_preproc_wf(contrasts=["T1w"], reference="T1w")
    assert single.get_node("coreg_wf") is None
    with pytest.raises(ValueError, match="reference 'FLAIR'"):
        init_preproc_wf(contrasts=["T1w"], reference="FLAIR")


def test_boilerplate_names_the_contrasts_and_cites_the_libraries():
    text = boilerplate(["T1w", "FLAIR"], "FLAIR")
    assert "T1-weighted" in text and "aligned to the FLAIR image" in text
    for citation in ("Tustison et al. 2010", "Mattes et al. 2003", "Roy et al. 2018",
                     "Gorgolewski et al. 2011"):
        assert citation in text
    assert "Mattes" not in boilerplate(["T1w"], "T1w")  # nothing to register
    assert {"n4", "mattes2003", "roy2018", "templateflow", "nipype"} <= set(PREPROC_REFERENCES)


def test_raw_session_end_to_end_with_linear_and_cache(shared_data, tmp_path):
    """Raw skull-on scans (MSLUB longitudinal, downsampled in-plane to ~2.2 mm) on a 2 mm grid."""
    anat = shared_data / "mslub-long" / "sub-01" / "ses-1" / "anat"
    inputs = _session(tmp_path, anat, {"FLAIR": ("sub-01_ses-1_FLAIR.nii.gz", (3, 3, 1)),
                                       "T1w": ("sub-01_ses-1_T1w.nii.gz", (3, 3, 1))}, "1")
    work = tmp_path / "work"
    result = run_preprocessing(inputs, work, grid_mm=2.0, plugin="Linear")

    assert result.reference == "FLAIR" and result.reference_native == inputs.files["FLAIR"]
    assert set(result.images) == {"T1w", "FLAIR"} and set(result.xfms) == {"T1w"}
    assert result.xfms["T1w"].name == "sub-01_ses-1_from-T1w_to-FLAIR_mode-image_xfm.txt"
    assert set(result.qc) == {"reg_T1w", "brainmask"}
    for path in [*result.images.values(), *result.xfms.values(), *result.qc.values()]:
        assert path.is_file() and path.parent == work / "outputs"
    grid = grid_image(result)
    brain = np.asarray(grid.dataobj) > 0
    assert np.allclose(grid.header.get_zooms(), 2.0)
    assert 900 < brain.sum() * 8 / 1000 < 1900  # ml: an adult brain
    for contrast, path in result.images.items():
        image = nib.load(path)
        data = image.get_fdata()
        assert image.shape == grid.shape and np.allclose(image.affine, grid.affine)
        assert np.all(data[~brain] == -1.0)
        hist, edges = np.histogram(data[brain], bins=60, range=(-1.0, 0.5))
        mode = edges[np.argmax(hist)] + (edges[1] - edges[0]) / 2
        assert mode == pytest.approx(-0.5, abs=0.08), contrast

    native = to_native(brain.astype(np.float32), result)
    reference = nib.load(inputs.files["FLAIR"])
    assert native.shape == reference.shape and np.allclose(native.affine, reference.affine)

    stamps = _result_stamps(work)
    again = run_preprocessing(inputs, work, grid_mm=2.0, plugin="Linear")
    assert again == result
    assert _result_stamps(work) == stamps  # no node ran again


def test_stripped_session_with_multiproc(shared_data, tmp_path):
    """Already skull-stripped scans (MSLUB cross-sectional, 4 contrasts, 3 mm) under MultiProc;
    the brain mask keeps the non-zero voxels; a blob made on the grid maps back exactly; a
    re-run with another thread count resumes from the cache."""
    anat = shared_data / "mslub-cross" / "sub-26" / "anat"
    inputs = _session(tmp_path, anat, {
        "FLAIR": ("sub-26_FLAIR.nii.gz", (3, 3, 3)), "T1w": ("sub-26_T1w.nii.gz", (3, 3, 3)),
        "T2w": ("sub-26_T2w.nii.gz", (3, 3, 3)),
        "ceT1w": ("sub-26_ce-gadolinium_T1w.nii.gz", (3, 3, 3))})
    work = tmp_path / "work"
    result = run_preprocessing(inputs, work, grid_mm=2.0, plugin="MultiProc",
                               plugin_args={"n_procs": 2})
    assert set(result.xfms) == {"T1w", "T2w", "ceT1w"}
    reference = nib.load(inputs.files["FLAIR"])
    nonzero = np.asarray(reference.dataobj) != 0
    grid = grid_image(result)
    back = np.asarray(to_native(np.asarray(grid.dataobj), result, order=0).dataobj) > 0
    assert (back & nonzero).sum() / nonzero.sum() >= 0.99

    centre = nib.affines.apply_affine(reference.affine, np.argwhere(nonzero).mean(axis=0))
    blob_native = ellipsoid(reference.shape, reference.affine, centre, (15, 12, 18))
    from bids_mdpp.preproc.grid import resample_to_grid

    blob_on_grid = resample_to_grid(nib.Nifti1Image(blob_native.astype(np.float32),
                                                    reference.affine), grid)
    back = to_native(np.asarray(blob_on_grid.dataobj), result, order=1)
    assert dice(np.asarray(back.dataobj) >= 0.5, blob_native) >= 0.98

    stamps = _result_stamps(work)
    # the thread count is not part of the cache key: a re-run with more threads resumes
    run_preprocessing(inputs, work, grid_mm=2.0, plugin="MultiProc", plugin_args={"n_procs": 2},
                      omp_nthreads=2)
    assert _result_stamps(work) == stamps


@pytest.mark.parametrize("plugin", ["Linear", "MultiProc"])
def test_failing_node_raises_the_input_error_naming_the_file(tmp_path, plugin):
    shape = (40, 44, 36)
    head = ellipsoid(shape, np.eye(4), (20, 22, 18), (15, 17, 14))
    rng = np.random.default_rng(0)
    flair = tmp_path / "sub-01_FLAIR.nii.gz"
    nib.save(nib.Nifti1Image(np.where(head, 100 + rng.random(shape) * 20, 0).astype(np.float32),
                             np.eye(4)), str(flair))
    speck = tmp_path / "sub-01_T1w.nii.gz"  # 1 mm³ of data: nothing to register
    nib.save(nib.Nifti1Image(rng.random((10, 10, 10)).astype(np.float32) + 1,
                             np.diag([0.1, 0.1, 0.1, 1.0])), str(speck))
    inputs = SessionInputs(subject="01", session=None, files={"FLAIR": flair, "T1w": speck})
    with pytest.raises(InputDataError, match="sub-01_T1w.nii.gz: rigid registration to"):
        run_preprocessing(inputs, tmp_path / "work", grid_mm=2.0, plugin=plugin,
                          plugin_args={"n_procs": 2} if plugin == "MultiProc" else None)
    assert any((tmp_path / "work" / "crash").iterdir())


def test_to_native_rejects_a_map_off_the_grid(tmp_path):
    from bids_mdpp.session import PreprocResult

    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6), np.uint8), np.eye(4)), str(mask))
    result = PreprocResult(reference="T1w", reference_native=mask, images={}, brain_mask=mask)
    with pytest.raises(ValueError, match="not on the model grid"):
        to_native(np.zeros((3, 3, 3)), result)


def test_probability_map_comes_back_to_a_1mm_grid_without_shrinking_small_lesions(tmp_path):
    """The model grid of a 1 mm reference lies half a voxel off it: linear interpolation
    back would shrink three 5 mm lesions by about 30 % at 0.5; the cubic spline keeps more than
    90 % of them, and its overshoot is clipped to [0, 1]."""
    from bids_mdpp.preproc.grid import model_grid
    from bids_mdpp.session import PreprocResult

    shape = (40, 40, 40)
    reference = tmp_path / "reference.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), str(reference))
    brain = ellipsoid(shape, np.eye(4), (20, 20, 20), (14, 14, 14))
    grid = model_grid(nib.load(str(reference)), nib.Nifti1Image(brain.astype(np.float32), np.eye(4)))
    offsets = grid.affine[:3, 3] - np.round(grid.affine[:3, 3])
    assert np.allclose(np.abs(offsets), 0.5)  # half a voxel off the reference's lattice
    mask = tmp_path / "mask.nii.gz"
    nib.save(grid, str(mask))
    result = PreprocResult(reference="FLAIR", reference_native=reference, images={}, brain_mask=mask)
    probability = np.zeros(grid.shape, np.float32)
    for centre in [(15.2, 18.1, 20.3), (24.6, 22.4, 17.9), (20.1, 26.3, 24.2)]:
        probability[ellipsoid(grid.shape, grid.affine, centre, (2.5, 2.5, 2.5))] = 0.9
    on_grid = (probability >= 0.5).sum()

    native = probability_to_native(probability, result)
    values = np.asarray(native.dataobj)
    assert native.shape == shape and np.allclose(native.affine, np.eye(4))
    assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() <= 1.0
    raw = np.asarray(to_native(probability, result, order=3).dataobj)
    assert raw.min() < 0.0 or raw.max() > 1.0  # the spline overshoots: the clip is needed
    linear = np.asarray(to_native(probability, result, order=1).dataobj)
    assert (linear >= 0.5).sum() < 0.8 * on_grid
    assert (values >= 0.5).sum() > 0.9 * on_grid
    assert (raw[linear == 0] != 0).any()  # the spline rings beyond the lesions ...
    assert not values[linear == 0].any()  # ... and the ringing is cut
