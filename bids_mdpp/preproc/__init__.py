"""Preprocessing steps as pure functions on in-memory images (nibabel / SimpleITK).

One module per step: :mod:`.reorient`, :mod:`.bias`, :mod:`.register`, :mod:`.brainmask`
(with :mod:`.templatefit`), :mod:`.grid`, :mod:`.normalize` and :mod:`.qc`; :mod:`.sitkio`
converts between nibabel and SimpleITK images.  Nipype interfaces (:mod:`bids_mdpp.interfaces`) wrap them for the
workflow (:mod:`bids_mdpp.workflows.preproc`); they are tested here without Nipype.
"""
