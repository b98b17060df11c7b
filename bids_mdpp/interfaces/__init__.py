"""Nipype interfaces: thin ``SimpleInterface`` wrappers over the pure functions of
:mod:`bids_mdpp.preproc`, one per preprocessing step.  Each reads its inputs from files,
calls one function and writes its outputs into the node's working directory."""
from __future__ import annotations


def use_threads(count: int) -> None:
    """Let SimpleITK filters of this process use ``count`` threads."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, int(count)))


def save_result(interface, runtime, key: str, image, filename: str) -> str:
    """Save ``image`` as ``filename`` in the node's folder and record it as output ``key``."""
    from pathlib import Path

    import nibabel as nib

    path = str(Path(runtime.cwd) / filename)
    nib.save(image, path)
    interface._results[key] = path
    return path
