"""Reports: figures ("reportlets"), the participant HTML report and the methods boilerplate.

:mod:`~bids_mdpp.reports.reportlets` draws the figures, :mod:`~bids_mdpp.reports.participant`
assembles ``OUTPUT_DIR/sub-X.html`` from them, and :mod:`~bids_mdpp.reports.boilerplate`
writes the methods text and ``logs/CITATION.md``.  Heavy libraries (matplotlib, nilearn) are
imported only by the modules that draw.
"""
