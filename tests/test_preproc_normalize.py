"""White-matter-peak normalisation: synthetic tissue mixtures and real images."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from test_preproc_support import phantom_brain

from bids_mdpp.errors import InputDataError
from bids_mdpp.preproc.normalize import kde_peaks, normalize_wm_peak, white_matter_peak


def _mixture(levels_and_counts, seed=0, spread=0.04):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(level, spread * level, count)
                           for level, count in levels_and_counts])


@pytest.mark.parametrize("contrast, mixture, wm", [
    # T1w: WM is the brightest peak though GM has more voxels
    ("T1w", [(30, 20_000), (70, 60_000), (100, 40_000)], 100),
    ("ceT1w", [(30, 20_000), (70, 60_000), (100, 40_000)], 100),
    # FLAIR / T2w / PDw: WM is the tallest peak, lesions and GM brighter
    ("FLAIR", [(10, 10_000), (70, 80_000), (95, 30_000), (140, 3_000)], 70),
    ("T2w", [(50, 70_000), (75, 40_000), (150, 15_000)], 50),
    ("PDw", [(60, 70_000), (80, 35_000), (100, 10_000)], 60),
])
def test_white_matter_peak_of_tissue_mixtures(contrast, mixture, wm):
    values = _mixture(mixture)
    assert white_matter_peak(values, contrast) == pytest.approx(wm, rel=0.05)


@pytest.mark.parametrize("contrast, mixture, wm", [
    # grey matter (with partial volume) a little taller than white matter: still white matter
    ("T2w", [(50, 50_000), (68, 60_000), (150, 10_000)], 50),
    ("FLAIR", [(70, 45_000), (85, 55_000), (120, 5_000)], 70),
    ("PDw", [(60, 50_000), (75, 60_000)], 60),
    # a large dark CSF peak in FLAIR is not white matter
    ("FLAIR", [(15, 25_000), (70, 80_000), (85, 40_000)], 70),
])
def test_white_matter_peak_when_grey_matter_rivals_it(contrast, mixture, wm):
    values = _mixture(mixture, spread=0.03)
    _, _, peaks = kde_peaks(values)
    assert len(peaks) >= 2, "the mixture must show separate peaks"
    assert white_matter_peak(values, contrast) == pytest.approx(wm, rel=0.05)


def test_kde_follows_the_method_settings():
    values = _mixture([(50, 50_000), (100, 50_000)])
    grid, density, peaks = kde_peaks(values)
    assert grid.size == density.size == 80
    p99 = np.percentile(values, 99)
    assert grid.max() == pytest.approx(p99 + 3 * p99 / 80, rel=1e-3)
    assert len(peaks) == 2


def test_normalised_image_has_background_minus_one_and_wm_at_minus_half():
    for contrast in ("T1w", "FLAIR", "T2w"):
        image, brain, wm = phantom_brain(contrast=contrast)
        mask = nib.Nifti1Image(brain.astype(np.uint8), image.affine)
        normalised, peak = normalize_wm_peak(image, mask, contrast)
        data = normalised.get_fdata()
        assert normalised.get_data_dtype() == np.float32
        assert np.all(data[~brain] == -1.0)
        assert np.median(data[wm]) == pytest.approx(-0.5, abs=0.02)


def test_real_images_have_their_white_matter_at_minus_half(shared_data):
    """MSLUB patient (skull-stripped, MNI space): white matter located with nilearn's MNI152
    white-matter probability (> 0.9, eroded twice) sits at −0.5 ± 0.05 in every contrast."""
    from nibabel.processing import resample_from_to
    from nilearn import datasets
    from scipy import ndimage

    anat = shared_data / "mslub-cross" / "sub-26" / "anat"
    wm_prior = datasets.load_mni152_wm_template(resolution=1)
    for contrast, name in (("FLAIR", "FLAIR"), ("T1w", "T1w"), ("T2w", "T2w"),
                           ("ceT1w", "ce-gadolinium_T1w")):
        image = nib.load(anat / f"sub-26_{name}.nii.gz")
        brain = np.asarray(image.dataobj) != 0
        wm = resample_from_to(wm_prior, image, order=1).get_fdata() > 0.9
        wm = ndimage.binary_erosion(wm, iterations=2) & brain
        normalised, _ = normalize_wm_peak(image, nib.Nifti1Image(brain.astype(np.uint8),
                                                                 image.affine), contrast)
        assert np.median(normalised.get_fdata()[wm]) == pytest.approx(-0.5, abs=0.05), contrast


def test_brain_without_signal_names_the_file():
    image, brain, _ = phantom_brain()
    flat = nib.Nifti1Image(np.zeros(image.shape, np.float32), image.affine)
    mask = nib.Nifti1Image(brain.astype(np.uint8), image.affine)
    with pytest.raises(InputDataError, match="sub-2_T2w.nii.gz: cannot normalise"):
        normalize_wm_peak(flat, mask, "T2w", name="sub-2_T2w.nii.gz")
