"""QC figures: three orientations, PNG, written atomically."""
from __future__ import annotations

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
from test_preproc_support import phantom_brain

from bids_mdpp.preproc.qc import brainmask_figure, registration_figure


def test_registration_and_brainmask_figures(tmp_path):
    reference, brain, _ = phantom_brain(contrast="FLAIR")
    moving, _, _ = phantom_brain(contrast="T1w", seed=2)
    mask = nib.Nifti1Image(brain.astype(np.uint8), reference.affine)
    reg = registration_figure(reference, moving, mask, tmp_path / "reg.png", title="FLAIR over T1w")
    bm = brainmask_figure(reference, mask, tmp_path / "bm.png", title="brain mask")
    for path in (reg, bm):
        pixels = mpimg.imread(path)
        assert pixels.shape[0] > 150 and pixels.shape[1] > 2 * pixels.shape[0]  # 3 rows of 5
        red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
        assert red.sum() > 100  # the contours are drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm.png", "reg.png"]  # no temporaries
