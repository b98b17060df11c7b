"""Synthetic multi-contrast MS training data from real anatomy and real lesions.

Every random choice is drawn first into frozen parameter dataclasses, then applied
deterministically (as TorchIO's random transforms do), and recorded in the dataset's
``manifest.json``.  The modules, in the order data flows through them:

- :mod:`~bids_mdpp.synth.anatomy`: the MNI152 2009 template on a canvas; per-subject
  head size, smooth deformation and ventricle enlargement.
- :mod:`~bids_mdpp.synth.lesions`: the 27 shipped MSLUB lesion masks, recombined, plus
  ellipsoids in white matter; severity, black holes, enhancement.
- :mod:`~bids_mdpp.synth.load`, :mod:`~bids_mdpp.synth.confluent`: lesion-load classes
  (lesion-free, low, typical, confluent high) and the maps that make them.
- :mod:`~bids_mdpp.synth.regions`, :mod:`~bids_mdpp.synth.mimics`: where bright normal
  anatomy lies (caps, bands, septum, cingulate, insula, choroid plexus, CSF inflow,
  perivascular spaces) and the hard negatives drawn there, never labelled as lesion.
- :mod:`~bids_mdpp.synth.head`: skull, scalp and fat layers around the brain.
- :mod:`~bids_mdpp.synth.scene`: one session's canvas (anatomy, lesions, texture, vessels, head).
- :mod:`~bids_mdpp.synth.contrasts`: tissue intensities per contrast, and painting.
- :mod:`~bids_mdpp.synth.acquisition`: head position, clinical 2D grids, bias, Rician noise.
- :mod:`~bids_mdpp.synth.subject`: drawing a subject, rendering a session.
- :mod:`~bids_mdpp.synth.dataset`: writing the BIDS dataset and its lesion derivatives.
- :mod:`~bids_mdpp.synth.ratios`: tissue intensity ratios, to compare with real images.
- :mod:`~bids_mdpp.synth.geometry`, :mod:`~bids_mdpp.synth.fields`: grids, resampling,
  random fields.

The command line is ``bids_mdpp synth`` (:mod:`bids_mdpp.cli.synth`); from Python::

    from bids_mdpp.synth.dataset import write_dataset
    from bids_mdpp.synth.subject import SynthOptions
    write_dataset("/data/synthetic", 40, seed=1, options=SynthOptions())
"""
