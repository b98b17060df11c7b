"""Nipype workflows built by ``init_*_wf`` functions."""
