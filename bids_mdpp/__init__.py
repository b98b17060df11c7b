"""bids_mdpp: multiple-sclerosis lesion segmentation from any subset of MRI contrasts.

A BIDS App implementing ModDrop++ (Liu et al., MICCAI 2022) on the 2.5D FC-DenseNet of
Zhang et al. (MICCAI 2019).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
